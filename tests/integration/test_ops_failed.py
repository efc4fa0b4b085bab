"""The failed-jobs API (soleil.runner.failed) against a real database."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner
from soleil.runner import failed as failed_jobs
from soleil.runner.errors import FailedJobNotFound
from tests.apps.basic import Doomed, Record
from tests.apps.lifecycle import AlwaysFails
from tests.helpers import count_failed, count_jobs, scalar, wait_for
from tests.ops_data import assert_nothing_lost_or_duplicated, insert_failed


def test_a_real_failure_is_listed_shown_retried_and_runs_again(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch(Doomed())
    worker = start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    (summary,) = failed_jobs.list_failed(runner)
    assert (summary.queue, summary.job, summary.attempts) == ("default", "tests.doomed", 1)
    assert summary.error == "PermanentFailure: no point trying again"
    job = failed_jobs.show(runner, summary.uuid)
    assert "Traceback" in job.exception and job.payload == {}
    worker.stop()

    result = failed_jobs.retry(runner, [summary.uuid])
    assert result.retried == [summary.uuid] and result.missing == []
    assert count_failed(conn) == 0
    assert scalar(conn, "SELECT attempts FROM soleil.jobs WHERE job = 'tests.doomed'") == 0
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the retried job to run and fail again")
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'doomed'") == 2


def test_a_unique_key_is_held_between_tries_freed_by_the_failure_and_not_given_back_by_retry(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(AlwaysFails(), unique_key="report-1")
    start_worker(tries=2, backoff=1.0)
    waiting = "SELECT attempts FROM soleil.jobs WHERE id = %s AND reserved_by IS NULL"
    wait_for(lambda: scalar(conn, waiting, (job_id,)), what="the first try to fail")
    assert runner.dispatch(Record(tag="dup"), unique_key="report-1") is None, "held while waiting to retry"
    wait_for(lambda: count_failed(conn) == 1, what="the last try to fail")
    newer = runner.dispatch(Record(tag="newer"), unique_key="report-1")
    assert newer is not None, "a failed job no longer holds its key"
    (summary,) = failed_jobs.list_failed(runner)
    assert failed_jobs.retry(runner, [summary.uuid]).retried == [summary.uuid]
    # Put back without its key (as Laravel's queue:retry): it cannot clash with the newer job.
    keys = conn.execute("SELECT job, unique_key FROM soleil.jobs WHERE job = 'tests.always_fails'").fetchall()
    assert keys == [("tests.always_fails", None)]
    wait_for(lambda: count_failed(conn) == 1 and count_jobs(conn) == 0, what="the retried job to fail again")


def test_list_is_newest_first_filtered_and_limited(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    insert_failed(conn, 3, queue="mail", hours_ago=2)
    newest = insert_failed(conn, 2, queue="default", start=10)
    jobs = failed_jobs.list_failed(runner, limit=2)
    assert [j.uuid for j in jobs] == newest[::-1]
    assert {j.queue for j in failed_jobs.list_failed(runner, queue="mail")} == {"mail"}
    assert failed_jobs.count(runner) == 5 and failed_jobs.count(runner, queue="mail") == 3
    assert failed_jobs.list_failed(runner, queue="nothing") == []


def test_unknown_uuids_are_reported_and_the_known_ones_still_move(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    (known,) = insert_failed(conn, 1)
    unknown = "00000000-0000-0000-0000-000000000000"
    result = failed_jobs.retry(runner, [known, unknown, "not-a-uuid"])
    assert result.retried == [known] and result.missing == ["not-a-uuid", unknown]
    assert count_jobs(conn) == 1 and count_failed(conn) == 0
    with pytest.raises(FailedJobNotFound, match=unknown):
        failed_jobs.show(runner, unknown)
    with pytest.raises(FailedJobNotFound, match="not-a-uuid"):
        failed_jobs.forget(runner, "not-a-uuid")


def test_retry_all_of_one_queue_restores_queue_priority_and_tries(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    insert_failed(conn, 7, queue="mail")
    insert_failed(conn, 3, queue="default", start=100)
    conn.execute("UPDATE soleil.failed_jobs SET priority = 5 WHERE queue = 'mail'")
    chunks: list[int] = []
    assert failed_jobs.retry_all(runner, queue="mail", chunk_size=3, progress=chunks.append) == 7
    assert chunks == [3, 3, 1]
    rows = conn.execute("SELECT DISTINCT queue, priority, attempts, max_attempts FROM soleil.jobs").fetchall()
    assert rows == [("mail", 5, 0, 3)]
    assert failed_jobs.count(runner) == 3


def test_two_operators_retrying_at_once_neither_lose_nor_duplicate(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    insert_failed(conn, 20_000)
    totals: list[int] = []
    barrier = threading.Barrier(2)

    def operator() -> None:
        with Runner(database_url) as runner:
            barrier.wait()
            totals.append(failed_jobs.retry_all(runner, chunk_size=100))

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(totals) == 20_000
    assert assert_nothing_lost_or_duplicated(conn, 20_000) == (20_000, 0)


def test_retry_all_moves_100000_failed_jobs_in_seconds(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    insert_failed(conn, 100_000)
    started = time.perf_counter()
    assert failed_jobs.retry_all(runner) == 100_000
    elapsed = time.perf_counter() - started
    print(f"retry_all: 100000 failed jobs in {elapsed:.2f} s")  # reported, not asserted
    assert count_failed(conn) == 0 and count_jobs(conn) == 100_000


def test_forget_flush_and_prune(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    (one,) = insert_failed(conn, 1)
    insert_failed(conn, 4, hours_ago=30, start=10)
    insert_failed(conn, 5, hours_ago=3, start=20)
    failed_jobs.forget(runner, one)
    with pytest.raises(FailedJobNotFound):
        failed_jobs.forget(runner, one)
    assert failed_jobs.prune(runner, 24, chunk_size=3) == 4
    assert failed_jobs.flush(runner, older_than_hours=48) == 0
    assert failed_jobs.flush(runner) == 5
    assert count_failed(conn) == 0


def test_retry_notifies_an_idle_worker_at_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    uuids = insert_failed(conn, 3)
    start_worker(sleep=30.0)  # only the notification can wake it in time
    runner.dispatch(Record(tag="warm-up"))
    wait_for(lambda: count_jobs(conn) == 0, what="the warm-up job")
    assert len(failed_jobs.retry(runner, uuids).retried) == 3
    wait_for(lambda: count_jobs(conn) == 0, timeout=5, what="the retried jobs to run")
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 4
