"""Leases: a silent worker's jobs come back within two heartbeat intervals, a job
past its tries fails as 'worker lost', and a live worker's jobs are never stolen."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from structlog.testing import capture_logs

from soleil.runner import PermanentFailure, Runner, Worker, WorkerOptions, lease
from soleil.runner.claim import ClaimedJob, claim
from soleil.runner.complete import Completer
from soleil.runner.outcome import handle_failure
from tests.apps.basic import Doomed, Record, Sleep
from tests.apps.lifecycle import EmailsOnFailure
from tests.helpers import count_failed, count_jobs, scalar, wait_for

HEARTBEAT = 0.5


def reserve_to_dead_worker(
    conn: psycopg.Connection[Any], job_id: int | None, *, attempts: int, tries: int
) -> int:
    """A worker row whose heartbeat stopped long ago, holding `job_id` (as if SIGKILLed mid-job)."""
    dead = int(
        scalar(
            conn,
            "INSERT INTO soleil.workers (host, pid, queues, concurrency, heartbeat_at, lease_seconds)"
            " VALUES ('gone-host', 999999, '{default}', 1, now() - interval '10 minutes', %s) RETURNING id",
            (2 * HEARTBEAT,),
        )
    )
    conn.execute(
        "UPDATE soleil.jobs SET reserved_by = %s, reserved_at = now() - interval '10 minutes',"
        " attempts = %s, max_attempts = %s WHERE id = %s",
        (dead, attempts, tries, job_id),
    )
    return dead


def rescued_and_reclaimed(
    conn: psycopg.Connection[Any], *, default_tries: int
) -> tuple[ClaimedJob, int, int]:
    """The queue's one job, claimed by a worker that then went silent, rescued and
    claimed again by a new worker: (the old holder's claim, old id, new id)."""
    old = lease.register(conn, ["default"], 1)
    [claimed] = claim(conn, queues=["default"], limit=1, worker_id=old, default_tries=default_tries)
    conn.execute("UPDATE soleil.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (old,))
    assert lease.rescue(conn, healthy_seconds=3600.0) == 1
    new = lease.register(conn, ["default"], 1)
    claim(conn, queues=["default"], limit=1, worker_id=new, default_tries=default_tries)
    return claimed, old, new


@contextlib.contextmanager
def stale_worker(runner: Runner, old: int) -> Iterator[Worker]:
    """A Worker object posing as the silent old holder, its pool open, never started."""
    stale = runner.worker("default", WorkerOptions())
    stale.pool.open(wait=True)
    stale.id = old
    try:
        yield stale
    finally:
        stale.pool.close()


def test_a_dead_workers_job_is_rescued_within_two_heartbeats_and_completed(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(heartbeat_interval=HEARTBEAT)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.workers"), what="worker registration")
    job_id = runner.dispatch(Record(tag="orphan"), delay=3600)  # not claimable before the reservation
    dead = reserve_to_dead_worker(conn, job_id, attempts=1, tries=3)
    conn.execute("UPDATE soleil.jobs SET available_at = now() WHERE id = %s", (job_id,))
    reserved = time.monotonic()
    wait_for(lambda: count_jobs(conn) == 0, timeout=5.0, what="the orphan to be rescued and completed")
    assert time.monotonic() - reserved < 2 * HEARTBEAT + 1.0
    assert conn.execute("SELECT attempt FROM public.runs WHERE job_id = %s", (job_id,)).fetchall() == [(2,)]
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (dead,)) == 0


def test_a_job_past_its_tries_whose_worker_was_lost_fails_and_runs_its_hook(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(Doomed(), delay=3600)
    reserve_to_dead_worker(conn, job_id, attempts=1, tries=1)
    start_worker(heartbeat_interval=HEARTBEAT)
    wait_for(lambda: count_failed(conn) == 1, what="the lost job to fail")
    exception, attempts = conn.execute("SELECT exception, attempts FROM soleil.failed_jobs").fetchone() or (
        "",
        0,
    )
    assert exception.startswith("WorkerLost: the worker running attempt 1 of 1 stopped heartbeating")
    assert attempts == 2
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 0, "handle() must not run again"
    hook = scalar(conn, "SELECT error FROM public.hooks WHERE job_id = %s", (job_id,))
    assert hook is not None and "stopped heartbeating" in hook
    assert count_jobs(conn) == 0


def test_a_live_workers_long_job_is_never_stolen(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(heartbeat_interval=0.1)
    job_id = runner.dispatch(Sleep(seconds=1.5, tag="long"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="worker A to start the job")
    second = start_worker(heartbeat_interval=0.1)  # rescues every 0.1 s, lease 0.2 s
    wait_for(lambda: count_jobs(conn) == 0, what="the long job to finish")
    runs = conn.execute(
        "SELECT tag, attempt FROM public.runs WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()
    assert runs == [("start:long", 1), ("end:long", 1)]
    assert second.processed == 0
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 2


def test_a_rescued_jobs_old_holder_cannot_complete_it(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    job_id = runner.dispatch(Record())
    claimed, old, new = rescued_and_reclaimed(conn, default_tries=3)
    completer = Completer(runner.pool, old)
    completer.completed(claimed, 1.0, delete=True)
    assert completer.flush()
    row = conn.execute("SELECT reserved_by, attempts FROM soleil.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (new, 2), "the re-claimed job must survive its old holder's completion"


def test_a_stale_holders_failed_hook_does_not_commit_when_its_move_is_fenced_out(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch(Doomed())
    claimed, old, new = rescued_and_reclaimed(conn, default_tries=1)
    # The old holder wakes up and fails its (last) try: its hook must not commit.
    with stale_worker(runner, old) as stale:
        handle_failure(stale, claimed, Doomed(), PermanentFailure("late failure"), 1.0)
    assert count_failed(conn) == 0
    assert scalar(conn, "SELECT count(*) FROM public.hooks") == 0, "a fenced-out move committed its hook"
    assert scalar(conn, "SELECT reserved_by FROM soleil.jobs") == new


def test_a_stale_holders_failed_hook_does_not_run_for_a_job_held_elsewhere(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    # The hook's effects outside the database (an email) cannot be rolled back
    # with a fenced-out move: the hook must not run at all.
    EmailsOnFailure.sent.clear()
    job_id = runner.dispatch(EmailsOnFailure())
    claimed, old, new = rescued_and_reclaimed(conn, default_tries=1)
    with stale_worker(runner, old) as stale:
        handle_failure(stale, claimed, EmailsOnFailure(), RuntimeError("late failure"), 1.0)
    assert EmailsOnFailure.sent == [], "the stale holder emailed about a job another worker holds"
    assert count_failed(conn) == 0
    row = conn.execute("SELECT reserved_by, attempts FROM soleil.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (new, 2)


def test_a_move_to_failed_jobs_retried_after_its_commit_reply_was_lost_runs_the_hook_once(
    runner: Runner, conn: psycopg.Connection[Any], monkeypatch: Any
) -> None:
    EmailsOnFailure.sent.clear()
    job_id = runner.dispatch(EmailsOnFailure())
    holder = lease.register(conn, ["default"], 1)
    [claimed] = claim(conn, queues=["default"], limit=1, worker_id=holder, default_tries=1)
    with stale_worker(runner, holder) as worker:
        pooled = worker.pool.connection
        lost: list[bool] = []

        @contextlib.contextmanager
        def reply_lost_once(*args: Any, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
            # The move's transaction commits, then the client sees the connection
            # fail, as when the server's reply to COMMIT never arrives.
            with pooled(*args, **kwargs) as connection:
                yield connection
            if not lost:
                lost.append(True)
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        worker.completer = Completer(worker.pool, holder)
        monkeypatch.setattr(worker.pool, "connection", reply_lost_once)
        with capture_logs() as logs:
            handle_failure(worker, claimed, EmailsOnFailure(), RuntimeError("card declined"), 1.0)
        assert worker.completer.flush()
    assert lost, "the first move's reply was not lost"
    assert count_failed(conn) == 1 and count_jobs(conn) == 0
    assert EmailsOnFailure.sent == [(job_id, 1)], "failed() ran again for a move that had committed"
    # The retry finds the move committed: the job failed, its lease was not lost.
    events = [entry["event"] for entry in logs]
    assert "job.failed" in events and "job.lease_lost" not in events, events
    assert scalar(conn, "SELECT coalesce(sum(failed), 0) FROM soleil.queue_stats") == 1


def test_a_stale_holders_retry_is_fenced_out_and_not_counted(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(Doomed())  # 5 tries: a failure is retried
    claimed, old, new = rescued_and_reclaimed(conn, default_tries=1)
    with stale_worker(runner, old) as stale:
        stale.completer = Completer(stale.pool, old)
        handle_failure(stale, claimed, Doomed(), RuntimeError("late failure"), 1.0)
        assert stale.completer.flush()
    row = conn.execute("SELECT reserved_by, attempts FROM soleil.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (new, 2), "the new holder keeps the job"
    assert scalar(conn, "SELECT coalesce(sum(retried), 0) FROM soleil.queue_stats") == 0


def test_a_job_comes_back_after_the_lease_expires_not_before(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(heartbeat_interval=HEARTBEAT)  # lease: two intervals
    job_id = runner.dispatch(Record(tag="orphan"), delay=3600)
    # A worker that heartbeats now, then never again (SIGKILLed).
    dead = reserve_to_dead_worker(conn, job_id, attempts=1, tries=3)
    with conn.transaction():
        heartbeat_at = scalar(
            conn,
            "UPDATE soleil.workers SET heartbeat_at = now() WHERE id = %s RETURNING heartbeat_at",
            (dead,),
        )
        conn.execute("UPDATE soleil.jobs SET available_at = now() WHERE id = %s", (job_id,))
    ran_at = wait_for(
        lambda: scalar(conn, "SELECT at FROM public.runs WHERE job_id = %s", (job_id,)), timeout=10.0
    )
    elapsed = (ran_at - heartbeat_at).total_seconds()  # both in the database's clock
    assert elapsed >= 2 * HEARTBEAT, f"rescued {elapsed:.2f} s after its last heartbeat: lease not expired"
    assert elapsed < 3 * HEARTBEAT + 1.0, f"rescued only {elapsed:.2f} s after its last heartbeat"
