"""Transaction groups (WorkerOptions.transaction_group): transactional jobs already
waiting share one transaction and one COMMIT; each job's writes still commit
with its deletion or not at all, and a group that rolls back sends the jobs that
ran in it back to run again, alone."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from soleil.runner import Runner, lease
from soleil.runner.execute import Executor
from tests.apps.basic import InsertRow, InsertTxid, InsertTxidAlone
from tests.apps.lifecycle import (
    HOLD_RELEASED,
    CommitsItself,
    Deallocates,
    InsertDeferred,
    InsertThenFail,
    InsertThenHold,
    RollsBackItself,
)
from tests.helpers import count_failed, count_jobs, effects, scalar, wait_for

# Dispatched before the worker starts, the jobs arrive in one claim; a window
# longer than the test keeps every group open until it is full.
GROUPED = {"concurrency": 1, "prefetch": 40, "completion_interval": 5.0}


def transaction_of(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The transaction each InsertTxid key committed in."""
    return dict(key.split(":") for key in effects(conn))


def commits(conn: psycopg.Connection[Any]) -> list[int]:
    """How many InsertTxid jobs each transaction committed, in commit order."""
    per_transaction = collections.Counter(transaction_of(conn).values())
    return [per_transaction[txid] for txid in sorted(per_transaction, key=int)]


def running(worker: Any) -> int | None:
    """The id of the job the worker's first executor runs."""
    current = worker.executors[0].current
    return None if current is None else int(current.id)


def rolled_back_groups(logs: list[Any]) -> list[tuple[str, list[int]]]:
    return [(e["reason"], e["jobs"]) for e in logs if e["event"] == "job.group_rolled_back"]


@pytest.mark.parametrize(("group", "expected"), [(1, [1] * 25), (10, [10, 10, 5])])
def test_waiting_jobs_share_a_commit_up_to_the_group_size(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, group: int, expected: list[int]
) -> None:
    runner.dispatch_many([InsertTxid(key=str(i)) for i in range(25)])
    worker = start_worker(transaction_group=group, **GROUPED)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert sorted(key.split(":")[0] for key in effects(conn)) == sorted(str(i) for i in range(25))
    assert commits(conn) == expected
    worker.stop(timeout=10)  # flushes the completions counted once each group committed
    assert scalar(conn, "SELECT sum(completed) FROM soleil.queue_stats") == 25


