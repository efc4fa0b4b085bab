"""The worker: composes the services and runs wait -> claim -> execute.

Start: pool -> schema check -> registration and first rescue -> completer ->
executors -> listener -> READY. Stop, in reverse and in two phases: stop
claiming and let running jobs finish within the grace period; then give back
claimed-but-unstarted jobs, flush completions, unregister and close.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from soleil.runner import claim as claiming
from soleil.runner import control, db, lease, limits, timeouts
from soleil.runner.claim import ClaimedJob
from soleil.runner.complete import Completer
from soleil.runner.errors import ConfigurationError, DatabaseUnavailable
from soleil.runner.execute import Executor
from soleil.runner.job import REGISTRY, Job, JobContext, Registry
from soleil.runner.listener import Listener
from soleil.runner.migrate import check_schema
from soleil.runner.names import channel, parse_queue_list, validate_queue
from soleil.runner.options import WorkerOptions
from soleil.runner.sdnotify import Notifier
from soleil.runner.wakeup import Wakeup, notified_job

if TYPE_CHECKING:
    from soleil.runner.runner import Runner

log = structlog.get_logger("soleil.worker")

CONTROL_CHANNEL = "soleil:control"
HOUSEKEEPING_TICK_SECONDS = 0.5
# How long start-up waits for the LISTEN connection; then the worker polls, and
# tells systemd READY=1 only once the listener gets through.
LISTENER_READY_WAIT_SECONDS = 10.0
# How often the worker re-reads pause and restart from the database, in case its
# listener missed the NOTIFY: one small query, never on the per-job path.
CONTROL_READ_SECONDS = 1.0
STATUS_INTERVAL_SECONDS = 1.0  # how often systemd's STATUS= may change
# How long the main loop waits for a pooled connection: it also sends the
# watchdog pings, so it must never wait as long as WatchdogSec.
MAIN_LOOP_POOL_WAIT_SECONDS = 5.0
# How long a stopping worker waits for its idle executors to hand back what they took.
EXECUTORS_EXIT_SECONDS = 5.0
EXIT_OK = 0
EXIT_STUCK = 1
EXIT_MEMORY = limits.EXIT_MEMORY


class Worker:
    def __init__(
        self,
        runner: Runner,
        queues: str | list[str],
        options: WorkerOptions | None = None,
        *,
        registry: Registry = REGISTRY,
        notifier: Notifier | None = None,
    ) -> None:
        self.runner = runner
        self.queues = (
            parse_queue_list(queues) if isinstance(queues, str) else [validate_queue(q) for q in queues]
        )
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        self.options = (options or WorkerOptions()).validated()
        self.registry = registry
        self.notifier = notifier or Notifier(None)
        # The main loop never sleeps longer than half the watchdog interval, nor half
        # the heartbeat interval: a heartbeat sent late by a whole tick would let the
        # lease (two intervals) expire and other workers steal this worker's jobs.
        self._tick = min(
            HOUSEKEEPING_TICK_SECONDS,
            self.options.heartbeat_interval / 2,
            self.notifier.watchdog_interval or float("inf"),
        )
        self._announced_ready = False
        self._status = ""
        self._last_status = 0.0
        self.id = 0
        self.exit_code = EXIT_OK
        self.stop_reason = ""
        self.processed = 0
        self.hard_stopped = False
        self._stop = threading.Event()
        self._stop_now = threading.Event()  # stop without waiting for running jobs
        self.wakeup = Wakeup()
        self._ready = threading.Event()
        self._slots = threading.Condition()
        self._busy = 0
        self._claimed = 0
        # The main loop and the listener both claim; one at a time, so max_jobs holds.
        self._claim_lock = threading.Lock()
        self._claim_on_listener = True
        # Whether the last claim left nothing ready behind (it took fewer jobs than
        # it could): only then may a single notified job be claimed by its key,
        # since with nothing else ready no queue or priority order can pick another.
        self._drained = False
        # A claim whose connection broke may have committed without its reply
        # arriving: its jobs would stay reserved by this live worker, out of every
        # rescue's reach. They are given back at the first claim that finds the
        # worker holding nothing else (_release_lost_claim), or at its stop.
        self._claim_reply_lost = False
        self._handed_back: list[ClaimedJob] = []
        self._inbox: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self.executors: list[Executor] = []
        self._executor_numbers = 0
        self._abandoned = 0  # executor threads abandoned and not back yet
        self._paused: set[str] = set()
        self._restart_token: str | None = None  # the restart request in force when this worker started
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None
        self.pool: ConnectionPool = db.make_pool(
            runner.database_url, max_size=self.options.concurrency + 3, name="soleil-worker"
        )
        self.completer: Completer
        self.listener: Listener

    # -- public lifecycle ---------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str = "requested", exit_code: int | None = None) -> None:
        """Stop claiming; running jobs finish. Safe from signal handlers and other threads."""
        if not self._stop.is_set():
            self.stop_reason = reason
            if exit_code is not None:
                self.exit_code = exit_code
            self._stop.set()
        self.wakeup.ring()
        with self._slots:
            self._slots.notify_all()

    def stop_now(self, reason: str = "stop now") -> None:
        """Stop without waiting for running jobs (a second Ctrl-C): they go back to
        their queues with the attempt counted, and the worker exits 1. Signal-safe."""
        self._stop_now.set()
        self.request_stop(reason)  # wakes _wait_drained too

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        try:
            self._start_services()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            self._close_services()
            raise
        self._ready.set()
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def start(self, timeout: float = 30.0) -> Worker:
        """Run in a background thread (tests, benchmarks, embedding); returns when listening."""
        self._thread = threading.Thread(target=self._run_quietly, name="soleil-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise DatabaseUnavailable("the worker did not start in time")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def _run_quietly(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            if self._startup_error is None:
                log.exception("worker.crashed", error=str(exc))

    def stop(self, timeout: float | None = None) -> None:
        self.request_stop("stop() called")
        if self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- what executors and outcomes ask of the worker ---------------------------

    def job_class_or_none(self, name: str) -> type[Job] | None:
        try:
            return self.registry.lookup(name)
        except LookupError:
            return None

    def timeout_for(self, name: str) -> float:
        cls = self.job_class_or_none(name)
        return float(cls.timeout) if cls is not None and cls.timeout is not None else self.options.timeout

    def context(self, claimed: ClaimedJob, connection: psycopg.Connection[Any] | None = None) -> JobContext:
        return JobContext(
            job_id=claimed.id,
            queue=claimed.queue,
            name=claimed.name,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            runner=self.runner,
            connection=connection,
            # Bound on first use: most handlers never log, and binding costs more
            # than the rest of the context.
            log=structlog.get_logger("soleil.job", **claimed.log_fields()),
        )

    def job_finished(self) -> None:
        with self._slots:
            self._busy -= 1
            self.processed += 1
            # Only wake the main loop when it may claim (or is draining): with a
            # prefetch, most finishes leave jobs claimed ahead, and each needless
            # wake-up is two context switches and a trip through the GIL.
            if self._has_free_slot() or self._stop.is_set():
                self._slots.notify_all()

    def requeue(self, jobs: list[ClaimedJob]) -> None:
        """Jobs whose run was rolled back with their transaction group: they run
        again, each in a transaction of its own, in the attempt they hold."""
        with self._slots:
            self._busy += len(jobs)
            self.processed -= len(jobs)  # their runs did not count: each finishes again
        for claimed in jobs:
            claimed.solo = True
            self._inbox.put(claimed)

    def pass_on(self, items: list[ClaimedJob | None]) -> None:
        """What an abandoned executor had taken from the inbox but not started:
        back at the end of the inbox, for the other executors."""
        for item in items:
            self._inbox.put(item)

    def hand_back(self, claimed: ClaimedJob) -> None:
        """A claimed job an executor did not start because the worker is stopping."""
        with self._slots:
            self._handed_back.append(claimed)
            self._busy -= 1
            self._slots.notify_all()

    @property
    def running(self) -> int:
        with self._slots:
            return self._busy

    # -- start and stop -----------------------------------------------------------

    def _start_services(self) -> None:
        # One direct attempt first: a wrong or unreachable database fails at once
        # with libpq's reason, instead of after the pool's open timeout.
        db.connect(self.runner.database_url).close()
        try:
            self.pool.open(wait=True, timeout=10.0)
        except PoolTimeout:
            db.connect(self.runner.database_url).close()  # raises the real reason
            raise DatabaseUnavailable(
                f"cannot reach the database at {db.describe(self.runner.database_url)}"
            ) from None
        with self.pool.connection() as conn:
            check_schema(conn)
            self.id = lease.register(conn, self.queues, self.options.concurrency, self.options.lease_seconds)
            # No unbroken heartbeat behind this worker yet (it may start just as the
            # database comes back): this first rescue removes nobody, it only requeues
            # jobs whose worker row is gone already.
            lease.rescue(conn, healthy_seconds=0.0, own_lease=self.options.lease_seconds)
            state = control.read_state(conn, self.queues)
        self._paused = set(state.paused)
        self._restart_token = state.restart_token
        self._last_heartbeat = self._last_rescue = self._last_control = time.monotonic()
        # Since when this worker has heartbeated without a break (None: broken now),
        # and its last heartbeat that got through; see _unbroken_contact.
        self._contact_since: float | None = self._last_heartbeat
        self._last_beat_ok = self._last_heartbeat
        self._started_at = time.monotonic()
        self._last_watchdog = 0.0
        self._last_housekeeping = 0.0
        self._poll_at = 0.0
        self.completer = Completer(
            self.pool, self.id, interval=self.options.completion_interval, batch=self.options.completion_batch
        )
        self.completer.start()
        for _ in range(self.options.concurrency):
            self._add_executor()
        # Before the listener starts: it claims as soon as it listens.
        log.info(
            "worker.started",
            worker_id=self.id,
            queues=self.queues,
            concurrency=self.options.concurrency,
            database=db.describe(self.runner.database_url),
        )
        self.listener = Listener(
            self.options.listen_database_url or self.runner.database_url,
            [channel(q) for q in self.queues] + [CONTROL_CHANNEL],
            self._on_notifies,
            self._on_listening,
        )
        self.listener.start()
        listening = self.listener.ready.wait(LISTENER_READY_WAIT_SECONDS)
        if not self.registry.names():
            # A worker without job classes can only fail every job as unknown: say so first.
            log.warning("worker.no_job_classes", note="pass --app MODULE or set SOLEIL_APP")
        if listening:
            self._announce_ready()
        else:
            log.warning("listener.not_ready", note="polling every --sleep; READY=1 once it listens")

    def _announce_ready(self) -> None:
        """READY=1 only once the schema is checked and LISTEN is active, so a unit
        that systemd reports as started really wakes on new jobs."""
        self._announced_ready = True
        self._status = self._status_text()
        self.notifier.ready(self._status)

    def replace_executor(self, abandoned: Executor) -> None:
        """A fresh executor takes the place of one abandoned after its timeout. The
        job's slot is freed once its outcome is recorded (timeouts.abandon)."""
        with self._slots:
            self._abandoned += 1
            stuck = self._abandoned
        self.executors.remove(abandoned)
        self._add_executor()
        if stuck > self.options.concurrency:
            log.error("worker.too_many_stuck_jobs", stuck=stuck)
            self.request_stop("too many stuck jobs", EXIT_STUCK)

    def abandoned_thread_returned(self) -> None:
        """An abandoned executor's thread got out of its job at last: it no longer
        counts as stuck (only threads stuck now make the worker exit)."""
        with self._slots:
            self._abandoned -= 1

    def _add_executor(self) -> None:
        self._executor_numbers += 1
        executor = Executor(self, self._inbox, self._executor_numbers)
        self.executors.append(executor)
        executor.start()

    def _shutdown(self) -> None:
        self._status = f"draining: {self.running} running ({self.stop_reason})"
        self.notifier.stopping(self._status)
        log.info("worker.stopping", worker_id=self.id, reason=self.stop_reason, running=self.running)
        drained = self._wait_drained(self.options.stop_grace)
        unstarted: list[ClaimedJob] = []
        for _ in self.executors:
            self._inbox.put(None)
        if not drained:
            self.hard_stopped = True
            stuck = [e.current.id for e in self.executors if e.current is not None]
            log.error(
                "worker.stop_timeout",
                worker_id=self.id,
                grace_s=self.options.stop_grace,
                job_ids=stuck,
                forced=self._stop_now.is_set(),
            )
            if self.exit_code == EXIT_OK:
                self.exit_code = EXIT_STUCK
            unstarted = timeouts.give_up_running(self)
        with self._claim_lock:
            pass  # a claim of the listener's still on its way lands in the inbox first
        leftovers = unstarted + _drain(self._inbox)
        # An executor that took a job from the inbox just before the drain hands
        # it back on its way out: wait for those ways out, or that job would go
        # back through the unregister with a try used that it never started.
        deadline = time.monotonic() + EXECUTORS_EXIT_SECONDS
        for executor in self.executors:
            if not executor.abandoned:
                executor.thread.join(max(0.0, deadline - time.monotonic()))
        with self._slots:
            leftovers += self._handed_back
        try:
            with self.pool.connection(timeout=5.0) as conn:
                released = claiming.release(conn, leftovers, self.id)
                if released:
                    log.info("job.released", jobs=released)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            log.warning("worker.release_failed", error=str(exc).strip())
        if not self.completer.stop(timeout=10.0):
            log.error("completion.unflushed", jobs=self.completer.pending)
        try:
            with self.pool.connection(timeout=5.0) as conn:
                if self._claim_reply_lost and not self.hard_stopped:
                    # Drained and flushed: the worker holds nothing else now.
                    self._release_lost_claim(conn, 0)
                lease.unregister(conn, self.id)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            log.warning("worker.unregister_failed", error=str(exc).strip())
        self._close_services()
        log.info("worker.stopped", worker_id=self.id, processed=self.processed, exit_code=self.exit_code)

    def _wait_drained(self, grace: float) -> bool:
        """Wait for running jobs to finish, telling systemd how many are left. The
        jobs still run under this worker's lease and their timeouts: without the
        heartbeat, another worker would take them for a dead worker's and run them
        again while they finish here."""
        deadline = time.monotonic() + grace
        while True:
            with self._slots:
                if self._busy <= 0:
                    return True
                left = deadline - time.monotonic()
                if self._stop_now.is_set() or left <= 0:
                    return False
                self._slots.wait(min(left, self._tick))
                busy = self._busy
            self._drain_housekeeping(busy)

    def _drain_housekeeping(self, busy: int) -> None:
        """What the main loop's housekeeping still owes the jobs running during a
        drain: their timeouts and the lease (no claims, no rescue of others)."""
        now = time.monotonic()
        timeouts.check(self, now)
        if now - self._last_heartbeat >= self.options.heartbeat_interval:
            self._heartbeat()
        if self.notifier.enabled and now - self._last_status >= STATUS_INTERVAL_SECONDS:
            self._last_status = now
            self._send_status(f"draining: {busy} running ({self.stop_reason})")

    def _close_services(self) -> None:
        listener = getattr(self, "listener", None)
        if listener is not None:
            listener.stop()
        self.pool.close(timeout=5.0)
        self.notifier.close()

    # -- the main loop ------------------------------------------------------------

    def _loop(self) -> None:
        db_backoff = 0.1
        while not self._stop.is_set():
            self._housekeeping(work_waiting=self.wakeup.work_ready)
            free = self._acquire_slots(self._tick)
            if not free:
                continue
            try:
                jobs = self._claim(free)
                db_backoff = 0.1
            except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
                self._return_slots(free)
                self._contact_since = None  # as for a failed heartbeat (_unbroken_contact)
                log.warning(
                    "database.unavailable", during="claim", error=str(exc).strip(), retry_in=db_backoff
                )
                self._stop.wait(db_backoff)
                db_backoff = min(db_backoff * 2, 5.0)
                continue
            except BaseException as exc:
                # Nothing was claimed: the shutdown must not wait out its grace for these
                # slots. The error ends the worker (the caller prints it; systemd restarts).
                self._return_slots(free)
                self.request_stop(f"claim failed: {db.first_line(exc)}")
                raise
            self._return_slots(free - len(jobs))
            if len(jobs) == free:
                continue  # there may be more: claim again as soon as a slot frees
            if self.options.stop_when_empty and not jobs and self.running == 0:
                self.request_stop("queue empty")
                break
            self._wait_for_work()

    def _claimable_queues(self) -> list[str]:
        return [q for q in self.queues if q not in self._paused] if self._paused else self.queues

    def _claim(
        self,
        free: int,
        conn: psycopg.Connection[Any] | None = None,
        expected: int | None = None,
        job_id: int | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `free` jobs on `conn` (the listener's) or a pooled connection.
        When fewer than `expected` come back (default: `free`), look up when the next
        delayed job is due: a notified job a few ms from due may not be claimable
        yet, and only the look-up makes the worker wake for it before its poll."""
        with self._claim_lock:
            # Cleared before the paused set is read: a resume that lands meanwhile
            # sets it again, and the main loop looks once more.
            self.wakeup.work_ready = False
            taken = free  # the slots reserved for this claim
            queues = self._claimable_queues()
            if self.options.max_jobs is not None:
                free = min(free, self.options.max_jobs - self._claimed)
            if not queues or free <= 0 or self._stop.is_set():
                return []
            wanted = free if expected is None else min(expected, free)
            by_key = job_id if self._drained else None
            if conn is not None:
                jobs = self._claim_on(conn, queues, free, wanted, taken, by_key)
            else:
                with self.pool.connection(timeout=MAIN_LOOP_POOL_WAIT_SECONDS) as pooled:
                    jobs = self._claim_on(pooled, queues, free, wanted, taken)
            if by_key is None:
                # A notification that found no free executor meanwhile set work_ready.
                self._drained = len(jobs) < free and not self.wakeup.work_ready
            self._claimed += len(jobs)
            return jobs

    def _claim_on(
        self,
        conn: psycopg.Connection[Any],
        queues: list[str],
        free: int,
        wanted: int,
        taken: int,
        job_id: int | None = None,
    ) -> list[ClaimedJob]:
        if self._claim_reply_lost:
            self._release_lost_claim(conn, taken)
        try:
            if job_id is None:
                jobs = claiming.claim(
                    conn, queues=queues, limit=free, worker_id=self.id, default_tries=self.options.tries
                )
            else:
                jobs = claiming.claim_notified(
                    conn, job_id=job_id, queues=queues, worker_id=self.id, default_tries=self.options.tries
                )
        except (psycopg.OperationalError, OSError):
            self._claim_reply_lost = True
            raise
        for job in jobs:  # executors start now, not after the look-up that may follow
            self._inbox.put(job)
        if len(jobs) < wanted:
            self._look_up_next_due(conn, queues)
        return jobs

    def _release_lost_claim(self, conn: psycopg.Connection[Any], claiming_now: int) -> None:
        """Under the claim lock, so no claim adds jobs meanwhile. Only when the
        worker holds nothing but the `claiming_now` slots of this claim and no
        completion is left to write: every row reserved for it is then a lost
        claim's, with no clock or id list to trust. Until then they wait."""
        with self._slots:
            holding = self._busy - claiming_now
        if holding or self.completer.pending:
            return
        released = claiming.release_lost_claim(conn, self.id)
        self._claim_reply_lost = False
        if released:
            log.warning("job.released", jobs=released, reason="a claim's reply was lost")

    def _look_up_next_due(self, conn: psycopg.Connection[Any], queues: list[str]) -> None:
        sent = time.time()
        try:
            due, db_now = claiming.next_due_epoch(conn, queues)
        except (psycopg.Error, OSError) as exc:
            # The claimed jobs are already with the executors: keep them, poll instead
            # (an error here must not reach the main loop, which would give back their slots).
            unavailable = isinstance(exc, psycopg.OperationalError | OSError)
            event = "database.unavailable" if unavailable else "worker.next_due_failed"
            log.warning(event, during="next_due", error=str(exc).strip())
            return
        self.wakeup.learn_next_due(due, db_now, sent)

    def _acquire_slots(self, timeout: float) -> int:
        """Wait for free executors; reserve all that are free, plus the prefetch allowance."""
        with self._slots:
            if not self._slots.wait_for(lambda: self._has_free_slot() or self._stop.is_set(), timeout):
                return 0
            return self._take_free_slots()

    def _has_free_slot(self) -> bool:
        # With a prefetch, claim again once the jobs claimed ahead have started, so
        # that every claim takes at least `prefetch` jobs.
        return self._busy < self.options.concurrency + (1 if self.options.prefetch else 0)

    def _take_free_slots(self) -> int:
        """Under self._slots: reserve every free slot (none once stopping)."""
        if self._stop.is_set() or not self._has_free_slot():
            return 0
        free = self.options.concurrency + self.options.prefetch - self._busy
        self._busy += free
        return free

    def _return_slots(self, count: int) -> None:
        if count:
            with self._slots:
                self._busy -= count
                self._slots.notify_all()

    def _wait_for_work(self) -> None:
        """Sleep until a notification, the next delayed job, the poll interval or a stop."""
        self._poll_at = time.monotonic() + self.options.sleep
        while not self._stop.is_set() and not self.wakeup.work_ready:
            if self.options.stop_when_empty and self.running == 0:
                return  # the last running job may have been the last one: look again
            now = time.monotonic()
            due_in = self.wakeup.due_in()
            if now >= self._poll_at or (due_in is not None and due_in <= 0):
                return
            self.wakeup.wait(min(self._poll_at - now, self._tick, *([due_in] if due_in else [])))
            self._housekeeping(work_waiting=self.wakeup.work_ready)

    def _on_notifies(self, notes: list[psycopg.Notify], conn: psycopg.Connection[Any]) -> None:
        """The listener's batch. A job due now is claimed here, on the listener's
        connection: its thread and backend are awake already, while the main loop
        would be one thread wake-up and a pooled backend's wake-up away."""
        due_now: list[str] = []
        for note in notes:
            if note.channel == CONTROL_CHANNEL:
                self._on_control(note.payload)
            elif self.wakeup.job_notified(note.payload, claim_here=True):
                due_now.append(note.payload)
        if due_now and not self._claim_notified(conn, due_now):
            self.wakeup.work_waiting()

    def _on_listening(self, conn: psycopg.Connection[Any]) -> None:
        """The listener (re)subscribed. A notification may have been missed while it
        was away: look now, on its connection, which also readies that backend's
        plan of the claim before the first notification needs it."""
        if not self._claim_notified(conn, None):
            self.wakeup.work_waiting()

    def _claim_notified(self, conn: psycopg.Connection[Any], payloads: list[str] | None) -> bool:
        """Claim on the listener's connection; False when the main loop should look
        (no free executor, every free one filled so there may be more, or an error).
        A single notified job is claimed by its key when nothing else was left ready."""
        if not self._claim_on_listener:
            return False
        job_id = notified_job(payloads[0]) if payloads and len(payloads) == 1 else None
        with self._slots:
            free = self._take_free_slots()
        if not free:
            self._drained = False  # jobs may be waiting for a free executor now
            return False
        try:
            jobs = self._claim(free, conn, expected=len(payloads) if payloads else None, job_id=job_id)
        except BaseException as exc:
            self._return_slots(free)
            if not isinstance(exc, Exception) or isinstance(exc, psycopg.OperationalError) or conn.broken:
                self.wakeup.work_waiting()  # the notification is used up: the main loop claims
                raise  # and the listener reconnects (or its thread ends)
            self._listener_claim_failed(exc)
            return False
        self._return_slots(free - len(jobs))
        return len(jobs) < free

    def _listener_claim_failed(self, exc: Exception) -> None:
        """A claim on the listener's connection failed, the connection still usable."""
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            # --listen-database-url names a role that may LISTEN and no more:
            # claim from the main loop only, as before this fast path.
            self._claim_on_listener = False
            log.warning("listener.claims_disabled", error=db.first_line(exc))
        elif isinstance(exc, psycopg.Error):
            log.warning("listener.claim_failed", error=db.first_line(exc))
        else:
            # A bug here must not kill the listener thread: its wake-ups matter more.
            self._claim_on_listener = False
            log.exception("listener.claims_disabled", error=f"{type(exc).__name__}: {exc}")

    def _on_control(self, payload: str) -> None:
        """Queue control sent through the database (pause, resume, restart)."""
        verb, _, argument = payload.partition(":")
        if verb == "pause" and argument in self.queues:
            self._paused.add(argument)
            log.info("queue.paused", queue=argument)
        elif verb == "resume" and argument in self.queues:
            self._paused.discard(argument)
            log.info("queue.resumed", queue=argument)
            self.wakeup.work_waiting()
        elif verb == "restart":
            self.request_stop("restart requested")
        self.wakeup.ring()

    # -- housekeeping -------------------------------------------------------------

    def _housekeeping(self, work_waiting: bool = False) -> None:
        now = time.monotonic()
        # A heartbeat, rescue or control read is a round trip: with work waiting, the
        # claim goes first, unless that would put housekeeping off for a whole tick.
        if work_waiting and now - self._last_housekeeping < self._tick:
            return
        self._last_housekeeping = now
        timeouts.check(self, now)
        if self.notifier.enabled:
            self._notify_systemd(now)
        if now - self._last_heartbeat >= self.options.heartbeat_interval:
            self._heartbeat()
        if now - self._last_rescue >= self.options.heartbeat_interval:
            self._rescue()
        if now - self._last_control >= CONTROL_READ_SECONDS:
            self._read_control()
        self._check_limits(now)

    def _notify_systemd(self, now: float) -> None:
        """Watchdog pings and STATUS= from the main loop, never from a timer thread:
        a wedged loop stops pinging, and systemd restarts the worker."""
        interval = self.notifier.watchdog_interval
        if interval is not None and now - self._last_watchdog >= min(interval, 1.0):
            self.notifier.watchdog()
            self._last_watchdog = now
        if now - self._last_status >= STATUS_INTERVAL_SECONDS:
            self._last_status = now
            if self._announced_ready:
                self._send_status(self._status_text())
            elif self.listener.ready.is_set():
                self._announce_ready()

    def _status_text(self) -> str:
        running = self.running
        text = f"running {running} of {self.options.concurrency} jobs" if running else "idle"
        if self._paused:
            text += f", paused: {','.join(sorted(self._paused))}"
        return f"{text}; {self.processed} done"

    def _send_status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.notifier.status(text)

    def _heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        try:
            # Half an interval at most (but time to open a connection): a pool
            # that gave up reconnecting during an outage does not serve a waiting
            # heartbeat when the database comes back, and a longer wait would put
            # off the next heartbeat past the lease.
            with self.pool.connection(timeout=self._housekeeping_wait) as conn:
                kept = lease.heartbeat(
                    conn,
                    self.id,
                    self.queues,
                    self.options.concurrency,
                    self.running,
                    self.options.lease_seconds,
                )
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            self._contact_since = None
            log.warning("database.unavailable", during="heartbeat", error=str(exc).strip())
            return
        now = time.monotonic()
        if not kept:
            # Declared dead by another worker: whatever the reason, this worker's
            # contact was not beyond doubt, so its count starts again.
            self._contact_since = None
            log.warning("worker.lease_lost", worker_id=self.id, note="jobs this worker held were rescued")
        if self._contact_broken(now):
            self._contact_since = now
        self._last_beat_ok = now

    @property
    def _housekeeping_wait(self) -> float:
        """How long a heartbeat or rescue waits for a pooled connection."""
        return min(5.0, max(0.5, self.options.heartbeat_interval / 2))

    def _unbroken_contact(self, now: float) -> float:
        """Seconds this worker has been heartbeating without a break: 0 after a
        failed heartbeat or rescue, a lost lease, or a silence longer than its
        lease (a frozen process or a stalled loop saw nothing of the database).
        The rescuer passes it to worker_remove_dead, which judges a worker only
        once this is at least that worker's own lease: the exact bound per worker
        (the largest lease among the others would be the blanket version). A
        live worker cut off from the database as long as this one was has then
        had a whole lease, two of its intervals, to heartbeat again."""
        if self._contact_broken(now):
            return 0.0
        assert self._contact_since is not None
        return now - self._contact_since

    def _contact_broken(self, now: float) -> bool:
        """A failed call since the count began, or no heartbeat through for a lease."""
        return self._contact_since is None or now - self._last_beat_ok > self.options.lease_seconds

    @property
    def paused_queues(self) -> frozenset[str]:
        """This worker's queues it does not claim from now."""
        return frozenset(self._paused)

    def _read_control(self) -> None:
        """Obey pause, resume and restart as stored, whether or not the NOTIFY arrived."""
        self._last_control = time.monotonic()
        try:
            with self.pool.connection(timeout=1.0) as conn:
                state = control.read_state(conn, self.queues)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            self._contact_since = None  # an outage between heartbeats counts too
            log.debug("database.unavailable", during="control", error=str(exc).strip())
            return
        if state.paused != self._paused:
            for queue_name in sorted(state.paused - self._paused):
                log.info("queue.paused", queue=queue_name)
            for queue_name in sorted(self._paused - state.paused):
                log.info("queue.resumed", queue=queue_name)
                self.wakeup.work_waiting()
            self._paused = set(state.paused)
        if state.restart_token != self._restart_token:
            self.request_stop("restart requested")

    def _rescue(self) -> None:
        self._last_rescue = time.monotonic()
        if self._contact_since is None:
            return  # the heartbeat just failed: this rescue would wait on the pool for nothing
        healthy = self._unbroken_contact(self._last_rescue)
        try:
            with self.pool.connection(timeout=self._housekeeping_wait) as conn:
                if lease.rescue(conn, healthy, self.options.lease_seconds):
                    self.wakeup.work_waiting()
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            self._contact_since = None
            log.warning("database.unavailable", during="rescue", error=str(exc).strip())

    def _check_limits(self, now: float) -> None:
        reached = limits.reached(self.options, self.processed, now - self._started_at)
        if reached is not None:
            self.request_stop(*reached)


def _drain(inbox: queue.SimpleQueue[ClaimedJob | None]) -> list[ClaimedJob]:
    """The jobs left in the inbox. The stop markers taken with them go back: an
    executor that has not picked its own up yet still needs it to end."""
    jobs: list[ClaimedJob] = []
    markers = 0
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
        if item is None:
            markers += 1
        else:
            jobs.append(item)
    for _ in range(markers):
        inbox.put(None)
    return jobs


__all__ = ["EXIT_MEMORY", "EXIT_OK", "EXIT_STUCK", "Worker", "WorkerOptions"]
