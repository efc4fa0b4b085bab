"""WorkerOptions.prefetch: claims run ahead of the free executors, and jobs claimed
ahead but never started go back to their queue on stop without using an attempt."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner
from tests.apps.basic import Record, Sleep
from tests.helpers import count_jobs, scalar, wait_for


def test_a_worker_claims_up_to_concurrency_plus_prefetch(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Sleep(seconds=0.5, tag=str(i)) for i in range(6)])

    start_worker(concurrency=1, prefetch=2)

    wait_for(lambda: count_jobs(conn, "reserved_by IS NOT NULL") == 3, what="three jobs reserved")
    assert count_jobs(conn, "reserved_by IS NULL") == 3


def test_jobs_claimed_ahead_are_released_on_stop_with_their_attempt_returned(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    first = runner.dispatch(Sleep(seconds=0.3, tag="first"))
    waiting = runner.dispatch_many([Record(tag=str(i)) for i in range(3)])
    worker = start_worker(concurrency=1, prefetch=3)
    wait_for(lambda: count_jobs(conn, "reserved_by IS NOT NULL") == 4, what="all four reserved")
    # Reserved is not yet running: on a loaded machine the stop could otherwise come before the
    # executor takes the first job, and all four would (rightly) be released.
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'start:first'"),
        what="the first job to start",
    )

    worker.stop(timeout=30)

    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'end:first'") == 1
    assert count_jobs(conn, f"id = {first}") == 0
    rows = conn.execute(
        "SELECT reserved_by, attempts FROM soleil.jobs WHERE id = ANY(%s)", (waiting,)
    ).fetchall()
    assert rows == [(None, 0)] * 3
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag <> 'start:first'") == 1


def test_a_prefetching_worker_runs_every_job_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(200)])

    start_worker(concurrency=3, prefetch=5)

    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert scalar(conn, "SELECT count(DISTINCT job_id) FROM public.runs") == 200
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 200
