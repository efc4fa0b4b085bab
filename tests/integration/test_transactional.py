"""Transactional jobs: effects and the job's deletion commit together, roll back
together, and happen exactly once even when the worker lost the job's lease."""

from __future__ import annotations

import queue
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner, WorkerOptions, lease
from soleil.runner.claim import ClaimedJob, claim
from soleil.runner.complete import Completer
from soleil.runner.execute import Executor
from tests.apps.basic import InsertRow
from tests.apps.lifecycle import InsertThenFail
from tests.helpers import count_failed, count_jobs, scalar, wait_for

STATE = "SELECT (SELECT count(*) FROM public.effects), (SELECT count(*) FROM soleil.jobs)"


def test_effects_and_the_jobs_deletion_become_visible_together(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch(InsertRow(key="k", sleep=0.3))
    seen: set[tuple[int, int]] = set()

    def finished() -> bool:
        state = conn.execute(STATE).fetchone()
        assert state is not None
        seen.add((state[0], state[1]))
        return (state[0], state[1]) == (1, 0)

    start_worker()
    wait_for(finished, interval=0.005, what="the job to commit")
    assert seen <= {(0, 1), (1, 0)}, f"saw a half-committed state: {seen}"
    assert (0, 1) in seen, "the poll should have seen the job before it committed"


def test_an_exception_rolls_the_effects_back(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(InsertThenFail(key="never"))  # 2 tries
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 0
    assert scalar(conn, "SELECT attempts FROM soleil.failed_jobs WHERE job_id = %s", (job_id,)) == 2
    assert scalar(conn, "SELECT error FROM public.hooks WHERE job_id = %s", (job_id,)) == (
        "RuntimeError: after the insert"
    )


def test_a_job_whose_lease_was_lost_before_its_transaction_has_its_effects_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(InsertRow(key="once"))
    # Worker A claims the job, then goes silent: its row ages past its lease.
    stale_id = lease.register(conn, ["default"], 1, lease_seconds=0.6)
    [stale_claim] = claim(conn, queues=["default"], limit=1, worker_id=stale_id, default_tries=3)
    conn.execute(
        "UPDATE soleil.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (stale_id,)
    )
    # Worker B rescues it (once it has heartbeated for A's lease) and runs it: attempt 2.
    start_worker()
    wait_for(lambda: count_jobs(conn) == 0, what="worker B to run the rescued job")
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (stale_id,)) == 0
    # Worker A wakes up and starts the attempt it had claimed: the fence stops it.
    run_as_stale_worker(runner, stale_id, stale_claim)
    assert conn.execute("SELECT key FROM public.effects").fetchall() == [("once",)]
    assert count_failed(conn) == 0
    assert job_id == stale_claim.id


def test_a_stale_holder_that_starts_first_cannot_commit_after_the_job_was_reclaimed(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch(InsertRow(key="once"))
    stale_id = lease.register(conn, ["default"], 1)
    [stale_claim] = claim(conn, queues=["default"], limit=1, worker_id=stale_id, default_tries=3)
    # The lease is lost and another worker re-claims the job before A starts it.
    conn.execute("DELETE FROM soleil.workers WHERE id = %s", (stale_id,))
    lease.rescue(conn, healthy_seconds=60.0)
    other_id = lease.register(conn, ["default"], 1)
    [fresh_claim] = claim(conn, queues=["default"], limit=1, worker_id=other_id, default_tries=3)
    assert fresh_claim.attempt == 2
    run_as_stale_worker(runner, stale_id, stale_claim)
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 0
    run_as_stale_worker(runner, other_id, fresh_claim)
    assert conn.execute("SELECT key FROM public.effects").fetchall() == [("once",)]
    assert count_jobs(conn) == 0


def run_as_stale_worker(runner: Runner, worker_id: int, claimed: ClaimedJob) -> None:
    """Run one claimed job through the real executor code, as worker `worker_id`."""
    worker = runner.worker("default", WorkerOptions(completion_interval=0.01))
    worker.pool.open(wait=True)
    worker.id = worker_id
    worker.completer = Completer(worker.pool, worker_id, interval=0.01)
    worker.completer.start()
    try:
        Executor(worker, queue.SimpleQueue(), 99)._run(claimed)
        assert worker.completer.stop(timeout=5.0)
    finally:
        worker.pool.close()


def test_a_transactional_job_running_when_its_worker_is_declared_dead_has_its_effects_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Worker A heartbeats too rarely to notice anything during this test.
    slow = start_worker(heartbeat_interval=60.0)
    job_id = runner.dispatch(InsertRow(key="once", sleep=1.0))
    wait_for(
        lambda: scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle in transaction'",
        ),
        what="worker A to be inside the job's transaction",
    )
    conn.execute(
        "UPDATE soleil.workers SET heartbeat_at = now() - interval '1 hour', lease_seconds = 0.2"
        " WHERE id = %s",
        (slow.id,),
    )
    # Worker B declares A dead once it has heartbeated for A's lease, and keeps
    # rescuing every 0.1 s while A's transaction holds the job row: the row is
    # skipped, not handed out again.
    rescuer = start_worker(heartbeat_interval=0.1)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (slow.id,)) == 0)
    wait_for(lambda: count_jobs(conn) == 0, what="worker A to commit")
    assert conn.execute("SELECT key FROM public.effects").fetchall() == [("once",)]
    assert rescuer.processed == 0
    assert count_failed(conn) == 0
    assert job_id is not None


