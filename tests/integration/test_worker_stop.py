"""How a worker stops: gracefully (running jobs finish, unstarted ones go back
without an attempt), and on --max-jobs, --max-time, --stop-when-empty and --memory."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from soleil.runner import Job, JobContext, Runner, timeouts
from soleil.runner import worker as worker_module
from soleil.runner.claim import ClaimedJob, claim
from soleil.runner.execute import Executor
from soleil.runner.worker import EXIT_MEMORY, EXIT_OK, Worker
from tests.apps.basic import Record, Sleep
from tests.apps.lifecycle import HOLD_RELEASED, InsertThenHold, Spin, record_hook
from tests.helpers import (
    NOT_A_SERVER_PID,
    count_failed,
    count_jobs,
    effects,
    pretend_behind_pgbouncer,
    scalar,
    wait_for,
)


def test_stop_lets_the_running_job_finish_and_releases_unstarted_ones_without_an_attempt(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker = start_worker(concurrency=1)
    running = runner.dispatch(Sleep(seconds=1.0, tag="running"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="the job to start")
    # Jobs claimed by this worker but not started yet (what a batch claim leaves
    # in the executors' inbox when the stop arrives).
    waiting = runner.dispatch_many([Record(tag="w1"), Record(tag="w2")])
    for job in claim(conn, queues=["default"], limit=2, worker_id=worker.id, default_tries=1):
        worker._inbox.put(job)
    worker.stop(timeout=10)
    assert worker.join(0) and worker.exit_code == EXIT_OK
    tags = [
        r[0] for r in conn.execute("SELECT tag FROM public.runs WHERE job_id = %s ORDER BY id", (running,))
    ]
    assert tags == ["start:running", "end:running"]
    rows = conn.execute(
        "SELECT id, attempts, reserved_by FROM soleil.jobs ORDER BY id",
    ).fetchall()
    assert rows == [(waiting[0], 0, None), (waiting[1], 0, None)]
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0, "the worker unregisters"


def test_a_job_an_executor_takes_as_the_stop_drains_the_inbox_goes_back_without_a_try(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # White-box trigger: the executor takes the waiting job from the inbox and hands
    # it back only once the shutdown has drained the inbox. With one try, a try
    # used by the stop would fail the job the next time it is claimed, unrun.
    drained, hand_back, drain = threading.Event(), Worker.hand_back, worker_module._drain

    def drain_then_tell(inbox: Any) -> list[ClaimedJob]:
        jobs = drain(inbox)
        drained.set()
        return jobs

    def hand_back_after_the_drain(self: Worker, claimed: ClaimedJob) -> None:
        drained.wait(10)
        hand_back(self, claimed)

    monkeypatch.setattr(worker_module, "_drain", drain_then_tell)
    monkeypatch.setattr(Worker, "hand_back", hand_back_after_the_drain)
    worker = start_worker(concurrency=1)
    runner.dispatch(Sleep(seconds=0.5, tag="running"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="the job to start")
    waiting = runner.dispatch(Record(tag="waiting"))
    [job] = claim(conn, queues=["default"], limit=1, worker_id=worker.id, default_tries=1)
    worker._inbox.put(job)  # what a claim ahead leaves behind the running job
    worker.stop(timeout=10)
    assert drained.is_set() and worker.exit_code == EXIT_OK
    assert conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall() == [
        (waiting, 0, None)
    ]


@pytest.mark.parametrize("grace", [10.0, 0.0], ids=["graceful", "hard"])
def test_every_executor_thread_ends_with_the_worker(start_worker: Any, runner: Runner, grace: float) -> None:
    # An embedding process (tests, a web app running a worker) keeps no thread of a
    # stopped worker: each executor gets its stop marker, even one the shutdown's
    # last look at the inbox passes by.
    runner.dispatch_many([Sleep(seconds=0.2, tag=str(i)) for i in range(3)])
    worker = start_worker(concurrency=6, stop_grace=grace)
    threads = [executor.thread for executor in worker.executors]
    worker.stop(timeout=10)
    wait_for(lambda: not any(thread.is_alive() for thread in threads), what="the executor threads to end")


def test_max_jobs_stops_after_that_many_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(5)])
    worker = start_worker(concurrency=2, max_jobs=3)
    assert worker.join(10), "the worker should stop by itself"
    assert (worker.exit_code, worker.stop_reason) == (EXIT_OK, "max jobs reached")
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 3
    assert count_jobs(conn, "attempts = 0 AND reserved_by IS NULL") == 2


def test_max_time_stops_an_idle_worker(start_worker: Any) -> None:
    worker = start_worker(max_time=0.5, sleep=30.0)
    assert worker.join(5), "the worker should stop by itself"
    assert (worker.exit_code, worker.stop_reason) == (EXIT_OK, "max time reached")


def test_max_time_lets_the_running_job_finish(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch(Sleep(seconds=1.0, tag="long"))
    worker = start_worker(max_time=0.3)
    assert worker.join(10)
    assert worker.exit_code == EXIT_OK
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'end:long'") == 1
    assert count_jobs(conn) == 0


def test_stop_when_empty_drains_the_queue_then_exits(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Sleep(seconds=0.05, tag=str(i)) for i in range(6)])
    runner.dispatch(Record(tag="later"), delay=3600)  # not due: does not keep the worker alive
    worker = start_worker(concurrency=2, stop_when_empty=True, sleep=30.0)
    assert worker.join(10), "the worker should stop by itself"
    assert (worker.exit_code, worker.stop_reason) == (EXIT_OK, "queue empty")
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag LIKE 'end:%'") == 6
    assert count_jobs(conn) == 1


def test_a_memory_limit_stops_the_worker_with_exit_code_12(start_worker: Any) -> None:
    worker = start_worker(memory_mb=1)
    assert worker.join(5), "the worker should stop by itself"
    assert (worker.exit_code, worker.stop_reason) == (EXIT_MEMORY, "memory limit exceeded")
    assert EXIT_MEMORY == 12


def test_an_idle_workers_completion_is_written_at_once_a_busy_ones_batched_and_flushed_at_stop(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker = start_worker(concurrency=2, completion_interval=60.0)
    runner.dispatch(Record(tag="alone"))
    # After a quiet spell the completion goes at once, not an interval later.
    wait_for(lambda: count_jobs(conn) == 0, what="the lone job's completion", timeout=10)
    runner.dispatch_many([Record(tag=str(i)) for i in range(20)])
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs") == 21, what="all jobs to run")
    assert count_jobs(conn) == 20, "completions right behind another should wait for the interval"
    worker.stop(timeout=10)
    assert count_jobs(conn) == 0
    assert scalar(conn, "SELECT sum(completed) FROM soleil.queue_stats") == 21


def test_a_draining_worker_keeps_its_lease_so_its_running_job_runs_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # A stop lets running jobs finish (systemd gives 90 s), far longer than the
    # lease: the draining worker must go on heartbeating, or the other worker
    # takes it for dead and runs its job again (or fails it, with no tries left).
    draining = start_worker(concurrency=1, heartbeat_interval=0.5)
    job_id = runner.dispatch(Sleep(seconds=3.0, tag="long"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="the job to start")
    start_worker(concurrency=1, heartbeat_interval=0.5)  # rescues every half second, lease 1 s
    draining.stop(timeout=20)
    assert draining.join(0) and draining.exit_code == EXIT_OK
    tags = [
        r[0] for r in conn.execute("SELECT tag FROM public.runs WHERE job_id = %s ORDER BY id", (job_id,))
    ]
    assert tags == ["start:long", "end:long"]
    assert count_failed(conn) == 0
    assert count_jobs(conn) == 0, "completed by the worker that ran it"


def test_a_job_running_past_its_timeout_during_a_drain_is_interrupted_not_waited_for(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker = start_worker(concurrency=1, stop_grace=30.0)
    job_id = runner.dispatch(Spin())  # timeout 0.3 s, 2 tries, no backoff, loops for 30 s
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="the job to start")
    stopping = time.monotonic()
    worker.stop(timeout=40)
    # Without the timeout watch during the drain, the stop waits out the job's 30 s.
    assert time.monotonic() - stopping < 10.0
    assert worker.exit_code == EXIT_OK
    assert conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall() == [(job_id, 1, None)]
    assert count_failed(conn) == 0


HOOK_ENTERED = threading.Event()
HOOK_RELEASED = threading.Event()


class FailsWithHangingHook(Job):
    """Fails its only try; its failed() hook hangs until the test releases it."""

    name = "tests.fails_with_hanging_hook"
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        raise ValueError("broken")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        HOOK_ENTERED.set()
        HOOK_RELEASED.wait(60)
        record_hook(ctx, exc)


def test_a_hard_stop_does_not_wait_for_a_failed_hook_that_hangs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # The outcome of a job's last try locks the job's row while its failed() hook
    # runs. A stop whose grace runs out gives up on that job: its unregister must
    # not wait for the row, or the stop lasts as long as the hook (forever if it hangs).
    for event in (HOOK_ENTERED, HOOK_RELEASED):
        event.clear()
    grace = 0.3
    worker = start_worker(concurrency=1, stop_grace=grace)
    threads = [executor.thread for executor in worker.executors]
    try:
        job_id = runner.dispatch(FailsWithHangingHook())
        assert HOOK_ENTERED.wait(10), "the failed() hook was not entered"
        # The grace, then the wait for executors to hand back unstarted jobs (the
        # one in the hook does not), then the release, flush and unregister.
        bound = grace + worker_module.EXECUTORS_EXIT_SECONDS + 3.0
        stopping = time.monotonic()
        worker.stop(timeout=bound)
        assert worker.join(0), f"the stop still waits for the hook after {time.monotonic() - stopping:.1f} s"
        assert worker.hard_stopped and worker.exit_code == 1
        assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0, "the worker unregistered"
        # The hook still runs: its outcome holds the job, which the stop left to it.
        assert conn.execute("SELECT id, reserved_by FROM soleil.jobs").fetchall() == [(job_id, worker.id)]
        assert count_failed(conn) == 0
        HOOK_RELEASED.set()
        wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
        assert conn.execute("SELECT job_id FROM soleil.failed_jobs").fetchall() == [(job_id,)]
        assert count_jobs(conn) == 0
        hooks = conn.execute("SELECT job_id, error FROM public.hooks").fetchall()
        assert hooks == [(job_id, "ValueError: broken")], "failed() ran once, and its write committed"
    finally:
        HOOK_RELEASED.set()
        wait_for(lambda: not any(thread.is_alive() for thread in threads), what="the executor threads to end")


def test_a_hard_stop_gives_back_a_transactional_job_whose_session_is_slow_to_end(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # White-box trigger: the terminated session ends a second after the worker
    # asked, as a busy server's may. Until then it holds the job's row, which
    # the unregister skips (it gives back only what it can lock at once): the
    # stop must wait for the session to end, or the job waits for a rescue.
    terminate, delays = timeouts.terminate, []

    def terminate_a_second_later(worker: Worker, backend_pids: list[int], deadline: float) -> str | None:
        delay = threading.Timer(1.0, terminate, (worker, backend_pids, deadline))
        delays.append(delay)
        delay.start()
        return None

    monkeypatch.setattr(timeouts, "terminate", terminate_a_second_later)
    HOLD_RELEASED.clear()
    worker = start_worker(concurrency=1, stop_grace=0.3)
    [thread] = [executor.thread for executor in worker.executors]
    try:
        job_id = runner.dispatch(InsertThenHold(key="held"))
        wait_for(lambda: worker.executors[0].handler_entered, what="the job to start")
        worker.stop(timeout=10)
        assert worker.join(0) and worker.hard_stopped
        assert delays, "the hard stop terminated no session"
        assert_given_back_at_once(conn, job_id)
    finally:
        HOLD_RELEASED.set()
        for delay in delays:
            delay.join(10)
    wait_for(lambda: not thread.is_alive(), what="the given-up executor to end")


def assert_given_back_at_once(conn: psycopg.Connection[Any], job_id: int | None) -> None:
    """After a hard stop: the transactional job back in its queue at once, the attempt
    counted, its write rolled back, and the worker unregistered."""
    assert conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall() == [(job_id, 1, None)]
    assert effects(conn) == []
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0


# The session holding a job's row, as the server sees it: the transaction that
# deleted the row (its xmax) holds an exclusive lock on its own id.
ROW_HOLDER = """
SELECT l.pid FROM soleil.jobs j
JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = j.xmax
  AND l.mode = 'ExclusiveLock' AND l.granted
