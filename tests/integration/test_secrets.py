"""A database URL's password never leaks: not in worker logs (JSON lines, with
failures and tracebacks), not in CLI errors, not in `status` output.

The test server trusts local connections, so a password in the URL is accepted
and ignored: it only has to be there, where it could leak."""

from __future__ import annotations

import json

import pytest
from psycopg import conninfo

from soleil.runner import ConfigurationError, DatabaseUnavailable, Runner
from soleil.runner.db import describe, redact
from tests.apps.basic import Doomed, Flaky, Record
from tests.conftest import Processes

SECRET = "Sup3r-S3cret_pw"


def url_form(database_url: str, password: str = SECRET) -> str:
    parts = conninfo.conninfo_to_dict(database_url)
    return (
        f"postgresql://{parts['user']}:{password}@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"
    )


def test_worker_logs_never_carry_the_password(
    runner: Runner, database_url: str, processes: Processes
) -> None:
    runner.dispatch_many([Record(tag="ok"), Doomed(), Flaky(succeed_on=2)])
    logs = ""
    for url in (url_form(database_url), conninfo.make_conninfo(database_url, password=SECRET)):
        proc = processes.soleil(
            "work", "default", "--app", "tests.apps.basic", "--stop-when-empty",
            database_url=url, env={"SOLEIL_LOG_LEVEL": "debug"},
        )  # fmt: skip
        assert proc.wait(timeout=60) == 0
        out, err = processes.output(proc)
        assert SECRET not in out + err
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        started = next(e for e in events if e["event"] == "worker.started")
        assert started["database"] == describe(url)
        logs += err
    assert "job.failed" in logs and "job.retrying" in logs


BAD_URLS = [
    f"postgresql://bob:{SECRET}@127.0.0.1:1/app",  # nothing listens on port 1
    f"host=127.0.0.1 port=1 user=bob password={SECRET} dbname=app",
    f"host=127.0.0.1 port=1 password='{SECRET} with spaces' dbname=app",
    f"host=127.0.0.1 password='{SECRET} dbname=app",  # unterminated quote
    f"postgresql://bob:{SECRET}%zz@127.0.0.1:1/app",  # bad percent-encoding
    f"postgresql://bob:{SECRET}@[::1:1/app",  # bad IPv6 literal
    f"postgresql://bob:{SECRET}@127.0.0.1:notaport/app",
]


def test_cli_errors_never_carry_the_password(processes: Processes) -> None:
    # migrate connects directly (fast to fail); status and work open a pool, which
    # waits for an unreachable server, so they get malformed URLs.
    runs: list[tuple[tuple[str, ...], str]] = [(("migrate",), url) for url in BAD_URLS]
    runs += [(("status",), BAD_URLS[3]), (("work", "default"), BAD_URLS[4])]
    for command, url in runs:
        result = processes.run(*command, database_url=url, timeout=30)
        assert result.returncode == 2, (command, url, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert SECRET not in result.stdout + result.stderr, (command, url)


def test_python_errors_never_carry_the_password() -> None:
    with pytest.raises(DatabaseUnavailable) as unreachable:
        Runner(BAD_URLS[0]).migrate()
    with pytest.raises(ConfigurationError) as malformed:
        Runner(BAD_URLS[4])
    assert SECRET not in str(unreachable.value) + str(malformed.value)
    assert SECRET not in redact(f"password = '{SECRET}' and postgres://u:{SECRET}@h/db")


def test_status_shows_where_it_points_without_the_password(
    runner: Runner, database_url: str, processes: Processes
) -> None:
    runner.dispatch(Record())
    for args in (("status",), ("status", "--json")):
        result = processes.run(*args, database_url=url_form(database_url))
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert describe(database_url) in processes.run("status", database_url=url_form(database_url)).stdout
