"""The shortest path through a job's life, end to end."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner
from tests.apps.basic import Flaky, InsertRow, Record
from tests.helpers import count_jobs, scalar, wait_for


def test_dispatched_jobs_run_once_and_leave_no_row(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    ids = [runner.dispatch(Record(tag=str(i))) for i in range(5)]
    ids += runner.dispatch_many([Flaky(succeed_on=2), InsertRow(key="k")])
    start_worker(concurrency=2)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag <> 'flaky'") == 5
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'flaky'") == 2
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 1
    assert scalar(conn, "SELECT count(*) FROM soleil.failed_jobs") == 0
    assert len(set(ids)) == 7