WHERE j.id = %s
"""


def hold_a_transactional_job(
    runner: Runner, conn: psycopg.Connection[Any], executor: Executor
) -> tuple[int | None, int | None]:
    """Dispatch InsertThenHold and wait for its handler on `executor`: the job's id,
    and the pid of the server session holding its row."""
    job_id = runner.dispatch(InsertThenHold(key="held"))
    wait_for(lambda: executor.handler_entered, what="the job to start")
    return job_id, scalar(conn, ROW_HOLDER, (job_id,))


@pytest.mark.timeout(60)
def test_a_hard_stop_terminates_the_server_session_holding_the_transactional_jobs_row(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind PgBouncer the client's backend_pid names no server session: a stop
    # that terminated it would leave the job's transaction running, its row
    # locked, and the unregister (which skips locked rows) would leave the job
    # reserved by a worker that no longer exists. The pid of the session comes
    # from the job's fence, run inside its transaction.
    asked = pretend_behind_pgbouncer(monkeypatch)
    HOLD_RELEASED.clear()
    worker = start_worker(concurrency=1, stop_grace=0.3)
    [executor] = worker.executors
    try:
        job_id, holder = hold_a_transactional_job(runner, conn, executor)
        assert holder is not None and holder != NOT_A_SERVER_PID
        with capture_logs() as logs:
            worker.stop(timeout=20)
        assert worker.join(0) and worker.hard_stopped
        assert asked == [[holder]], "the stop terminated another pid than the row's holder"
        assert not [entry for entry in logs if entry["event"] == "worker.terminate_failed"]
        assert scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (holder,)) == 0
        assert_given_back_at_once(conn, job_id)
    finally:
        HOLD_RELEASED.set()
    wait_for(lambda: not executor.thread.is_alive(), what="the given-up executor to end")


@pytest.mark.timeout(60)
def test_a_hard_stop_spends_one_shared_budget_on_terminating_and_waiting(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # White-box trigger: the terminate takes its whole budget and the session
    # does not end (a server too busy to answer). The wait for the session to
    # end must not add a budget of its own: docs/deployment.md counts one.
    monkeypatch.setattr(timeouts, "TERMINATE_SECONDS", 1.0)

    def terminate_that_takes_its_budget(
        worker: Worker, backend_pids: list[int], deadline: float
    ) -> str | None:
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return None

    give_up, spent = timeouts.give_up_running, []

    def timed(worker: Worker) -> list[ClaimedJob]:
        started = time.monotonic()
        try:
            return give_up(worker)
        finally:
            spent.append(time.monotonic() - started)

    monkeypatch.setattr(timeouts, "terminate", terminate_that_takes_its_budget)
    monkeypatch.setattr(timeouts, "give_up_running", timed)
    HOLD_RELEASED.clear()
    worker = start_worker(concurrency=1, stop_grace=0.3)
    [executor] = worker.executors
    try:
        _, holder = hold_a_transactional_job(runner, conn, executor)
        with capture_logs() as logs:
            worker.stop(timeout=20)
        assert worker.join(0) and worker.hard_stopped
        [seconds] = spent
        assert 1.0 <= seconds < 1.5, f"ending the sessions took {seconds:.2f} s of a 1 s budget"
        [failed] = [entry for entry in logs if entry["event"] == "worker.terminate_failed"]
        assert failed["backend_pids"] == [holder]
        assert "still running" in failed["error"]
    finally:
        HOLD_RELEASED.set()
    wait_for(lambda: not executor.thread.is_alive(), what="the given-up executor to end")


@pytest.mark.timeout(60)
def test_terminating_a_session_that_ended_by_itself_is_no_failure(
    database_url: str, start_worker: Any
) -> None:
    # pg_terminate_backend warns and returns false for it: it is no server session
    # any more, which is what terminating it was for.
    worker = start_worker(concurrency=1)
    with psycopg.connect(database_url) as gone:
        pid = gone.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as conn:
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        wait_for(lambda: scalar(conn, alive, (pid,)) == 0, what="the closed session to end")
    assert timeouts.terminate(worker, [pid], time.monotonic() + 5.0) is None
    assert timeouts.wait_ended(worker, [pid], time.monotonic() + 5.0) is None


@pytest.mark.timeout(60)
def test_a_session_the_server_will_not_signal_is_reported(
    conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # pg_terminate_backend returns false (with a warning) for a process that is
    # no client backend, such as the checkpointer: still there, it is a failure.
    worker = start_worker(concurrency=1)
    checkpointer = scalar(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
    assert checkpointer is not None
    error = timeouts.terminate(worker, [checkpointer], time.monotonic() + 5.0)
    assert error is not None and str(checkpointer) in error
    assert scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (checkpointer,)) == 1
