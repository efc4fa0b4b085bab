"""Executors: the threads that run claimed jobs, one job at a time each.

An executor also offers what the timeout watch (timeouts.py) needs to stop a job
that overran: interrupt() raises JobTimeout inside the job and cancels its query;
abandon() gives the thread up.

Consecutive transactional jobs form a chain on one connection: when a job's
handler has returned and the next job waiting in the inbox is transactional
too, the executor takes it at once and sends the COMMIT of the first with the
BEGIN and fence of the second (transaction.py). The chain's connection goes
back to the pool as soon as no transactional job follows.

With WorkerOptions.transaction_group above 1, a transaction may hold a group:
when its job has run, the jobs waiting right behind it in the inbox (fenced
together by one statement) join the transaction, run one after the other, and
share one COMMIT. A job's completion is reported once its group has committed.
A job that fails rolls the group back: the jobs of the group that ran before it
run again, each in a transaction of its own, and so does each job of a group
whose COMMIT fails.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from soleil.runner import db, transaction
from soleil.runner.claim import ClaimedJob
from soleil.runner.errors import JobTimeout, LeaseLost, WorkerLost
from soleil.runner.job import Job, load_payload
from soleil.runner.options import INT4_MAX
from soleil.runner.outcome import handle_failure

if TYPE_CHECKING:
    from soleil.runner.worker import Worker

log = structlog.get_logger("soleil.job")

# A chain goes back to the pool after this many jobs, so that the pool's checks
# and max_lifetime still apply to its connection under a steady backlog.
CHAIN_LIMIT = 1000
# How much longer than a transactional job's timeout and grace the server waits
# for its silent client before ending the transaction: the worker's own abandon
# (checked every tick, then a round trip) comes first.
IDLE_MARGIN_SECONDS = 2.0


class Executor:
    def __init__(self, worker: Worker, inbox: queue.SimpleQueue[ClaimedJob | None], number: int) -> None:
        self.worker = worker
        self.inbox = inbox
        self._lock = threading.Lock()
        self.current: ClaimedJob | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.timed_out = False
        self.abandoned = False
        self._in_handler = False
        # Whether the current job's handler was entered: a job given up before
        # that goes back with its try (timeouts.give_up_running).
        self.handler_entered = False
        self._connection: psycopg.Connection[Any] | None = None
        # The connection interrupt() sent a query cancel for; _end_chain closes it.
        self._cancelled: psycopg.Connection[Any] | None = None
        # Items taken from the inbox ahead of their turn (the rest of a group, or
        # what stopped it), and the chain: its connection, with the transaction
        # of the next jobs opened.
        self._taken: collections.deque[ClaimedJob | None] = collections.deque()
        self._chain: psycopg.Connection[Any] | None = None
        self._opened: transaction.Opened | None = None
        self._chained = 0  # jobs chained on the connection since it left the pool
        # The transaction group's jobs whose handlers returned, their writes
        # waiting for the chain's COMMIT (with their durations in ms).
        self._group: list[tuple[ClaimedJob, float]] = []
        self._group_since = 0.0  # when its first job returned
        self.thread = threading.Thread(target=self._loop, name=f"soleil-executor-{number}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the executor thread --------------------------------------------------

    def _loop(self) -> None:
        while True:
            claimed = self._taken.popleft() if self._taken else self.inbox.get()
            if claimed is None:
                self._end_chain()
                return
            if self.worker.stopping:
                self._end_chain()
                self.worker.hand_back(claimed)
                continue
            self._run(claimed)
            if self.abandoned:
                # A replacement has taken this executor's slot; it runs what this one took.
                self._end_chain()
                for item in self._taken:
                    self.inbox.put(item)
                self.worker.abandoned_thread_returned()
                return
            self.worker.job_finished()

    def _run(self, claimed: ClaimedJob) -> None:
        worker = self.worker
        timeout = worker.timeout_for(claimed.name)
        with self._lock:
            self.current, self.timed_out, self.handler_entered = claimed, False, False
            self.started = time.monotonic()
            self.deadline = self.started + timeout
        fields = claimed.log_fields()
        log.info("job.started", max_attempts=claimed.max_attempts, **fields)
        instance: Job | None = None
        error: BaseException | None = None
        transactional = False
        try:
            try:
                cls = worker.registry.lookup(claimed.name)
                transactional = cls.transactional
                claimed.solo = claimed.solo or not cls.share_transaction
                # Loaded first so the failed() hook of a job lost with its worker runs too.
                instance = load_payload(cls, claimed.payload)
                if claimed.attempt > claimed.max_attempts:
                    raise WorkerLost(
                        f"the worker running attempt {claimed.attempt - 1} of {claimed.max_attempts} "
                        "stopped heartbeating and no tries are left"
                    )
                if transactional:
                    self._run_transactional(instance, claimed, timeout)
                else:
                    self._set_in_handler(True)
                    instance.handle(worker.context(claimed))
            finally:
                self._set_in_handler(False)
        except BaseException as exc:  # the job's own failure, whatever it raised
            error = exc
            # Its group's transaction would hold the row the outcome writes.
            self._end_chain(failed=claimed)
        duration_ms = (time.monotonic() - self.started) * 1000.0
        if not self._finish():
            return  # abandoned after its timeout: the worker has recorded the outcome
        if error is None:
            if not transactional:  # a transactional job is reported when its group commits
                worker.completer.completed(claimed, duration_ms, delete=True)
                log.info("job.completed", duration_ms=round(duration_ms, 3), **fields)
        elif isinstance(error, LeaseLost):
            log.warning("job.lease_lost", **fields)
        else:
            if self.timed_out and not isinstance(error, JobTimeout):
                error = JobTimeout(f"attempt exceeded the job's timeout of {timeout:g} s ({error!r})")
            try:
                handle_failure(worker, claimed, instance, error, duration_ms)
            except Exception as exc:
                log.exception("job.outcome_error", error=str(exc), **fields)

    def _run_transactional(self, instance: Job, claimed: ClaimedJob, timeout: float) -> None:
        worker = self.worker
        conn = self._open(claimed, timeout)
        with self._lock:
            self._connection = conn
        db.guard_transaction(conn, True)
        try:
            self._set_in_handler(True)
            instance.handle(worker.context(claimed, connection=conn))
            self._set_in_handler(False)
        finally:
            db.guard_transaction(conn, False)
            with self._lock:
                self._connection = None
        status = conn.pgconn.transaction_status  # conn.info's costs an object and an enum per job
        if status == psycopg.pq.TransactionStatus.INERROR:
            # handle() caught a database error: committing would roll back
            # silently, job row included, and the job would look completed.
            raise RuntimeError(
                "the job's transaction was aborted by a database error that handle() caught;"
                " nothing it wrote was committed"
            )
        if status == psycopg.pq.TransactionStatus.IDLE:
            # Past the guard (an explicit "COMMIT" statement): what it committed stays.
            self._ended_by_handler(conn, claimed)
            raise RuntimeError(
                "handle() ended the job's own transaction; use ctx.connection.transaction()"
                " for a savepoint and leave the commit to Soleil"
            )
        with self._lock:
            if self.abandoned:
                # The worker has recorded this attempt and terminates the backend.
                raise LeaseLost()
            if not self._group:
                self._group_since = time.monotonic()
            self._group.append((claimed, (time.monotonic() - self.started) * 1000.0))
        self._commit(conn)  # on a lost connection, this raises

    def _open(self, claimed: ClaimedJob, timeout: float) -> psycopg.Connection[Any]:
        """The connection with this job's transaction begun and fenced: the chain's,
        if the job joined its group or the job before opened it, else a pooled
        one. Raises LeaseLost."""
        opened = self._opened
        if opened is None or self._chain is None or not opened.fences(claimed.id, claimed.attempt):
            self._end_chain()
            conn = self.worker.pool.getconn()
            with self._lock:  # abandon() reads the chain to terminate its backend
                abandoned = self.abandoned
                if not abandoned:
                    self._chain = conn
            if abandoned:
                # Given up while waiting for the pool (a hard stop): nothing would
                # terminate this backend, and its fence would lock the job's row.
                self.worker.pool.putconn(conn)
                raise LeaseLost()
            self._opened = opened = transaction.open_next(conn, self._fence([claimed], timeout))[1]
            assert opened is not None
        if opened.error is not None:
            self._opened = None
            raise opened.error
        if claimed.id not in opened.held:
            raise LeaseLost()
        assert self._chain is not None
        return self._chain

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        """Go on with the group (the next job already joined it, or the jobs
        waiting join it now); or commit it, with the opening of the next job's
        transaction in the same round trip when that one is transactional and
        already waiting."""
        if self._group_goes_on(conn):
            return
        opened = self._opened
        assert opened is not None
        if opened.error is not None:
            # The jobs joining could not be fenced, and the transaction is aborted:
            # the jobs that ran in it run again, alone.
            self._settle(committed=False, reason=f"the jobs joining failed: {opened.error}")
            self._end_chain()
            return
        fence = None
        following = self._following()
        if following is not None:
            fence = self._fence([following], self.worker.timeout_for(following.name))
            self._chained += 1
        with self._lock:
            if self.abandoned:
                # abandon() took the group and has the backend terminated: a COMMIT
                # racing it must not commit joined jobs' writes without their deletion.
                raise LeaseLost()
            ran = self._joined_that_ran(opened)
            # From here the transaction ends, and behind PgBouncer (transaction
            # mode) the next one may run on another server session: abandon() must
            # not terminate this one's, which may be serving another client by then.
            self._opened = dataclasses.replace(opened, backend_pid=None)
        error: psycopg.Error | None
        try:
            # An error of the next job's opening is in self._opened: _open raises it.
            error, self._opened = transaction.open_next(conn, fence, commit=opened, ran=ran)
        except psycopg.Error as exc:  # the connection is lost, and the group's writes with it
            error, self._opened = exc, None
        if error is not None and len(self._group) == 1:
            self._take_group()
            raise error  # the job fails as it would alone; the next one opens anew
        self._settle(committed=error is None, reason="commit failed")
        if fence is None:
            self._end_chain()

    def _group_goes_on(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the next job runs in the open transaction: it has joined it
        already, or joins it now with the others waiting behind it."""
        options, group, opened = self.worker.options, self._group, self._opened
        assert opened is not None
        if (
            len(group) >= options.transaction_group
            or group[0][0].solo
            or time.monotonic() - self._group_since >= options.completion_interval
            or self.worker.stopping
            or self.abandoned
            or self.timed_out
        ):
            return False
        following = self._taken[0] if self._taken else None
        if following is not None and opened.fences(following.id, following.attempt):
            return following.id in opened.held  # not held: its lease is lost, it runs alone
        # All that may join at once, in one round trip: taking fewer (a share of
        # the jobs waiting) made groups small when the inbox ran low before a claim,
        # and cost 20% of the throughput.
        timeout = self.worker.timeout_for(group[0][0].name)
        joining = self._joining(options.transaction_group - len(group), timeout)
        if not joining:
            return False
        try:
            self._opened = opened = transaction.join(
                conn, opened, self._fence(joining, timeout, joining=True)
            )
        except psycopg.Error as exc:  # the connection is lost
            self._opened = opened = dataclasses.replace(opened, error=exc)
        if opened.error is not None:
            # The transaction is aborted: its COMMIT fails, and the group runs again.
            return False
        return joining[0].id in opened.held

    def _joining(self, limit: int, timeout: float) -> list[ClaimedJob]:
        """Up to `limit` jobs that may join the group: the next in self._taken,
        then from the inbox (kept in self._taken), while they are transactional,
        share transactions and have the group's timeout."""
        joining: list[ClaimedJob] = []
        while len(joining) < limit and self._peek(len(joining)):
            item = self._taken[len(joining)]
            if not self._chainable(item) or item is None or item.solo:
                break
            if self.worker.timeout_for(item.name) != timeout:
                break  # the fence sets one statement_timeout for the transaction
            joining.append(item)
        return joining

    def _following(self) -> ClaimedJob | None:
        """The next job, if its transaction may open in the COMMIT's round trip."""
        if self.worker.stopping or self.abandoned or self.timed_out or self._chained >= CHAIN_LIMIT:
            # A timed-out job's late cancel must not land on the next job's opening.
            return None
        if not self._peek(0):
            return None
        following = self._taken[0]
        return following if self._chainable(following) else None

    def _peek(self, index: int) -> bool:
        """Whether self._taken has an item at `index`, taking what is missing from
        the inbox without waiting."""
        while len(self._taken) <= index:
            try:
                self._taken.append(self.inbox.get_nowait())
            except queue.Empty:
                return False
        return True

    def _chainable(self, item: ClaimedJob | None) -> bool:
        if item is None or item.attempt > item.max_attempts:
            return False
        cls = self.worker.job_class_or_none(item.name)
        if cls is None or not cls.transactional:
            return False
        item.solo = item.solo or not cls.share_transaction
        return True

    def _ended_by_handler(self, conn: psycopg.Connection[Any], claimed: ClaimedJob) -> None:
        """The handler's own COMMIT or ROLLBACK statement ended the transaction.
        After a COMMIT, the jobs of its group that ran before it are done (and so
        is it, as it would be alone: its writes and its deletion are in)."""
        opened, self._opened = self._opened, None
        if opened is None or not self._group:
            return
        if transaction.committed_by_handler(conn, opened):
            ran = self._joined_that_ran(opened, claimed)
            self._settle(committed=True, reason="")
            transaction.delete_joined(conn, opened, ran)

    def _joined_that_ran(self, opened: transaction.Opened, *also: ClaimedJob) -> tuple[int, ...]:
        """The jobs of the group (and `also`) that joined its transaction: the rows
        its COMMIT deletes (the first job's row went with its fence)."""
        ran = [claimed for claimed, _ in self._group] + list(also)
        return tuple(claimed.id for claimed in ran if claimed.id in opened.joined)

    def _take_group(self) -> list[tuple[ClaimedJob, float]]:
        """The group, unless abandon() has taken it (it requeues those jobs)."""
        with self._lock:
            group, self._group = self._group, []
            return [] if self.abandoned else group

    def _settle(self, *, committed: bool, reason: str) -> None:
        """The group's transaction is over: report its jobs completed, or run each
        of them again alone when it rolled back (their writes with it)."""
        group = self._take_group()
        if committed:
            for claimed, duration_ms in group:
                self.worker.completer.completed(claimed, duration_ms, delete=False)
                log.info("job.completed", duration_ms=round(duration_ms, 3), **claimed.log_fields())
        elif group:
            log.warning("job.group_rolled_back", jobs=[claimed.id for claimed, _ in group], reason=reason)
            self.worker.requeue([claimed for claimed, _ in group])

    def _fence(self, jobs: list[ClaimedJob], timeout: float, *, joining: bool = False) -> transaction.Fence:
        # The server ends the transaction of a client silent for longer than the
        # worker itself would wait (timeout, then grace, then abandon) plus a margin.
        idle = timeout + self.worker.options.timeout_grace + IDLE_MARGIN_SECONDS
        return transaction.Fence(
            tuple((claimed.id, claimed.attempt) for claimed in jobs),
            self.worker.id,
            _milliseconds(timeout),
            _milliseconds(idle),
            joining=joining,
        )

    def _end_chain(self, failed: ClaimedJob | None = None) -> None:
        """End the chain's transaction and give its connection back to the pool:
        commit the jobs of the group that ran, or, when `failed` raised, roll
        them back (they run again, alone). A connection whose backend is being
        terminated, or whose query was cancelled, is closed instead."""
        with self._lock:
            conn, self._chain = self._chain, None
            abandoned = self.abandoned
            cancelled = conn is not None and self._cancelled is conn
            self._cancelled = None
        opened, self._opened, self._chained = self._opened, None, 0
        if conn is None:
            return
        if abandoned:
            # abandon() has this connection's backend terminated, perhaps not yet:
            # back in the pool, another job's transaction would be the one killed.
            conn.close()
            self.worker.pool.putconn(conn)
            return
        if self._group:
            committed = False
            if failed is None and opened is not None:
                ran = self._joined_that_ran(opened)
                with contextlib.suppress(psycopg.Error):
                    committed = transaction.open_next(conn, None, commit=opened, ran=ran)[0] is None
            self._settle(
                committed=committed, reason="commit failed" if failed is None else f"job {failed.id} failed"
            )
        if cancelled:
            # interrupt() sent a cancel request for the timed-out job's query. The
            # request travels on a connection of its own and may reach the server
            # only now: back in the pool, this connection's next statement, another
            # job's, would be the one cancelled. Closing it ends its transaction too.
            conn.close()
        elif not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            # psycopg's rollback(): it also forgets statements it prepared meanwhile.
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        self.worker.pool.putconn(conn)

    def _set_in_handler(self, value: bool) -> None:
        """Raises LeaseLost instead of entering a handler once abandoned: the job
        may be back in its queue already (a hard stop gives up on jobs that have
        not reached their handler yet)."""
        with self._lock:
            if value:
                if self.abandoned:
                    raise LeaseLost()
                self.handler_entered = True
            self._in_handler = value
            if not value and self.timed_out:
                # Only interrupt() raises into this thread, after setting timed_out;
                # the ctypes call is skipped on every other job's way out.
                _clear_async_exception(self.thread)

    def _finish(self) -> bool:
        """False when the worker abandoned this attempt meanwhile."""
        with self._lock:
            self.current = None
            return not self.abandoned

    # -- called by the worker's main loop ------------------------------------

    def overdue(self, now: float) -> ClaimedJob | None:
        """The job running past its deadline, if any. Read without the lock: a hint
        only, which interrupt() and abandon() check again under it."""
        claimed = self.current
        return claimed if claimed is not None and now >= self.deadline else None

    def interrupt(self, claimed: ClaimedJob) -> bool:
        """`claimed`'s deadline passed: raise JobTimeout in the job and cancel its
        query. False, doing nothing, when the executor has moved on: the job seen
        overdue may have returned meanwhile, and the next one must not get its
        timeout."""
        with self._lock:
            if self.current is not claimed or self.timed_out or time.monotonic() < self.deadline:
                return False
            self.timed_out = True
            # Under the lock, so that it comes before the attempt's outcome in the log.
            log.warning("job.timeout", **claimed.log_fields())
            if self._in_handler:
                _raise_in_thread(self.thread, JobTimeout)
            conn = self._cancelled = self._connection
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)
        return True

    def abandon(
        self, claimed: ClaimedJob | None = None, grace: float = 0.0
    ) -> tuple[ClaimedJob, int | None, list[ClaimedJob], list[ClaimedJob | None]] | None:
        """Give up on a job that ignored its timeout: `claimed`, interrupted and
        still running `grace` seconds past its deadline; or, without `claimed` (a
        hard stop), whatever runs. Returns the job, for a transactional one the
        backend to terminate, the jobs grouped before it (terminating the backend
        rolls them back), and what this executor had taken from the inbox but not
        started (the jobs that joined its group among them: for the other
        executors, once the backend is gone); None if it finished meanwhile."""
        with self._lock:
            if self.current is None:
                return None
            if claimed is not None and (
                self.current is not claimed or not self.timed_out or time.monotonic() < self.deadline + grace
            ):
                return None  # it returned, and the executor runs another job (or the same one again)
            self.abandoned = True
            # The chain's connection holds the job's transaction and its group's,
            # also between the handler's return and the group's COMMIT; _end_chain
            # closes it rather than pooling it once this is set.
            conn = self._chain
            pid = None
            if conn is not None and not conn.closed:
                # The server session's pid, as the transaction's fence saw it: behind
                # PgBouncer the connection's backend_pid is PgBouncer's cancel key,
                # which no session has. Without a fence result yet (the opening is
                # on its way), the connection's: that of a direct connection.
                fenced = self._opened.backend_pid if self._opened is not None else None
                pid = fenced if fenced is not None else conn.info.backend_pid
            current = self.current
            grouped = [claimed for claimed, _ in self._group if claimed is not current]
            self._group = []
            unstarted = list(self._taken)
            self._taken.clear()
            return current, pid, grouped, unstarted


def _milliseconds(seconds: float) -> int:
    """A timeout as PostgreSQL's integer milliseconds: a job's timeout has no upper
    bound, and past about 24.8 days set_config would refuse it, failing every fence."""
    milliseconds = seconds * 1000
    return int(milliseconds) if milliseconds < INT4_MAX else INT4_MAX  # inf included


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _clear_async_exception(thread: threading.Thread) -> None:
    if thread.ident is not None and thread is threading.current_thread():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
