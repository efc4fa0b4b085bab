"""Timeouts: a job looping in Python is interrupted; a job blocked in C code is
abandoned after the grace period, and the worker keeps its full concurrency."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import psycopg
import pytest

from soleil.runner import Job, JobContext, Runner, timeouts
from soleil.runner.execute import Executor
from tests.apps.basic import Sleep, record
from tests.apps.lifecycle import Blocked, SlowQuery, Spin, record_hook
from tests.helpers import count_failed, count_jobs, effects, pretend_behind_pgbouncer, scalar, wait_for

RELEASED = threading.Event()


class HeldUntilReleased(Job):
    """Transactional: writes, then blocks past its timeout until the test releases it."""

    name = "tests.held_until_released"
    transactional = True
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES ('held')")
        RELEASED.wait(10)


def test_a_job_looping_past_its_timeout_is_interrupted_and_retried_then_failed(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(Spin())  # timeout 0.3 s, 2 tries, loops for 30 s
    started = time.monotonic()
    start_worker(tries=5)
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    assert time.monotonic() - started < 5.0
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE job_id = %s", (job_id,)) == 2
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (job_id,))
    assert exception.startswith("JobTimeout")
    assert scalar(conn, "SELECT attempts FROM soleil.failed_jobs") == 2


def test_a_job_blocked_past_timeout_and_grace_is_abandoned_and_the_worker_keeps_its_concurrency(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    blocked = runner.dispatch_many([Blocked(), Blocked()])
    worker = start_worker(concurrency=2, timeout_grace=0.5)
    wait_for(lambda: count_failed(conn) == 2, timeout=10.0, what="both blocked jobs to be abandoned")
    rows = conn.execute(
        "SELECT job_id, attempts, exception FROM soleil.failed_jobs ORDER BY job_id"
    ).fetchall()
    assert [r[0] for r in rows] == blocked
    for _, attempts, exception in rows:
        assert attempts == 1
        assert exception.startswith("JobTimeout: attempt exceeded the job's timeout of 0.3 s")
        assert "abandoned" in exception
    # Both slots are free again: two jobs run side by side while the old threads still block.
    runner.dispatch_many([Sleep(seconds=0.4, tag="a"), Sleep(seconds=0.4, tag="b")])
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag LIKE 'end:%'") == 2,
        what="the two new jobs",
    )
    starts = [r[0] for r in conn.execute("SELECT at FROM public.runs WHERE tag LIKE 'start:%' ORDER BY at")]
    ends = [r[0] for r in conn.execute("SELECT at FROM public.runs WHERE tag LIKE 'end:%' ORDER BY at")]
    assert starts[1] < ends[0], "the two jobs should have run concurrently"
    assert worker.exit_code == 0 and not worker.stopping


def test_a_transactional_job_blocked_in_the_database_is_cancelled_and_rolled_back(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(SlowQuery(key="slow"))  # timeout 0.5 s, pg_sleep(30)
    started = time.monotonic()
    worker = start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    assert time.monotonic() - started < 5.0
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (job_id,))
    # Whichever fires first: the worker's interrupt or the statement_timeout it set.
    assert exception.startswith(("JobTimeout", "QueryCanceled: canceling statement due to statement timeout"))
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 0
    sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%'"
    assert scalar(conn, sleeping + " AND state = 'active'") == 0, "the query must not keep running"
    # The worker keeps working.
    runner.dispatch(Sleep(seconds=0, tag="after"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'end:after'") == 1)
    assert not worker.stopping


def test_a_worker_with_more_stuck_threads_than_slots_exits_1_for_a_clean_restart(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Blocked(seconds=3.0), Blocked(seconds=3.0)])
    worker = start_worker(concurrency=1, timeout_grace=0.2)
    assert worker.join(10), "the worker should stop by itself"
    assert (worker.exit_code, worker.stop_reason) == (1, "too many stuck jobs")
    assert count_failed(conn) == 2


class BlockedThenRecords(Job):
    """Blocks in C code past its timeout and grace, then records that its thread got out."""

    name = "tests.blocked_then_records"
    timeout = 0.3
    tag: str

    def handle(self, ctx: JobContext) -> None:
        try:
            time.sleep(1.0)
        finally:  # the JobTimeout raised at the deadline arrives once the sleep returns
            record(ctx, f"returned:{self.tag}")


def test_a_thread_that_gets_out_of_its_job_no_longer_counts_as_stuck(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Two abandonments, one at a time, on a one-slot worker: never more threads
    # stuck than slots, so the worker goes on (it used to count every abandonment
    # of its life and exit 1 at the second).
    worker = start_worker(concurrency=1, timeout_grace=0.2)

    def returned(tag: str) -> int:
        return int(scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = %s", (f"returned:{tag}",)))

    for tag in ("first", "second"):
        runner.dispatch(BlockedThenRecords(tag=tag))
        wait_for(functools.partial(returned, tag), what=f"the {tag} job's thread to get out")
    assert count_failed(conn) == 2, "each attempt was recorded as timed out when abandoned"
    assert not worker.stopping, worker.stop_reason


def test_an_abandoned_jobs_connection_is_closed_not_given_back_to_the_pool(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job returns right after the worker abandoned it, before the worker
    # terminates its backend: pooled again, the connection would be another
    # job's by the time the terminate lands.
    seen: dict[str, Any] = {}

    class Log:
        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

        def error(self, event: str, **fields: Any) -> Any:
            if event == "job.abandoned":
                [executor] = worker.executors
                seen["connection"] = executor._chain
                RELEASED.set()
                executor.thread.join(5)  # it ends its chain and gives up its slot
            return original.error(event, **fields)

    original = timeouts.log
    monkeypatch.setattr(timeouts, "log", Log())
    RELEASED.clear()
    runner.dispatch(HeldUntilReleased())
    worker = start_worker(concurrency=1, timeout=0.3, timeout_grace=0.2)
    returned: list[tuple[psycopg.Connection[Any], bool]] = []
    putconn = worker.pool.putconn

    def watched_putconn(connection: psycopg.Connection[Any]) -> None:
        returned.append((connection, connection.closed))
        putconn(connection)

    monkeypatch.setattr(worker.pool, "putconn", watched_putconn)
    wait_for(lambda: count_jobs(conn) == 0, what="the abandoned job's outcome")
    assert seen["connection"] is not None
    assert [closed for c, closed in returned if c is seen["connection"]] == [True]
    assert effects(conn) == []
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs")
    assert "abandoned" in exception, exception
    assert not worker.stopping


SEEN_OVERDUE = threading.Event()
CHECKED_AGAIN = threading.Event()


class ReturnsAtItsDeadline(Job):
    """Returns just as the worker finds it overdue, before the interrupt."""

    name = "tests.returns_at_its_deadline"
    timeout = 0.3
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        SEEN_OVERDUE.wait(10)
        record(ctx, "returned")


class RunsAfterIt(Job):
    """Runs in Python, where a JobTimeout would land, until the worker's timeout
    watch has looked at its executor again."""

    name = "tests.runs_after_it"
    timeout = 30.0
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        wait_for(CHECKED_AGAIN.is_set, what="the timeout watch to look again")
        record(ctx, "after")


def test_a_job_that_returns_as_it_is_found_overdue_leaves_the_next_job_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watch finds the first job overdue; before it acts, the job returns and
    # the executor starts the next one (in production: while the main loop writes
    # its log line). The window is held open until the next job runs.
    overdue = Executor.overdue
    held: list[bool] = []

    def overdue_then_next_job_starts(self: Executor, now: float) -> Any:
        seen = overdue(self, now)
        current = self.current
        if held:
            CHECKED_AGAIN.set()
        elif seen and current is not None and current.name == ReturnsAtItsDeadline.name:
            held.append(True)
            SEEN_OVERDUE.set()
            wait_for(
                lambda: self.current is not None and self.current is not current, what="the next job to start"
            )
        return seen

    SEEN_OVERDUE.clear()
    CHECKED_AGAIN.clear()
    monkeypatch.setattr(Executor, "overdue", overdue_then_next_job_starts)
    runner.dispatch_many([ReturnsAtItsDeadline(), RunsAfterIt()])
    start_worker(concurrency=1, prefetch=1)
    wait_for(lambda: count_jobs(conn) == 0, what="both jobs to be done")
    assert held, "the watch never found the first job overdue"
    failed = conn.execute("SELECT job, exception FROM soleil.failed_jobs").fetchall()
    assert failed == [], "the job after the overdue one got its timeout"
    assert [r[0] for r in conn.execute("SELECT tag FROM public.runs ORDER BY id")] == ["returned", "after"]


ABANDON_CALLED = threading.Event()
ABANDON_RETURNED = threading.Event()


class ReturnsAtItsGrace(Job):
    """Blocked in C past its timeout, it returns just as the worker abandons it."""

    name = "tests.returns_at_its_grace"
    timeout = 0.3
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        ABANDON_CALLED.wait(10)  # in C: the JobTimeout lands when it returns


class RunsPastTheAbandon(Job):
    """Runs until the worker's abandon (meant for the job before it) has returned."""

    name = "tests.runs_past_the_abandon"
    timeout = 30.0
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        wait_for(ABANDON_RETURNED.is_set, what="the abandon to return")
        record(ctx, "after")


