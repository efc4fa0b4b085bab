"""What happens to an attempt that did not succeed: retry later, or fail for good.

Both write fenced statements (holder and attempt must still match), so a job
that was rescued while its old holder was silent is never touched by it.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from soleil.runner import backoff as backoff_rules
from soleil.runner import queries
from soleil.runner.claim import ClaimedJob
from soleil.runner.errors import InvalidPayload, PermanentFailure, UnknownJob, WorkerLost
from soleil.runner.job import Job, JobContext

if TYPE_CHECKING:
    from soleil.runner.worker import Worker

log = structlog.get_logger("soleil.job")

# Errors after which another try cannot help.
PERMANENT = (PermanentFailure, UnknownJob, InvalidPayload, WorkerLost)
DB_RETRY_SECONDS = 0.5


def describe_exception(exc: BaseException) -> str:
    """`Type: message` then the traceback, as stored in failed_jobs.exception."""
    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc)).rstrip()
    text = f"{head}\n\n{trace}" if exc.__traceback__ is not None else head
    return storable(text)


def storable(text: str) -> str:
    """`text` as a UTF-8 database's text columns take it: a NUL, or a lone surrogate (a file name
    decoded with surrogateescape), would make the write fail and the job stay
    reserved. Both become backslash escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def handle_failure(
    worker: Worker,
    claimed: ClaimedJob,
    instance: Job | None,
    exc: BaseException,
    duration_ms: float,
) -> None:
    """Retry after the backoff while tries remain; otherwise, in one transaction,
    lock the job's row for this attempt, run failed() and move the job to
    failed_jobs (no row locked: no hook, no move). Retries while the database is away."""
    cls = worker.job_class_or_none(claimed.name)
    last_try = isinstance(exc, PERMANENT) or claimed.attempt >= claimed.max_attempts
    fields = {
        **claimed.log_fields(),
        "max_attempts": claimed.max_attempts,
        "duration_ms": round(duration_ms, 3),
        "error": f"{type(exc).__name__}: {exc}",
    }
    if not last_try:
        spec = cls.backoff if cls is not None and cls.backoff is not None else worker.options.backoff
        delay = backoff_rules.delay_seconds(spec, claimed.attempt)
        params = {"id": claimed.id, "worker_id": worker.id, "attempts": claimed.attempt, "delay": delay}
        retried = _with_database(
            worker, lambda conn: conn.execute(queries.get("job_retry_later"), params).fetchone()
        )
        if retried is None:  # rescued and re-claimed meanwhile: not this worker's retry to count
            log.warning("job.lease_lost", **fields)
            return
        worker.completer.retried(claimed)
        log.warning("job.retrying", retry_in=round(delay, 3), **fields)
        return

    fence = {"id": claimed.id, "worker_id": worker.id, "attempts": claimed.attempt}
    # The failed_jobs uuid and transaction id of the last move that reached its
    # COMMIT: the row is gone when a retry follows a COMMIT whose reply was lost.
    sent: dict[str, str] = {}

    def move(conn: psycopg.Connection[Any]) -> str | None:
        if sent:
            status = conn.execute(queries.get("transaction_status"), {"xid": sent["xid"]}).fetchone()
            if status is not None and status[0] == "committed":
                return sent["uuid"]
            sent.clear()  # aborted, or still ending: the lock below waits for it
        error_text = describe_exception(exc)
        with conn.transaction():
            # The hook's effects outside the database cannot be rolled back: it must
            # not run for a job another worker holds now, nor again when a retry
            # follows a move that committed but whose reply was lost.
            if conn.execute(queries.get("job_lock_held"), fence).fetchone() is None:
                return None
            if instance is not None:
                hook_error = _run_failed_hook(worker, conn, claimed, instance, exc)
                if hook_error is not None:
                    error_text += f"\n\nThe failed() hook raised too: {describe_exception(hook_error)}"
            row = conn.execute(
                queries.get("job_move_to_failed"), {**fence, "exception": error_text}
            ).fetchone()
            if row is None:
                # The hook itself removed the row: its writes must not commit without the move.
                raise psycopg.Rollback()
            sent.update(uuid=str(row[0]), xid=str(row[1]))
            return str(row[0])
        return None

    try:
        failed_uuid = _with_database(worker, move)
    except (psycopg.OperationalError, OSError):
        raise  # the worker is abandoning: the job comes back after its lease
    except Exception as write_error:
        # Not the database being away: every retry would fail the same way and the
        # job stay reserved by a live worker. Move it without the hook's writes,
        # with a message that cannot fail to store (a retry would run the hook again).
        log.error("job.outcome_error", outcome_error=f"{type(write_error).__name__}: {write_error}", **fields)
        plain = {**fence, "exception": _plain_description(exc, write_error)}
        failed_uuid = _with_database(
            worker, lambda conn: _first(conn.execute(queries.get("job_move_to_failed"), plain).fetchone())
        )
    if failed_uuid is None:
        log.warning("job.lease_lost", **fields)
        return
    worker.completer.failed(claimed)
    log.error("job.failed", failed_uuid=failed_uuid, **fields)


def _plain_description(exc: BaseException, write_error: Exception) -> str:
    """The failure as ASCII text, with why it is not stored as usual: what the
    fallback move writes when the usual one raised."""
    text = (
        f"{describe_exception(exc)}\n\n"
        f"Soleil could not store this failure as usual ({type(write_error).__name__}: {write_error}):"
        " the job was moved here without what its failed() hook wrote."
    )
    return storable(text).encode("ascii", "backslashreplace").decode("ascii")


def _first(row: tuple[Any, ...] | None) -> str | None:
    return None if row is None else str(row[0])


def _run_failed_hook(
    worker: Worker,
    conn: psycopg.Connection[Any],
    claimed: ClaimedJob,
    instance: Job,
    exc: BaseException,
) -> BaseException | None:
    """Runs the hook in a savepoint of the move's transaction: its writes commit
    with the move, or vanish with it; a hook that raises does not stop the move."""
    ctx = worker.context(claimed, connection=conn)
    try:
        with conn.transaction():
            instance.failed(ctx, exc)
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                # It caught a database error: raising here rolls back to the savepoint,
                # which keeps the move's transaction usable.
                raise RuntimeError("failed() caught a database error; its writes were rolled back")
    except Exception as hook_exc:
        log.error(
            "job.failed_hook_error",
            **claimed.log_fields(),
            error=f"{type(hook_exc).__name__}: {hook_exc}",
        )
        return hook_exc
    return None


def _with_database(worker: Worker, action: Any) -> Any:
    """Run `action(conn)` until it gets through: an outcome must not be dropped
    because the database restarted. Gives up only when the worker is abandoning."""
    while True:
        try:
            with worker.pool.connection() as conn:
                return action(conn)
        except (psycopg.OperationalError, OSError) as exc:
            if worker.hard_stopped:
                raise
            log.warning("database.unavailable", during="job outcome", error=str(exc).strip())
            time.sleep(DB_RETRY_SECONDS)


__all__ = ["JobContext", "describe_exception", "handle_failure"]
