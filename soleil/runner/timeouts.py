"""Timeouts: Python cannot kill a thread, so an attempt that runs past its
timeout is stopped in three steps, checked by the worker's main loop.

1. At the deadline the executor gets a JobTimeout raised inside the job's Python
   code, and a transactional job's running query is cancelled (its
   `statement_timeout` bounds each statement anyway). A job that returns now is
   retried or failed as timed out, like any failure.
2. If the job still has not returned after the grace period (a blocking C call
   ignores the exception), the worker abandons the thread: a transactional job's
   backend is terminated (its transaction holds the job row), a fresh executor
   takes the old one's place, and the attempt is recorded as timed out on a
   thread of its own (the main loop sends the heartbeats). Whatever the old
   thread does later is fenced out.
3. When more threads are stuck than the worker has slots, the worker exits and
   systemd starts a clean process, as Laravel's worker does.

A hard stop gives up on the jobs still running the same way (give_up_running).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from soleil.runner import queries
from soleil.runner.claim import ClaimedJob
from soleil.runner.errors import JobTimeout
from soleil.runner.job import Job, load_payload
from soleil.runner.outcome import handle_failure

if TYPE_CHECKING:
    from soleil.runner.execute import Executor
    from soleil.runner.worker import Worker

log = structlog.get_logger("soleil.job")

# How long ending sessions may take, the terminate and the wait for the sessions
# to end together: a hard stop's whole budget after the grace is counted in
# docs/deployment.md (TimeoutStopSec). A session holds its jobs' rows until it
# has ended: the unregister would skip those rows (it gives back only what it can
# lock at once), and they would wait for the next rescue instead of going back
# at once.
TERMINATE_SECONDS = 5.0
TERMINATE_POLL_SECONDS = 0.01


def check(worker: Worker, now: float) -> None:
    """Interrupt overdue jobs; abandon those still running after the grace period."""
    for executor in list(worker.executors):
        claimed = None if executor.abandoned else executor.overdue(now)
        if claimed is None:
            continue
        # The executor acts only if `claimed` still runs: it may have returned at
        # its deadline and the executor started the next job meanwhile.
        if not executor.timed_out:
            executor.interrupt(claimed)
        elif now >= executor.deadline + worker.options.timeout_grace:
            abandon(worker, executor, claimed)


def abandon(worker: Worker, executor: Executor, claimed: ClaimedJob) -> None:
    taken = executor.abandon(claimed, worker.options.timeout_grace)
    if taken is None:
        return  # it finished meanwhile
    claimed, backend_pid, grouped, unstarted = taken
    log.error("job.abandoned", thread=executor.thread.name, **claimed.log_fields())
    if backend_pid is not None:
        # Its transaction holds the job row; end it so the outcome can be written
        # (which waits for the row: the main loop does not wait for the session).
        error = terminate(worker, [backend_pid], time.monotonic() + TERMINATE_SECONDS)
        if error is not None:
            # The main loop goes on: a database that is down has ended it already.
            log.warning(
                "worker.terminate_failed", backend_pids=[backend_pid], error=error, **claimed.log_fields()
            )
    if grouped:  # their writes went with the terminated transaction
        log.warning("job.group_rolled_back", jobs=[job.id for job in grouped], reason="abandoned")
        worker.requeue(grouped)
    worker.pass_on(unstarted)
    worker.replace_executor(executor)
    # Off the main loop, which sends the heartbeats: the outcome may run a slow
    # failed() hook, or wait for the database to come back, and a silent worker
    # loses its other running jobs to a rescue. The job keeps its slot until its
    # outcome is recorded, as on an executor, so a stop waits for it before the
    # worker gives its jobs back and unregisters.
    threading.Thread(
        target=_record_abandoned_then_free_slot,
        args=(worker, claimed),
        name=f"soleil-abandoned-{claimed.id}",
        daemon=True,
    ).start()


def give_up_running(worker: Worker) -> list[ClaimedJob]:
    """A hard stop (the stop grace ran out, or a second signal): fence out the
    executors still running, as abandon() does, and end their transactions. Those
    hold the rows of their jobs, of their groups and of the jobs that joined them,
    which the release that gives the jobs back would wait for until the handlers
    return, and the unregister would skip; so this waits for them to end. Returns
    the jobs taken but not started (their handler not entered), whose attempt the
    release gives back; the others go back with it counted."""
    backend_pids: list[int] = []
    unstarted: list[ClaimedJob] = []
    for executor in worker.executors:
        taken = executor.abandon()
        if taken is None:
            continue
        claimed, backend_pid, _, items = taken
        if backend_pid is not None:
            backend_pids.append(backend_pid)
        if not executor.handler_entered:  # cannot change once abandoned
            unstarted.append(claimed)
        unstarted += [item for item in items if item is not None]
        # Stop markers it took ahead belong to the executors still to end.
        worker.pass_on([None for item in items if item is None])
    if backend_pids:
        # One deadline for both steps, so that the stop's budget after the grace
        # stays as docs/deployment.md counts it.
        deadline = time.monotonic() + TERMINATE_SECONDS
        error = terminate(worker, backend_pids, deadline) or wait_ended(worker, backend_pids, deadline)
        if error is not None:
            log.warning("worker.terminate_failed", backend_pids=backend_pids, error=error)
    return unstarted


def terminate(worker: Worker, backend_pids: list[int], deadline: float) -> str | None:
    """Signal these sessions to end, by `deadline` (time.monotonic()); the error if
    that could not be done. A session the server would not signal is a failure
    only while it is still there: one that has ended by itself meanwhile is not a
    server session any more either (pg_terminate_backend warns and returns false)."""
    try:
        with worker.pool.connection(timeout=_left(deadline)) as conn:
            pids = {"pids": backend_pids}
            refused = [row[0] for row in conn.execute(queries.get("backend_terminate"), pids)]
            if refused:
                left = [row[0] for row in conn.execute(queries.get("backend_alive"), {"pids": refused})]
                if left:
                    return f"sessions {left} could not be signalled to end"
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        return str(exc).strip()
    return None


def wait_ended(worker: Worker, backend_pids: list[int], deadline: float) -> str | None:
    """Wait until these terminated sessions have ended (their transactions rolled
    back, their locks released); the error if they did not by `deadline`
    (time.monotonic())."""
    try:
        with worker.pool.connection(timeout=_left(deadline)) as conn:
            while True:
                left = [row[0] for row in conn.execute(queries.get("backend_alive"), {"pids": backend_pids})]
                if not left:
                    return None
                if time.monotonic() >= deadline:
                    return f"sessions {left} still running when the {TERMINATE_SECONDS:g} s ran out"
                time.sleep(TERMINATE_POLL_SECONDS)
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        return str(exc).strip()


def _left(deadline: float) -> float:
    """The time left until `deadline`, as a pool's timeout (which must not be 0)."""
    return max(deadline - time.monotonic(), 0.01)


def _record_abandoned_then_free_slot(worker: Worker, claimed: ClaimedJob) -> None:
    try:
        record_abandoned(worker, claimed, worker.timeout_for(claimed.name), worker.options.timeout_grace)
    except Exception as exc:
        log.exception("job.outcome_error", error=str(exc), **claimed.log_fields())
    finally:
        worker.job_finished()


def record_abandoned(worker: Worker, claimed: ClaimedJob, timeout: float, grace: float) -> None:
    exc = JobTimeout(
        f"attempt exceeded the job's timeout of {timeout:g} s and did not stop within "
        f"{grace:g} s; its thread was abandoned"
    )
    try:
        instance: Job | None = load_payload(worker.registry.lookup(claimed.name), claimed.payload)
    except Exception:
        instance = None
    handle_failure(worker, claimed, instance, exc, (timeout + grace) * 1000.0)
