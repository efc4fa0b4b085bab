"""The transaction of a transactional job, in as few round trips as libpq allows.

Such a job commits its handler's writes together with its own deletion. Sent
one statement at a time that is four round trips: BEGIN, the fence (delete the
job's row while this worker still holds the attempt), the handler's statements,
COMMIT. Here BEGIN and the fence travel together in one libpq pipeline, and
when the executor's next job is transactional too, the same pipeline carries
the COMMIT of the job before it: two round trips per job plus the handler's own.
The COMMIT and the next job's opening are separate pipeline segments (a Sync
after each), so a COMMIT that fails does not abort the next job's BEGIN.

In a transaction group (WorkerOptions.transaction_group) jobs join the open
transaction after its first job has run: one statement locks the rows of the
jobs joining, their handlers run one after the other with no round trip of
Soleil's between them, and the rows of those that ran are deleted in the round
trip of the group's COMMIT. A group is one transaction, without savepoints: a
job that fails rolls the group back. The group's two statements go unprepared
(one parse per group), so that a handler's DEALLOCATE ALL cannot fail them.

psycopg's own pipeline mode flushes and polls after every statement; libpq's
is used directly so that a segment costs one send and one wait. The fences are
server-side prepared statements with their parameters sent apart from the SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, generators, pq
from psycopg.pq.abc import PGconn, PGresult

from soleil.runner import prepared

# The fence is prepared once per connection; a handler that runs DEALLOCATE ALL
# or DISCARD ALL unprepares it, and the next fence on that connection then fails
# with 26000 and is prepared and sent again (see _opened). (psycopg's own prepared
# statements are psycopg's affair: it notices such a command only the first time
# it sees its text on a connection.)
_FENCE = prepared.Statement("job_fence")
_JOIN = prepared.Statement("job_fence_group")  # sent unprepared, as is _DELETE_JOINED
_DELETE_JOINED = prepared.Statement("job_delete_group")
_TRANSACTION_STATUS = prepared.Statement("transaction_status")
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FATAL = pq.ExecStatus.FATAL_ERROR  # commands after it in its segment come back PIPELINE_ABORTED

# libpq before 14 has no pipeline mode: each command then goes on its own.
PIPELINE = psycopg.Pipeline.is_supported()

Command = Callable[[PGconn], None]


def _send(command: bytes) -> Command:
    return lambda pg: pg.send_query_params(command, None)


_SEND_BEGIN = _send(b"BEGIN")
_SEND_COMMIT = _send(b"COMMIT")
_SEND_ROLLBACK = _send(b"ROLLBACK")


@dataclass(frozen=True, slots=True)
class Fence:
    """The attempts a fence is for, as (job id, attempt) pairs, the bound on the
    transaction's statements, and how long the server lets it sit idle (its
    client gone silent). The fence of a transaction's first job deletes its row;
    jobs `joining` an open transaction (a group) have theirs locked, and deleted
    by the COMMIT once they have run."""

    jobs: tuple[tuple[int, int], ...]
    worker_id: int
    statement_timeout_ms: int
    idle_timeout_ms: int
    joining: bool = False

    def values(self) -> dict[str, object]:
        values: dict[str, object] = {
            "worker_id": self.worker_id,
            "statement_timeout": f"{self.statement_timeout_ms}ms",
            "idle_timeout": f"{self.idle_timeout_ms}ms",
        }
        if self.joining:
            values.update(job_ids=[job for job, _ in self.jobs], attempts=[att for _, att in self.jobs])
        else:
            ((values["job_id"], values["attempt"]),) = self.jobs
        return values


@dataclass(frozen=True, slots=True)
class Opened:
    """A transaction and the jobs fenced in it: `attempts` maps each to its
    attempt, `held` are those whose attempt is still this worker's, `joined` the
    held ones whose rows the COMMIT must delete; `xid` is the transaction's id and
    `backend_pid` the pid of the server session that holds it, as the fence saw it
    (behind PgBouncer the connection's own backend_pid is PgBouncer's cancel key,
    not that pid). `error` is set when the opening failed."""

    worker_id: int
    attempts: dict[int, int]
    held: frozenset[int]
    joined: frozenset[int] = frozenset()
    xid: str | None = None
    backend_pid: int | None = None
    error: psycopg.Error | None = None

    def fences(self, job_id: int, attempt: int) -> bool:
        return self.attempts.get(job_id) == attempt


def open_next(
    conn: psycopg.Connection[Any],
    fence: Fence | None,
    *,
    commit: Opened | None = None,
    ran: tuple[int, ...] = (),
) -> tuple[psycopg.Error | None, Opened | None]:
    """Commit the connection's open transaction `commit` (deleting first the rows
    of `ran`, the jobs that joined it and have run), then begin the transaction of
    `fence`'s job and run its fence, all in one round trip. Returns the COMMIT's
    error (None: committed, or nothing to commit) and the new transaction (None
    without `fence`)."""
    segments: list[list[Command]] = []
    if commit is not None:
        if ran:
            # A segment of its own: if it fails, the COMMIT after it ends the
            # aborted transaction (as a ROLLBACK) and the next opening still runs.
            segments.append([_delete_command(conn, commit.worker_id, ran)])
        segments.append([_SEND_COMMIT])
    if fence is not None:
        segments.append([_SEND_BEGIN, *_fence_commands(conn, fence)])
    results = _exchange(conn, segments)
    commit_error = None
    if commit is not None:
        ending = [result for segment in results[: len(segments) - (fence is not None)] for result in segment]
        commit_error = _error_in(conn, ending)
        if commit_error is None and ending[-1].command_status != b"COMMIT":
            # The transaction was aborted: PostgreSQL answers its COMMIT with ROLLBACK.
            commit_error = errors.InFailedSqlTransaction("the transaction was aborted: COMMIT rolled it back")
    if fence is None:
        return commit_error, None
    return commit_error, _opened(conn, fence, results[-1], again=True)


def join(conn: psycopg.Connection[Any], opened: Opened, fence: Fence) -> Opened:
    """Fence `fence`'s jobs into the open transaction `opened`, in one round trip:
    the transaction with them, or with `error` set (the transaction is then aborted)."""
    (results,) = _exchange(conn, [[_unprepared(conn, _JOIN, fence.values())]])
    error = _error_in(conn, results)
    if error is not None:
        return dataclasses.replace(opened, error=error)
    held = _held(results[-1])
    return dataclasses.replace(
        opened,
        attempts={**opened.attempts, **dict(fence.jobs)},
        held=opened.held | held,
        joined=opened.joined | held,
    )


def committed_by_handler(conn: psycopg.Connection[Any], opened: Opened) -> bool:
    """A handler ended the transaction with its own statement: True when that
    statement was a COMMIT."""
    if opened.xid is None:
        return False
    return _TRANSACTION_STATUS.execute(conn, {"xid": opened.xid}).get_value(0, 0) == b"committed"


def delete_joined(conn: psycopg.Connection[Any], opened: Opened, ran: tuple[int, ...]) -> None:
    """Delete the rows of jobs that joined a transaction a handler's own COMMIT
    statement committed (their writes are in: they are done)."""
    (results,) = _exchange(conn, [[_delete_command(conn, opened.worker_id, ran)]])
    error = _error_in(conn, results)
    if error is not None:
        raise error


def _opened(conn: psycopg.Connection[Any], fence: Fence, results: list[PGresult], *, again: bool) -> Opened:
    prepare = results[1:2]
    if prepare and prepare[0].status == pq.ExecStatus.COMMAND_OK and prepare[0].command_status == b"":
        _FENCE.prepared(conn)  # only a PREPARE reports no command; it went through
    error = _error_in(conn, results)
    attempts = dict(fence.jobs)
    if error is None:
        rows = results[-1]
        xid = rows.get_value(0, 1) if rows.ntuples else None
        pid = rows.get_value(0, 2) if rows.ntuples else None
        return Opened(
            fence.worker_id,
            attempts,
            _held(rows),
            xid=xid.decode() if xid else None,
            backend_pid=int(pid) if pid else None,
        )
    if again and error.sqlstate == prepared.UNDEFINED_STATEMENT and _FENCE.is_prepared_on(conn):
        # A handler's DEALLOCATE ALL unprepared it: prepared again, in a new transaction.
        _FENCE.unprepared(conn)
        _exchange(conn, [[_SEND_ROLLBACK]])
        return _opened(
            conn, fence, _exchange(conn, [[_SEND_BEGIN, *_fence_commands(conn, fence)]])[0], again=False
        )
    return Opened(fence.worker_id, attempts, frozenset(), error=error)


def _fence_commands(conn: psycopg.Connection[Any], fence: Fence) -> list[Command]:
    """The first job's fence, prepared (on this connection, at its first use)."""
    params = _FENCE.params(conn, fence.values())
    commands: list[Command] = []
    if not _FENCE.is_prepared_on(conn):
        commands.append(lambda pg: pg.send_prepare(_FENCE.name, _FENCE.sql))
    commands.append(lambda pg: pg.send_query_prepared(_FENCE.name, params))
    return commands


def _unprepared(
    conn: psycopg.Connection[Any], statement: prepared.Statement, values: dict[str, object]
) -> Command:
    params = statement.params(conn, values)
    return lambda pg: pg.send_query_params(statement.sql, params)


def _delete_command(conn: psycopg.Connection[Any], worker_id: int, ran: tuple[int, ...]) -> Command:
    return _unprepared(conn, _DELETE_JOINED, {"job_ids": list(ran), "worker_id": worker_id})


def _held(rows: PGresult) -> frozenset[int]:
    """The job ids a fence returned: those whose attempt is still this worker's."""
    return frozenset(int(rows.get_value(row, 0) or b"0") for row in range(rows.ntuples))


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