def test_a_job_failing_in_a_group_rolls_it_back_and_the_jobs_before_it_run_again_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    failing = InsertThenFail(key="failing")  # two tries, no backoff
    job_ids = runner.dispatch_many(
        [InsertTxid(key="a"), InsertTxid(key="b"), failing, InsertTxid(key="c"), InsertTxid(key="d")]
    )
    with capture_logs() as logs:
        start_worker(transaction_group=10, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    committed = transaction_of(conn)
    assert sorted(committed) == ["a", "b", "c", "d"], "the failed job's insert rolled back, no one else's"
    assert rolled_back_groups(logs) == [(f"job {job_ids[2]} failed", job_ids[:2])]
    # a and b ran again, each alone; c and d, not run yet, formed the next group.
    assert len({committed["a"], committed["b"], committed["c"]}) == 3
    assert committed["c"] == committed["d"]
    runs = collections.Counter(e["job_id"] for e in logs if e["event"] == "job.started")
    assert [runs[job_id] for job_id in job_ids] == [2, 2, 2, 1, 1]
    row = conn.execute("SELECT job_id, attempts, exception FROM soleil.failed_jobs").fetchone()
    assert row is not None and row[:2] == (job_ids[2], 2)
    assert row[2].startswith("RuntimeError: after the insert")


def test_a_group_whose_commit_fails_runs_each_job_again_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    conn.execute("CREATE TABLE public.deferred (key text UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    clash = InsertDeferred(key="clash", twice=True)  # its duplicate fails the group's COMMIT
    job_ids = runner.dispatch_many([InsertDeferred(key="a"), clash, InsertDeferred(key="b")])
    with capture_logs() as logs:
        start_worker(transaction_group=10, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert rolled_back_groups(logs) == [("commit failed", job_ids)]
    # Each job ran twice; the group's run rolled back, so each wrote once, in attempt 1.
    assert sorted(effects(conn)) == ["a:1", "b:1"]
    assert scalar(conn, "SELECT count(*) FROM public.deferred") == 2
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (job_ids[1],))
    assert exception.startswith("UniqueViolation"), exception
    assert count_failed(conn) == 1


def test_an_abandoned_job_gives_back_the_jobs_grouped_before_it(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # "stuck" sleeps past its timeout and grace: the worker terminates its
    # backend, which rolls back "a" and "b" with it; they must run again.
    job_ids = runner.dispatch_many(
        [InsertRow(key="a"), InsertRow(key="b"), InsertRow(key="stuck", sleep=2.0)]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=10, timeout=0.3, timeout_grace=0.2, **GROUPED)
        [stuck_thread] = [executor.thread for executor in worker.executors]
        wait_for(lambda: count_jobs(conn) == 0, what="the abandoned job's outcome and the others' reruns")
    assert rolled_back_groups(logs) == [("abandoned", job_ids[:2])]
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs")
    assert exception.startswith("JobTimeout") and "abandoned" in exception, exception
    assert sorted(effects(conn)) == ["a", "b"]
    # The stuck thread wakes up after 2 s; nothing it does may run or commit again.
    wait_for(lambda: not stuck_thread.is_alive(), what="the abandoned thread to end")
    assert sorted(effects(conn)) == ["a", "b"]
    assert count_jobs(conn) == 0


def test_an_abandon_landing_before_a_groups_commit_leaves_each_write_once(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trigger is white-box, what is checked is not. b has joined a's group and
    # returned; before the group's COMMIT goes out, b's timeout and grace pass and
    # the worker abandons b. The backend's termination is held back until that
    # COMMIT was tried (as when the pool is short of connections), so only the
    # executor can keep b's write from committing without b's deletion: b runs
    # again after its timeout, and would write twice.
    abandoned, commit_tried = threading.Event(), threading.Event()
    group_goes_on, commit, abandon = Executor._group_goes_on, Executor._commit, Executor.abandon

    def goes_on_once_abandoned(self: Executor, conn: psycopg.Connection[Any]) -> bool:
        goes_on = group_goes_on(self, conn)
        if len(self._group) == 2:
            abandoned.wait(10)
        return goes_on

    def commit_then_tell(self: Executor, conn: psycopg.Connection[Any]) -> None:
        last = len(self._group) == 2
        try:
            commit(self, conn)
        finally:
            if last:
                commit_tried.set()

    def abandon_before_the_commit(self: Executor, *args: Any) -> Any:
        taken = abandon(self, *args)
        abandoned.set()
        commit_tried.wait(10)
        return taken

    monkeypatch.setattr(Executor, "_group_goes_on", goes_on_once_abandoned)
    monkeypatch.setattr(Executor, "_commit", commit_then_tell)
    monkeypatch.setattr(Executor, "abandon", abandon_before_the_commit)
    job_ids = runner.dispatch_many([InsertRow(key="a"), InsertRow(key="b")])
    with capture_logs() as logs:
        worker = start_worker(transaction_group=2, timeout=0.3, timeout_grace=0.2, tries=2, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="a to run again and b to be retried")
        worker.stop(timeout=10)
    assert commit_tried.is_set(), "the abandon did not land before the group's COMMIT"
    assert rolled_back_groups(logs) == [("abandoned", job_ids[:1])]
    assert sorted(effects(conn)) == ["a", "b"]
    assert count_failed(conn) == 0


def test_a_hard_stop_ends_a_running_groups_transaction_and_gives_every_job_back(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # "held" joins a's group with b and c behind it, all fenced by one lock, and
    # holds the transaction open past the stop grace. The worker must end that
    # transaction, not wait for the handler, to give the four jobs back.
    HOLD_RELEASED.clear()
    job_ids = runner.dispatch_many(
        [InsertRow(key="a"), InsertThenHold(key="held"), InsertRow(key="b"), InsertRow(key="c")]
    )
    try:
        worker = start_worker(transaction_group=10, stop_grace=0.3, **GROUPED)
        [thread] = [executor.thread for executor in worker.executors]
        wait_for(lambda: running(worker) == job_ids[1], what="held to run")
        worker.stop(timeout=10)
        assert worker.join(0), "the stop waited for the held transaction"
        assert worker.hard_stopped
        rows = conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs ORDER BY id").fetchall()
        # a and held ran (attempt counted); b and c had not started (attempt given back).
        assert rows == [
            (job_ids[0], 1, None),
            (job_ids[1], 1, None),
            (job_ids[2], 0, None),
            (job_ids[3], 0, None),
        ]
        assert effects(conn) == [], "the group's writes rolled back"
    finally:
        HOLD_RELEASED.set()
    wait_for(lambda: not thread.is_alive(), what="the held handler to return")
    assert effects(conn) == [] and count_jobs(conn) == 4, "the given-up thread wrote nothing more"


def test_a_hard_stop_while_a_transactional_job_waits_for_a_connection_keeps_it_from_starting(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # White-box trigger: the executor waits for a pooled connection (the pool is
    # short) until the hard stop has given it up, with no backend to terminate yet.
    # It must not fence the job afterwards: that would lock the row the stop gives
    # back, and the stop would wait for the handler.
    HOLD_RELEASED.clear()
    worker = start_worker(stop_grace=0.3, concurrency=1)
    [executor] = worker.executors
    getconn = worker.pool.getconn

    def getconn_once_given_up(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is executor.thread:
            wait_for(lambda: executor.abandoned, what="the hard stop to give the executor up")
        return getconn(*args, **kwargs)

    def unregister_once_the_executor_settled(conn: psycopg.Connection[Any], worker_id: int) -> None:
        # Whatever it does next (fence the job, or give up) is done before the
        # stop gives the job back.
        wait_for(lambda: executor.current is None or executor._opened is not None, what="the executor")
        unregister(conn, worker_id)

    unregister = lease.unregister
    monkeypatch.setattr(worker.pool, "getconn", getconn_once_given_up)
    monkeypatch.setattr(lease, "unregister", unregister_once_the_executor_settled)
    job_id = runner.dispatch(InsertThenHold(key="held"))
    try:
        wait_for(lambda: running(worker) == job_id, what="the job to start")
        worker.stop(timeout=10)
        assert worker.join(0), "the stop waited for the held transaction"
        # Its handler never ran: it goes back with its try given back.
        rows = conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall()
        assert rows == [(job_id, 0, None)]
    finally:
        HOLD_RELEASED.set()
    wait_for(lambda: not executor.thread.is_alive(), what="the given-up executor to end")
    assert effects(conn) == [] and count_jobs(conn) == 1, "the handler never ran"


def test_a_handler_ending_the_transaction_itself_sends_its_group_back(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Its ROLLBACK statement undoes the jobs grouped before it: they run again alone.
    job_ids = runner.dispatch_many(
        [InsertTxid(key="a"), InsertTxid(key="b"), RollsBackItself(), InsertTxid(key="c")]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=10, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    assert sorted(transaction_of(conn)) == ["a", "b", "c"]
    assert rolled_back_groups(logs) == [(f"job {job_ids[2]} failed", job_ids[:2])]
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (job_ids[2],))
    assert "ended the job's own transaction" in exception, exception
    assert scalar(conn, "SELECT sum(completed) FROM soleil.queue_stats") == 3


def test_a_handler_committing_the_group_itself_completes_the_jobs_before_it(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Its COMMIT statement commits what a and b wrote: they are done and must not
    # run again. Its own writes are committed too, so it is gone, as it would be alone.
    job_ids = runner.dispatch_many(
        [InsertTxid(key="a"), InsertTxid(key="b"), CommitsItself(key="x"), InsertTxid(key="c")]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=10, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    committed = transaction_of(conn)
    assert sorted(committed) == ["a", "b", "c", "x"]
    assert committed["a"] == committed["b"] == committed["x"] != committed["c"]
    runs = collections.Counter(e["job_id"] for e in logs if e["event"] == "job.started")
    assert [runs[job_id] for job_id in job_ids] == [1, 1, 1, 1]
    assert rolled_back_groups(logs) == []
    assert count_failed(conn) == 0
    assert scalar(conn, "SELECT sum(completed) FROM soleil.queue_stats") == 3


def test_a_job_class_that_does_not_share_its_transaction_commits_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many(
        [
            InsertTxid(key="a"),
            InsertTxid(key="b"),
            InsertTxidAlone(key="alone"),
            InsertTxid(key="c"),
            InsertTxid(key="d"),
        ]
    )
    start_worker(transaction_group=10, **GROUPED)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    committed = transaction_of(conn)
    assert committed["a"] == committed["b"] != committed["alone"] != committed["c"] == committed["d"]


def test_jobs_that_joined_an_abandoned_jobs_group_run_without_waiting_for_its_thread(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # "stuck" joins x's group with a and b behind it; abandoned, its backend is
    # terminated: x runs again alone, a and b go to the replacement executor.
    job_ids = runner.dispatch_many(
        [InsertRow(key="x"), InsertRow(key="stuck", sleep=4.0), InsertRow(key="a"), InsertRow(key="b")]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=10, timeout=0.3, timeout_grace=0.2, **GROUPED)
        [stuck_thread] = [executor.thread for executor in worker.executors]
        wait_for(lambda: count_failed(conn) == 1, what="stuck to be abandoned")
        wait_for(lambda: sorted(effects(conn)) == ["a", "b", "x"], timeout=2.0, what="x, a and b to run")
        assert stuck_thread.is_alive(), "the jobs after it did not wait for its thread"
    assert rolled_back_groups(logs) == [("abandoned", job_ids[:1])]
    wait_for(lambda: not stuck_thread.is_alive(), what="the abandoned thread to end")
    worker.stop(timeout=10)
    assert not worker.hard_stopped and count_jobs(conn) == 0


def test_a_handler_deallocating_then_committing_does_not_commit_its_group_twice(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Groups of 2: a and b first (their COMMIT deletes b's joined row), then c and x.
    runner.dispatch_many(
        [
            InsertTxid(key="a"),
            InsertTxid(key="b"),
            InsertTxid(key="c"),
            CommitsItself(key="x", deallocate=True),
        ]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=2, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    assert collections.Counter(key.split(":")[0] for key in effects(conn)) == {"a": 1, "b": 1, "c": 1, "x": 1}
    assert rolled_back_groups(logs) == [] and count_failed(conn) == 0


def test_a_handler_deallocating_in_a_group_does_not_fail_its_commit(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Groups of 2: a and b first, then d unprepares what Soleil prepared on the
    # connection meanwhile, e joins its group, and the group commits.
    runner.dispatch_many(
        [InsertRow(key="a"), InsertRow(key="b"), Deallocates(key="d"), InsertRow(key="e"), InsertRow(key="f")]
    )
    with capture_logs() as logs:
        worker = start_worker(transaction_group=2, **GROUPED)
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    assert sorted(effects(conn)) == ["a", "b", "d", "e", "f"]
    assert rolled_back_groups(logs) == [] and count_failed(conn) == 0


def test_a_job_whose_lease_was_lost_does_not_roll_back_the_jobs_before_it(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # While s runs, "lost" stops being this worker's attempt (as after a rescue).
    job_ids = runner.dispatch_many([InsertRow(key="s", sleep=1.0), InsertRow(key="a"), InsertRow(key="lost")])
    with capture_logs() as logs:
        worker = start_worker(transaction_group=10, **GROUPED)
        wait_for(lambda: worker.processed == 0 and worker.running == 3, what="s to start")
        conn.execute("UPDATE soleil.jobs SET attempts = attempts + 1 WHERE id = %s", (job_ids[2],))
        wait_for(lambda: sorted(effects(conn)) == ["a", "s"], what="s and a to commit")
        # "lost" starts alone after their COMMIT: a stop before that would hand it back.
        wait_for(lambda: any(e["event"] == "job.lease_lost" for e in logs), what="lost to run alone")
        worker.stop(timeout=10)
    runs = collections.Counter(e["job_id"] for e in logs if e["event"] == "job.started")
    assert [runs[job_id] for job_id in job_ids] == [1, 1, 1]
    assert rolled_back_groups(logs) == []
    assert [e["job_id"] for e in logs if e["event"] == "job.lease_lost"] == [job_ids[2]]


def test_jobs_waiting_behind_a_slow_first_job_go_to_an_idle_executor(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([InsertRow(key="slow", sleep=3.0)] + [InsertRow(key=f"k{i}") for i in range(8)])
    started = time.monotonic()
    worker = start_worker(transaction_group=10, concurrency=2, prefetch=40, completion_interval=0.05)
    wait_for(lambda: len([k for k in effects(conn) if k.startswith("k")]) == 8, what="the quick jobs")
    assert time.monotonic() - started < 2.5, "the quick jobs waited for the slow one"
    worker.stop(timeout=10)


def test_jobs_that_cannot_join_a_group_send_it_back_to_run_alone(
    runner: Runner, conn: psycopg.Connection[Any], database_url: str, start_worker: Any
) -> None:
    # While a runs, b's row gets locked elsewhere: joining a's group waits on it
    # until the job timeout's statement_timeout fails the join, aborting a's transaction.
    job_ids = runner.dispatch_many([InsertRow(key="a", sleep=0.5), InsertRow(key="b")])
    with psycopg.connect(database_url) as locker, capture_logs() as logs:
        worker = start_worker(transaction_group=10, timeout=1.0, **GROUPED)
        wait_for(lambda: worker.running == 2 and worker.processed == 0, what="a to start, b claimed")
        locker.execute("SELECT 1 FROM soleil.jobs WHERE id = %s FOR UPDATE", (job_ids[1],))
        wait_for(lambda: rolled_back_groups(logs), what="the group to be sent back")
        locker.rollback()
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    [(reason, jobs)] = rolled_back_groups(logs)
    assert jobs == job_ids[:1] and reason.startswith("the jobs joining failed"), reason
    assert sorted(effects(conn)) == ["a", "b"]
    assert count_failed(conn) == 0