def test_a_job_that_returns_as_it_is_abandoned_leaves_the_next_job_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, one step later: the first job ignored its timeout through the
    # grace period and the worker goes to abandon it, but it returns first and
    # the executor starts the next job.
    abandon = Executor.abandon
    held: list[bool] = []

    def abandon_once_the_next_job_runs(self: Executor, *args: Any) -> Any:
        current = self.current
        if not held and current is not None and current.name == ReturnsAtItsGrace.name:
            held.append(True)
            ABANDON_CALLED.set()
            wait_for(
                lambda: self.current is not None and self.current is not current, what="the next job to start"
            )
        try:
            return abandon(self, *args)
        finally:
            ABANDON_RETURNED.set()

    ABANDON_CALLED.clear()
    ABANDON_RETURNED.clear()
    monkeypatch.setattr(Executor, "abandon", abandon_once_the_next_job_runs)
    first, second = runner.dispatch_many([ReturnsAtItsGrace(), RunsPastTheAbandon()])
    start_worker(concurrency=1, prefetch=1, timeout_grace=0.2)
    wait_for(lambda: count_jobs(conn) == 0, what="both jobs to be done")
    assert held, "the worker never went to abandon the first job"
    failed = conn.execute("SELECT job_id, exception FROM soleil.failed_jobs").fetchall()
    assert [job_id for job_id, _ in failed] == [first], failed
    assert "abandoned" not in failed[0][1], failed[0][1]
    assert [r[0] for r in conn.execute("SELECT job_id FROM public.runs WHERE tag = 'after'")] == [second]


