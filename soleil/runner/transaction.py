"""The transaction of a transactional job, in as few round trips as libpq allows.

Such a job commits its handler's writes together with its own deletion. Sent
one statement at a time that is four round trips: BEGIN, the fence (delete the
job's row while this worker still holds the attempt), the handler's statements,
COMMIT. Here BEGIN and the fence travel together in one libpq pipeline, and
when the executor's next job is transactional too, the same pipeline carries
the COMMIT of the job before it: two round trips per job plus the handler's own.
The COMMIT and the next job's opening are separate pipeline segments (a Sync
after each), so a COMMIT that fails does not abort the next job's BEGIN.

With a transaction group (WorkerOptions.transaction_group), the next job may
instead join the open transaction in a savepoint of its own: SAVEPOINT and its
fence replace COMMIT, BEGIN and the fence, and one COMMIT ends the group. A
job that fails rolls back to its savepoint; the jobs before it still commit.

psycopg's own pipeline mode flushes and polls after every statement; libpq's
is used directly so that a segment costs one send and one wait. The fence is a
server-side prepared statement with its parameters sent apart from the SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, generators, pq
from psycopg.pq.abc import PGconn, PGresult

from soleil.runner import prepared

# The fence is prepared once per connection; a handler that runs DEALLOCATE ALL
# or DISCARD ALL unprepares it, and the next fence on that connection then fails
# with 26000 and is prepared and sent again (see _open). (psycopg's own prepared
# statements are psycopg's affair: it notices such a command only the first time
# it sees its text on a connection.)
_FENCE = prepared.Statement("job_fence")
_SAVEPOINT = b"SAVEPOINT soleil_job"
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)
_FATAL = pq.ExecStatus.FATAL_ERROR  # commands after it in its segment come back PIPELINE_ABORTED

# libpq before 14 has no pipeline mode: each command then goes on its own.
PIPELINE = psycopg.Pipeline.is_supported()

Command = Callable[[PGconn], None]


def _send(command: bytes) -> Command:
    return lambda pg: pg.send_query_params(command, None)


_SEND_BEGIN = _send(b"BEGIN")
_SEND_SAVEPOINT = _send(_SAVEPOINT)
_SEND_ROLLBACK_TO = _send(b"ROLLBACK TO " + _SAVEPOINT)
_SEND_COMMIT = _send(b"COMMIT")


@dataclass(frozen=True, slots=True)
class Fence:
    """Which attempt the transaction belongs to, and the bound on its statements."""

    job_id: int
    worker_id: int
    attempt: int
    statement_timeout_ms: int

    def params(self) -> list[bytes | None]:
        return [
            str(self.job_id).encode(),
            str(self.worker_id).encode(),
            str(self.attempt).encode(),
            f"{self.statement_timeout_ms}ms".encode(),
        ]


@dataclass(frozen=True, slots=True)
class Opened:
    """A job's transaction after its BEGIN and fence: `fenced` is False when the
    attempt is no longer this worker's; `error` is set when the commands failed."""

    fence: Fence
    fenced: bool
    error: psycopg.Error | None = None


def open_next(
    conn: psycopg.Connection[Any], fence: Fence | None, *, commit: bool = False, nested: bool = False
) -> tuple[psycopg.Error | None, Opened | None]:
    """Commit the connection's open transaction (when `commit`), then begin the
    transaction of `fence`'s job and run its fence, all in one round trip; when
    `nested`, the job joins the open transaction in a savepoint instead.
    Returns the COMMIT's error (None: committed, or nothing to commit) and the
    new transaction (None without `fence`)."""
    return _open(conn, fence, commit=commit, lead=_SEND_SAVEPOINT if nested else _SEND_BEGIN)