def test_jobs_dispatched_by_a_transactional_job_commit_or_roll_back_with_it(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    from tests.apps.lifecycle import DispatchThenFail

    runner.dispatch(DispatchThenFail())
    start_worker()
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs") == 1, what="the follow-up to run")
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    tags = [r[0] for r in conn.execute("SELECT tag FROM public.runs")]
    assert tags == ["follow-up of attempt 2"]
    assert count_failed(conn) == 0


def test_a_job_that_swallows_a_database_error_fails_instead_of_sticking(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    from tests.apps.lifecycle import SwallowsDatabaseError

    job_id = runner.dispatch(SwallowsDatabaseError(key="aborted"))
    runner.dispatch(InsertRow(key="fine"))
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail after its tries")
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (job_id,))
    assert "transaction" in exception and "aborted" in exception, exception
    assert scalar(conn, "SELECT attempts FROM soleil.failed_jobs WHERE job_id = %s", (job_id,)) == 2
    assert conn.execute("SELECT key FROM public.effects").fetchall() == [("fine",)]
    assert count_jobs(conn) == 0


def test_a_transactional_jobs_statements_are_bounded_by_its_timeout(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    from tests.apps.basic import RecordStatementTimeout

    runner.dispatch(RecordStatementTimeout())
    start_worker()
    wait_for(lambda: count_jobs(conn) == 0, what="the job to complete")
    assert scalar(conn, "SELECT key FROM public.effects") == "7s"


class InsertRowForAMonth(InsertRow):
    """A transactional job whose timeout is past PostgreSQL's integer milliseconds."""

    name = "tests.insert_row_for_a_month"
    timeout = 31 * 24 * 3600


class InsertRowWithoutEnd(InsertRow):
    """A transactional job whose timeout is infinite."""

    name = "tests.insert_row_without_end"
    timeout = float("inf")


@pytest.mark.parametrize("job_class", [InsertRowForAMonth, InsertRowWithoutEnd], ids=["month", "infinite"])
def test_a_transactional_job_with_a_timeout_past_postgresqls_integers_runs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, job_class: type[InsertRow]
) -> None:
    # Plain jobs before and after: a chain sends the next job's fence with the
    # COMMIT of the one before, which must not fail for the next one's setting.
    runner.dispatch_many([InsertRow(key="before"), job_class(key="long"), InsertRow(key="after")])
    start_worker(concurrency=1, prefetch=2)
    wait_for(lambda: count_jobs(conn) == 0, what="the jobs to run")
    assert count_failed(conn) == 0
    assert sorted(r[0] for r in conn.execute("SELECT key FROM public.effects")) == ["after", "before", "long"]
