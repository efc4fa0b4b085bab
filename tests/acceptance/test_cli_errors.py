"""Bad input gives one clear line and the right exit code, never a traceback,
and a password in the database URL never reaches the output."""

from __future__ import annotations

import pytest

from tests.acceptance.support import APPS, assert_one_line_error, free_port
from tests.conftest import Processes

SECRET = "hunter2-Secret"


def test_missing_database_url(processes: Processes) -> None:
    result = processes.run("migrate", env={"SOLEIL_DATABASE_URL": ""})
    line = assert_one_line_error(result)
    assert "SOLEIL_DATABASE_URL" in line and "--database-url" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql://app:{SECRET}@[::1/app", "invalid database URL"),
        (f"host=127.0.0.1 password={SECRET} dbname", "invalid database URL"),
        (f"postgresql://app:{SECRET}@127.0.0.1:{{port}}/app", "cannot reach the database at app@127.0.0.1"),
        (f"host=127.0.0.1 port={{port}} user=app password='{SECRET}'", "cannot reach the database"),
        (
            f"postgresql://app:{SECRET}@nowhere.invalid/app",
            "cannot reach the database at app@nowhere.invalid",
        ),
    ],
    ids=["malformed-url", "malformed-conninfo", "refused-url", "refused-conninfo", "unknown-host"],
)
@pytest.mark.parametrize("command", [["migrate"], ["work", "default", "--app", APPS]])
def test_bad_or_unreachable_database(
    processes: Processes, url: str, expected: str, command: list[str]
) -> None:
    result = processes.run(*command, database_url=url.format(port=free_port()))
    line = assert_one_line_error(result)
    assert expected in line
    assert SECRET not in result.stdout + result.stderr


def test_debug_adds_the_traceback_and_keeps_the_exit_code(processes: Processes) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    result = processes.run("--debug", "status", database_url=url)
    assert result.returncode == 2, result.stderr  # 1 means "not found" to scripts
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach the database")


@pytest.mark.parametrize(
    "where",
    [["--database-url", "{url}", "migrate"], ["migrate", "--database-url", "{url}"]],
    ids=["before", "after"],
)
def test_database_url_option_wins_over_the_environment(processes: Processes, where: list[str]) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/app"
    result = processes.run(
        *(arg.format(url=url) for arg in where), env={"SOLEIL_DATABASE_URL": "host=elsewhere"}
    )
    line = assert_one_line_error(result)
    assert "cannot reach the database at app@127.0.0.1" in line
    assert SECRET not in result.stderr


def test_missing_database_says_so(processes: Processes, database_url: str) -> None:
    from psycopg import conninfo

    url = conninfo.make_conninfo(database_url, dbname="soleil_t_does_not_exist", password=SECRET)
    line = assert_one_line_error(processes.run("migrate", database_url=url))
    assert 'database "soleil_t_does_not_exist" does not exist' in line
    assert SECRET not in line


@pytest.mark.parametrize("command", [["work", "default", "--app", APPS], ["dispatch", "tests.record"]])
def test_database_without_schema_asks_for_migrate(
    processes: Processes, empty_database_url: str, command: list[str]
) -> None:
    result = processes.run(*command, database_url=empty_database_url, env={"SOLEIL_APP": APPS})
    line = assert_one_line_error(result)
    assert "soleil-runner migrate" in line


@pytest.mark.parametrize("queues", ["bad queue!", "default,", "_under", "x" * 64])
def test_bad_queue_name_is_a_usage_error(processes: Processes, database_url: str, queues: str) -> None:
    result = processes.run("work", queues, "--app", APPS, database_url=database_url)
    assert result.returncode == 2, result.stderr
    assert "Usage: soleil-runner work" in result.stderr
    assert "invalid queue name" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["work", "default", "--concurency", "2"],
            "No such option '--concurency'. Did you mean '--concurrency'?",
        ),
        (["work", "default", "--concurrency", "0"], "Invalid value for '--concurrency'"),
        (["work", "default", "--backoff", "soon"], "Invalid value for '--backoff'"),
        (["--log-format", "xml", "work", "default"], "Invalid value for '--log-format'"),
        # Past what a worker can follow: refused before it starts, not by a traceback later.
        (["work", "default", "--concurrency", "100000"], "Invalid value for '--concurrency'"),
        (["work", "default", "--heartbeat", "inf"], "Invalid value for '--heartbeat'"),
        (["work", "default", "--sleep", "nan"], "'nan' is not a number of seconds"),
        (["status", "--watch", "--interval", "1e300"], "Invalid value for '--interval'"),
        (["dispatch", "tests.record", "--delay", "nan"], "'nan' is not a number of seconds"),
        (["dispatch", "tests.record", "--priority", str(2**40)], "Invalid value for '--priority'"),
    ],
)
def test_bad_work_options_are_usage_errors(processes: Processes, args: list[str], expected: str) -> None:
    result = processes.run(*args, database_url="postgresql://nobody@127.0.0.1:1/x")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_app_module(processes: Processes, database_url: str) -> None:
    result = processes.run("work", "default", "--app", "tests.apps.nope", database_url=database_url)
    line = assert_one_line_error(result)
    assert "cannot import app module 'tests.apps.nope'" in line