def end_group(conn: psycopg.Connection[Any]) -> bool:
    """Roll the latest job's savepoint back and commit the jobs before it, in one
    round trip. True when they committed."""
    if conn.info.transaction_status not in _OPEN:
        return False  # a handler's own ROLLBACK or COMMIT statement ended it
    (rollback_to,), (commit,) = _exchange(conn, [[_SEND_ROLLBACK_TO], [_SEND_COMMIT]])
    # After a failed ROLLBACK TO, COMMIT still succeeds but reports ROLLBACK.
    return (
        rollback_to.status == pq.ExecStatus.COMMAND_OK
        and commit.status == pq.ExecStatus.COMMAND_OK
        and commit.command_status == b"COMMIT"
    )


def _open(
    conn: psycopg.Connection[Any], fence: Fence | None, *, commit: bool, lead: Command | None
) -> tuple[psycopg.Error | None, Opened | None]:
    segments: list[list[Command]] = [[_SEND_COMMIT]] if commit else []
    prepare = False
    if fence is not None:
        opening: list[Command] = []
        if not _FENCE.is_prepared_on(conn):
            prepare = True
            opening.append(lambda pg: pg.send_prepare(_FENCE.name, _FENCE.sql))
        params = fence.params()
        if lead is not None:
            opening.append(lead)
        opening.append(lambda pg: pg.send_query_prepared(_FENCE.name, params))
        segments.append(opening)
    results = _exchange(conn, segments)
    commit_error = _error_in(conn, results[0]) if commit else None
    if fence is None:
        return commit_error, None
    opening_results = results[-1]
    if prepare and opening_results and opening_results[0].status == pq.ExecStatus.COMMAND_OK:
        _FENCE.prepared(conn)  # even if what followed failed
    error = _error_in(conn, opening_results)
    if error is None:
        return commit_error, Opened(fence, fenced=opening_results[-1].ntuples == 1)
    if error.sqlstate == prepared.UNDEFINED_STATEMENT and _FENCE.is_prepared_on(conn):
        _FENCE.unprepared(conn)
        if lead is _SEND_SAVEPOINT:  # the savepoint stays; the jobs before it are kept
            _exchange(conn, [[_SEND_ROLLBACK_TO]])
            return commit_error, _open(conn, fence, commit=False, lead=None)[1]
        _exchange(conn, [[_send(b"ROLLBACK")]])
        return commit_error, _open(conn, fence, commit=False, lead=_SEND_BEGIN)[1]
    return commit_error, Opened(fence, fenced=False, error=error)


def _exchange(conn: psycopg.Connection[Any], segments: list[list[Command]]) -> list[list[PGresult]]:
    """Send every segment, then read their results: one list per segment. In a
    segment, a command after a failed one is skipped (PIPELINE_ABORTED)."""
    pg = conn.pgconn
    try:
        if not PIPELINE:
            return [_one_by_one(conn, segment) for segment in segments]
        pg.enter_pipeline_mode()
        for segment in segments:
            for command in segment:
                command(pg)
            pg.pipeline_sync()
        conn.wait(generators.send(pg))
        found: list[list[PGresult]] = []
        for _ in segments:
            results: list[PGresult] = []
            while True:
                batch = conn.wait(generators.fetch_many(pg))
                if batch and batch[0].status == _SYNC:
                    break
                results += batch
            found.append(results)
        pg.exit_pipeline_mode()
        return found
    except BaseException:
        # Results may still be on their way: the connection cannot be reused.
        conn.close()
        raise


def _one_by_one(conn: psycopg.Connection[Any], segment: list[Command]) -> list[PGresult]:
    results: list[PGresult] = []
    for command in segment:
        command(conn.pgconn)
        results += conn.wait(generators.execute(conn.pgconn))
        if results[-1].status == _FATAL:
            break
    return results


def _error_in(conn: psycopg.Connection[Any], results: list[PGresult]) -> psycopg.Error | None:
    for result in results:
        if result.status == _FATAL:
            return errors.error_from_result(result, encoding=conn.info.encoding)
    return None