CANCEL_TARGET: dict[str, int] = {}
ON_TARGET = threading.Event()


class OverdueInPython(Job):
    """Transactional: loops in Python past its timeout, so JobTimeout unwinds it at once."""

    name = "tests.overdue_in_python"
    transactional = True
    timeout = 0.3
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("SELECT 1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pass


class InnocentQuery(Job):
    """Transactional: on the backend the late cancel was meant for (if it ever
    runs there), it runs a long statement the cancel can hit."""

    name = "tests.innocent_query"
    transactional = True
    tries = 1
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        pid = scalar(ctx.connection, "SELECT pg_backend_pid()")
        if pid == CANCEL_TARGET.get("pid") and not ON_TARGET.is_set():
            ON_TARGET.set()
            ctx.connection.execute("SELECT pg_sleep(10)")
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))


def test_a_late_cancel_for_a_timed_out_job_never_cancels_another_jobs_statement(
    runner: Runner,
    conn: psycopg.Connection[Any],
    database_url: str,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cancel request travels on a connection of its own (TCP and TLS to a
    # remote server: round trips). Here it is held back until the timed-out job's
    # connection is closed, or until another job runs a statement on it.
    cancel_safe = psycopg.Connection.cancel_safe

    def late_cancel(self: psycopg.Connection[Any], *, timeout: float = 30.0) -> None:
        CANCEL_TARGET["pid"] = self.info.backend_pid
        wait_for(lambda: self.closed or ON_TARGET.is_set(), what="the connection to be closed or reused")
        if ON_TARGET.is_set():
            with psycopg.connect(database_url, autocommit=True) as watcher:
                wait_for(
                    lambda: scalar(
                        watcher,
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE pid = %s AND state = 'active' AND query LIKE 'SELECT pg_sleep(10)%%'",
                        (CANCEL_TARGET["pid"],),
                    ),
                    what="the other job's statement to run",
                )
        cancel_safe(self, timeout=timeout)

    CANCEL_TARGET.clear()
    ON_TARGET.clear()
    monkeypatch.setattr(psycopg.Connection, "cancel_safe", late_cancel)
    # Plain jobs between the transactional ones end each chain, so that the pool's
    # connections take turns, the timed-out job's among them if it goes back.
    jobs: list[Job] = [OverdueInPython()]
    for number in range(8):
        jobs += [InnocentQuery(key=f"innocent{number}"), Sleep(seconds=0, tag=str(number))]
    overdue_id = runner.dispatch_many(jobs)[0]
    start_worker(concurrency=1, prefetch=len(jobs))
    wait_for(lambda: count_jobs(conn) == 0, what="every job to be done")
    assert "pid" in CANCEL_TARGET, "no cancel was sent"
    failed = conn.execute("SELECT job_id, exception FROM soleil.failed_jobs").fetchall()
    assert [job_id for job_id, _ in failed] == [overdue_id], failed
    assert failed[0][1].startswith("JobTimeout"), failed[0][1]
    assert sorted(effects(conn)) == [f"innocent{number}" for number in range(8)]


HOOK_STARTED = threading.Event()
LONG_DONE = threading.Event()
STUCK_RELEASED = threading.Event()


class StuckWithSlowHook(Job):
    """Blocks past its timeout and grace (abandoned); its failed() hook is slow,
    as an e-mail sent to say so would be, and lasts until LongJob has returned."""

    name = "tests.stuck_with_slow_hook"
    timeout = 0.3
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        STUCK_RELEASED.wait(30)  # in C: the JobTimeout cannot land

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        HOOK_STARTED.set()
        LONG_DONE.wait(15)
        record_hook(ctx, exc)


class LongJob(Job):
    """A plain job that runs, once the hook has started, until its worker has
    heartbeated for two leases (nobody could take it), or it was rescued."""

    name = "tests.long_job"
    tries = 3

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "long")
        with ctx.runner.connection() as c:
            holder = scalar(c, "SELECT reserved_by FROM soleil.jobs WHERE id = %s", (ctx.job_id,))
            HOOK_STARTED.wait(10)
            since = scalar(c, "SELECT clock_timestamp()")
            wait_for(
                lambda: scalar(
                    c,
                    "SELECT (SELECT heartbeat_at FROM soleil.workers WHERE id = %(holder)s)"
                    "         > %(since)s + interval '1.2 s'"  # two leases of 0.6 s
                    "    OR (SELECT reserved_by FROM soleil.jobs WHERE id = %(job)s)"
                    "       IS DISTINCT FROM %(holder)s",
                    {"holder": holder, "since": since, "job": ctx.job_id},
                ),
                what="two leases' heartbeats or a rescue",
            )
        LONG_DONE.set()


def test_an_abandoned_jobs_slow_failed_hook_does_not_stop_its_workers_heartbeats(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    for event in (HOOK_STARTED, LONG_DONE, STUCK_RELEASED):
        event.clear()
    try:
        worker = start_worker(concurrency=2, heartbeat_interval=0.3, timeout_grace=0.2)  # lease 0.6 s
        long_id = runner.dispatch(LongJob())
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'long'") == 1)
        stuck_id = runner.dispatch(StuckWithSlowHook())
        holder = "SELECT reserved_by FROM soleil.jobs WHERE id = %s"
        wait_for(lambda: scalar(conn, holder, (stuck_id,)) == worker.id, what="the stuck job on this worker")
        rescuer = start_worker(concurrency=1, heartbeat_interval=0.3)
        wait_for(lambda: count_jobs(conn) == 0, timeout=20, what="both jobs to be done")
        runs = conn.execute("SELECT job_id, attempt FROM public.runs WHERE tag = 'long'").fetchall()
        assert runs == [(long_id, 1)], "the live worker's long job was rescued and ran again"
        assert rescuer.processed == 0
        failed = conn.execute("SELECT job_id, exception FROM soleil.failed_jobs").fetchall()
        assert [job_id for job_id, _ in failed] == [stuck_id]
        assert "abandoned" in failed[0][1], failed[0][1]
        assert scalar(conn, "SELECT count(*) FROM public.hooks WHERE job_id = %s", (stuck_id,)) == 1
    finally:
        STUCK_RELEASED.set()


HOLDER: dict[str, int] = {}


class RecordsItsSessionThenHolds(Job):
    """Transactional: notes the server pid of its transaction's session, writes,
    then blocks past its timeout until the test releases it."""

    name = "tests.records_its_session_then_holds"
    transactional = True
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        HOLDER["pid"] = scalar(ctx.connection, "SELECT pg_backend_pid()")
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES ('held')")
        RELEASED.wait(10)


@pytest.mark.timeout(60)
def test_an_abandoned_transactional_job_has_the_session_its_fence_ran_in_terminated(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind PgBouncer the client's backend_pid names no server session: the
    # worker would terminate nothing, and the job's transaction would hold its
    # row until the server's idle timeout. The pid comes from the job's fence.
    asked = pretend_behind_pgbouncer(monkeypatch)
    RELEASED.clear()
    HOLDER.clear()
    try:
        runner.dispatch(RecordsItsSessionThenHolds())
        worker = start_worker(concurrency=1, timeout=0.3, timeout_grace=0.2)
        wait_for(lambda: count_jobs(conn) == 0, what="the abandoned job's outcome")
        assert asked == [[HOLDER["pid"]]], "the worker terminated another pid than its job's session"
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        wait_for(lambda: scalar(conn, alive, (HOLDER["pid"],)) == 0, what="the job's session to end")
        assert effects(conn) == []
        exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs")
        assert "abandoned" in exception, exception
        assert not worker.stopping
    finally:
        RELEASED.set()
