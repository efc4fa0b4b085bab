"""`soleil-runner work --prefetch`: claims run ahead of the executors, and what was
claimed ahead but never started is back in the queue, attempt unspent, at exit."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner
from tests.acceptance.support import APPS, FAST
from tests.apps.basic import Record
from tests.conftest import Processes
from tests.helpers import scalar


def test_prefetch_with_max_jobs_runs_exactly_that_many_and_returns_the_rest(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(8)])
    result = processes.run(
        "work", "default", "--app", APPS, "--concurrency", "2", "--prefetch", "3", "--max-jobs", "5", *FAST,
        database_url=runner.database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 5
    assert conn.execute(
        "SELECT count(*), max(attempts) FROM soleil.jobs WHERE reserved_by IS NULL"
    ).fetchone() == (3, 0)


def test_a_negative_prefetch_is_a_usage_error(processes: Processes, database_url: str) -> None:
    result = processes.run("work", "default", "--prefetch", "-1", database_url=database_url)
    assert result.returncode == 2
    assert "--prefetch" in result.stderr
