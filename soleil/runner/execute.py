"""Executors: the threads that run claimed jobs, one job at a time each.

An executor also offers what the timeout watch (timeouts.py) needs to stop a job
that overran: interrupt() raises JobTimeout inside the job and cancels its query;
abandon() gives the thread up.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from soleil.runner import queries
from soleil.runner.claim import ClaimedJob
from soleil.runner.errors import JobTimeout, LeaseLost, WorkerLost
from soleil.runner.job import Job, load_payload
from soleil.runner.outcome import handle_failure

if TYPE_CHECKING:
    from soleil.runner.worker import Worker

log = structlog.get_logger("soleil.job")


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
        self._connection: psycopg.Connection[Any] | None = None
        self.thread = threading.Thread(target=self._loop, name=f"soleil-executor-{number}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the executor thread --------------------------------------------------

    def _loop(self) -> None:
        while True:
            claimed = self.inbox.get()
            if claimed is None:
                return
            if self.worker.stopping:
                self.worker.hand_back(claimed)
                continue
            self._run(claimed)
            if self.abandoned:
                return  # a replacement has taken this executor's slot
            self.worker.job_finished()

    def _run(self, claimed: ClaimedJob) -> None:
        worker = self.worker
        timeout = worker.timeout_for(claimed.name)
        with self._lock:
            self.current, self.timed_out = claimed, False
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
        duration_ms = (time.monotonic() - self.started) * 1000.0
        if not self._finish():
            return  # abandoned after its timeout: the worker has recorded the outcome
        if error is None:
            worker.completer.completed(claimed, duration_ms, delete=not transactional)
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
        with worker.pool.connection() as conn, conn.transaction():
            fence = conn.execute(
                queries.get("job_delete_reserved"),
                {
                    "id": claimed.id,
                    "worker_id": worker.id,
                    "attempts": claimed.attempt,
                    "statement_timeout": f"{int(timeout * 1000)}ms",
                },
            ).fetchone()
            if fence is None:
                raise LeaseLost()
            with self._lock:
                self._connection = conn
            try:
                self._set_in_handler(True)
                instance.handle(worker.context(claimed, connection=conn))
                self._set_in_handler(False)
            finally:
                with self._lock:
                    self._connection = None
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                # handle() caught a database error: leaving the block would roll back
                # silently, job row included, and the job would look completed.
                raise RuntimeError(
                    "the job's transaction was aborted by a database error that handle() caught;"
                    " nothing it wrote was committed"
                )

    def _set_in_handler(self, value: bool) -> None:
        with self._lock:
            self._in_handler = value
            if not value:
                _clear_async_exception(self.thread)

    def _finish(self) -> bool:
        """False when the worker abandoned this attempt meanwhile."""
        with self._lock:
            self.current = None
            return not self.abandoned

    # -- called by the worker's main loop ------------------------------------

    def overdue(self, now: float) -> bool:
        return self.current is not None and now >= self.deadline

    def interrupt(self) -> None:
        """The deadline passed: raise JobTimeout in the job and cancel its query."""
        with self._lock:
            if self.current is None or self.timed_out:
                return
            self.timed_out = True
            if self._in_handler:
                _raise_in_thread(self.thread, JobTimeout)
            conn = self._connection
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=2.0)

    def abandon(self) -> tuple[ClaimedJob, int | None] | None:
        """Give up on a job that ignored its timeout. Returns the job and, for a
        transactional one, the backend to terminate; None if it finished meanwhile."""
        with self._lock:
            if self.current is None:
                return None
            self.abandoned = True
            conn = self._connection
            pid = conn.info.backend_pid if conn is not None else None
            return self.current, pid


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _clear_async_exception(thread: threading.Thread) -> None:
    if thread.ident is not None and thread is threading.current_thread():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)
