"""The transaction of a transactional job, in as few round trips as libpq allows.

Such a job commits its handler's writes together with its own deletion. Sent
one statement at a time that is four round trips: BEGIN, the fence (delete the
job's row while this worker still holds the attempt), the handler's statements,
COMMIT. Here BEGIN and the fence travel together in one libpq pipeline, and
when the executor's next job is transactional too, the same pipeline carries
the COMMIT of the job before it: two round trips per job plus the handler's own.
The COMMIT and the next job's opening are separate pipeline segments (a Sync
after each), so a COMMIT that fails does not abort the next job's BEGIN.

A transaction group (WorkerOptions.transaction_group) fences several jobs at
once: the group's fence locks their rows, its handlers then run one after the
other with no round trip of Soleil's between them, and the rows of those that
ran are deleted in the round trip of the group's COMMIT. A group is one
transaction, without savepoints: a job that fails rolls the group back.

psycopg's own pipeline mode flushes and polls after every statement; libpq's
is used directly so that a segment costs one send and one wait. The fences are
server-side prepared statements with their parameters sent apart from the SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
_FENCE_GROUP = prepared.Statement("job_fence_group")
_DELETE_GROUP = prepared.Statement("job_delete_group")
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
    """Which attempts the transaction belongs to (one job's, or a group's: `jobs`
    holds (job id, attempt) pairs), and the bound on its statements."""

    jobs: tuple[tuple[int, int], ...]
    worker_id: int
    statement_timeout_ms: int
    attempts: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attempts", dict(self.jobs))

    @property
    def grouped(self) -> bool:
        return len(self.jobs) > 1

    def command(self, conn: psycopg.Connection[Any]) -> list[Command]:
        timeout = f"{self.statement_timeout_ms}ms"
        if not self.grouped:
            ((job_id, attempt),) = self.jobs
            values: dict[str, object] = {"job_id": job_id, "attempt": attempt}
        else:
            values = {"job_ids": [job for job, _ in self.jobs], "attempts": [att for _, att in self.jobs]}
        values.update(worker_id=self.worker_id, statement_timeout=timeout)
        return _prepared(conn, _FENCE_GROUP if self.grouped else _FENCE, values)


@dataclass(frozen=True, slots=True)
class Opened:
    """A transaction after its BEGIN and fence: `held` are the fenced jobs this
    worker still holds (the others' attempts are no longer its own); `error` is
    set when the commands failed. A group's fence only locked its rows, which
    its COMMIT deletes; `xid` is then its transaction id."""

    fence: Fence
    held: frozenset[int]
    error: psycopg.Error | None = None
    xid: str | None = None


def open_next(
    conn: psycopg.Connection[Any],
    fence: Fence | None,
    *,
    commit: Opened | None = None,
    ran: tuple[int, ...] = (),
) -> tuple[psycopg.Error | None, Opened | None]:
    """Commit the connection's open transaction `commit` (in a group, deleting the
    rows of `ran`, its jobs that have run), then begin the transaction of `fence`
    and run the fence, all in one round trip. Returns the COMMIT's error (None:
    committed, or nothing to commit) and the new transaction (None without `fence`)."""
    segments: list[list[Command]] = []
    if commit is not None:
        if commit.fence.grouped and ran:
            # A segment of its own: if it fails, the COMMIT after it ends the
            # aborted transaction (as a ROLLBACK) and the next opening still runs.
            values = {"job_ids": list(ran), "worker_id": commit.fence.worker_id}
            segments.append(_prepared(conn, _DELETE_GROUP, values))
        segments.append([_SEND_COMMIT])
    if fence is not None:
        segments.append([_SEND_BEGIN, *fence.command(conn)])
    results = _exchange(conn, segments)
    commit_error = None
    if commit is not None:
        ending = [result for segment in results[: len(segments) - (fence is not None)] for result in segment]
        _note_prepared(conn, _DELETE_GROUP, ending)
        commit_error = _error_in(conn, ending)
        if commit_error is not None and commit_error.sqlstate == prepared.UNDEFINED_STATEMENT:
            _DELETE_GROUP.unprepared(conn)  # by a handler's DEALLOCATE ALL: prepared again next time
    if fence is None:
        return commit_error, None
    return commit_error, _opened(conn, fence, results[-1], again=True)


def committed_by_handler(conn: psycopg.Connection[Any], opened: Opened, ran: tuple[int, ...]) -> bool:
    """A handler ended its group's transaction with its own statement. True when
    that statement was a COMMIT: the rows of `ran`, whose writes it committed
    but which the fence only locked, are deleted then (their jobs are done)."""
    if opened.xid is None:
        return False
    status = _TRANSACTION_STATUS.execute(conn, {"xid": opened.xid}).get_value(0, 0)
    if status != b"committed":
        return False
    values = {"job_ids": list(ran), "worker_id": opened.fence.worker_id}
    (results,) = _exchange(conn, [_prepared(conn, _DELETE_GROUP, values)])
    _note_prepared(conn, _DELETE_GROUP, results)
    error = _error_in(conn, results)
    if error is not None:
        raise error
    return True


def _opened(conn: psycopg.Connection[Any], fence: Fence, results: list[PGresult], *, again: bool) -> Opened:
    statement = _FENCE_GROUP if fence.grouped else _FENCE
    _note_prepared(conn, statement, results[1:])
    error = _error_in(conn, results)
    if error is None:
        rows = results[-1]
        held = frozenset(int(rows.get_value(row, 0) or b"0") for row in range(rows.ntuples))
        xid = rows.get_value(0, 1) if fence.grouped and rows.ntuples else None
        return Opened(fence, held, xid=xid.decode() if xid else None)
    if again and error.sqlstate == prepared.UNDEFINED_STATEMENT and statement.is_prepared_on(conn):
        # A handler's DEALLOCATE ALL unprepared it: prepared again, in a new transaction.
        statement.unprepared(conn)
        _exchange(conn, [[_SEND_ROLLBACK]])
        return _opened(conn, fence, _exchange(conn, [[_SEND_BEGIN, *fence.command(conn)]])[0], again=False)
    return Opened(fence, frozenset(), error=error)


def _prepared(
    conn: psycopg.Connection[Any], statement: prepared.Statement, values: dict[str, object]
) -> list[Command]:
    """The commands that run `statement`, preparing it first on this connection."""
    params = statement.params(conn, values)
    commands: list[Command] = []
    if not statement.is_prepared_on(conn):
        commands.append(lambda pg: pg.send_prepare(statement.name, statement.sql))
    commands.append(lambda pg: pg.send_query_prepared(statement.name, params))
    return commands


def _note_prepared(
    conn: psycopg.Connection[Any], statement: prepared.Statement, results: list[PGresult]
) -> None:
    """The statement's PREPARE, if sent, went through (even if what followed failed)."""
    first = results[0] if results else None
    if first is not None and first.status == pq.ExecStatus.COMMAND_OK and first.command_status == b"":
        statement.prepared(conn)  # only a PREPARE reports no command


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
