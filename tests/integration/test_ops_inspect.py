"""Every query of sql/inspect.sql runs against a database with data in it, and
answers what its comment promises; the file also runs as is through psql."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner, control, queries
from tests.apps.basic import Record
from tests.ops_data import insert_failed

INSPECT = queries.sql_root() / "inspect.sql"
PSQL = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"


@pytest.fixture
def busy_database(runner: Runner, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    runner.dispatch_many([Record(tag=str(i)) for i in range(3)])
    runner.dispatch(Record(tag="later"), delay=600)
    runner.dispatch(Record(tag="mail"), queue="mail")
    conn.execute(
        "UPDATE soleil.jobs SET available_at = now() - interval '5 minutes' WHERE id = 2;"
        "INSERT INTO soleil.workers (id, host, pid, queues, concurrency, heartbeat_at)"
        " OVERRIDING SYSTEM VALUE VALUES (41, 'live', 1, '{mail}', 1, now()),"
        " (42, 'gone', 2, '{default}', 1, now() - interval '1 hour');"
        "UPDATE soleil.jobs SET reserved_by = 42, reserved_at = now() WHERE id = 3;"
        "UPDATE soleil.jobs SET reserved_by = 41, reserved_at = now() WHERE queue = 'mail';"
        "INSERT INTO soleil.queue_stats VALUES ('default', date_trunc('minute', now()), 10, 1, 2, 500, 100);"
    )
    insert_failed(conn, 3, error="ValueError: bad input")
    insert_failed(conn, 1, error="KeyError: 'x'", start=10)
    control.pause(runner, "mail")
    return conn


def _inspect_queries() -> dict[str, queries.Query]:
    return queries.parse(INSPECT.read_text(encoding="utf-8"), str(INSPECT))


def _run(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    return conn.execute(_inspect_queries()[name].sql).fetchall()


def test_the_file_holds_the_documented_queries() -> None:
    names = set(_inspect_queries())
    assert names == {
        "queue_depth",
        "oldest_waiting_job",
        "jobs_of_silent_workers",
        "failed_by_exception",
        "throughput_per_minute",
        "paused_queues",
    }
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in docs for name in names)


def test_each_query_answers_on_real_data(busy_database: psycopg.Connection[Any]) -> None:
    conn = busy_database
    depth = {row[0]: row[1:4] for row in _run(conn, "queue_depth")}
    assert depth == {"default": (2, 1, 1), "mail": (0, 0, 1)}
    ((queue, job_id, *_),) = _run(conn, "oldest_waiting_job")
    assert (queue, job_id) == ("default", 2)
    silent = _run(conn, "jobs_of_silent_workers")
    assert [(row[0], row[6]) for row in silent] == [(3, "gone")]
    groups = [(row[2], row[3]) for row in _run(conn, "failed_by_exception")]
    assert groups == [("ValueError: bad input", 3), ("KeyError: 'x'", 1)]
    (minute,) = _run(conn, "throughput_per_minute")
    assert minute[1:5] == ("default", 10, 1, 2) and float(minute[5]) == 50.0
    assert [row[0] for row in _run(conn, "paused_queues")] == ["mail"]


@pytest.mark.skipif(not Path(PSQL).exists(), reason="psql is not installed")
def test_the_whole_file_runs_in_psql(busy_database: psycopg.Connection[Any], database_url: str) -> None:
    result = subprocess.run(
        [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(INSPECT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "ValueError: bad input" in result.stdout
