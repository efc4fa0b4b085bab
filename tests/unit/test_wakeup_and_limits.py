"""When an idle worker looks again, and when it exits on its own: pure logic."""

from __future__ import annotations

import time

from soleil.runner import limits
from soleil.runner.options import WorkerOptions
from soleil.runner.wakeup import Wakeup, notified_job


def test_a_job_due_now_wakes_the_worker_to_claim() -> None:
    wakeup = Wakeup()
    wakeup.work_ready = False
    wakeup.job_notified(str(time.time()))
    assert wakeup.work_ready and wakeup.event.is_set()


def test_a_delayed_job_only_moves_the_next_wake_up_earlier() -> None:
    wakeup = Wakeup()
    wakeup.work_ready = False
    later, sooner = time.time() + 60, time.time() + 5
    wakeup.job_notified(str(later))
    assert not wakeup.work_ready and wakeup.next_due is not None
    assert abs(wakeup.next_due - later) < 0.01
    wakeup.event.clear()
    wakeup.job_notified(str(sooner))
    assert wakeup.event.is_set() and abs(wakeup.next_due - sooner) < 0.01
    wakeup.event.clear()
    wakeup.job_notified(str(later))  # later than what it already waits for: no wake-up
    assert not wakeup.event.is_set()
    due_in = wakeup.due_in()
    assert due_in is not None and 4 < due_in <= 5


def test_the_database_clock_offset_is_taken_at_the_round_trips_midpoint() -> None:
    wakeup = Wakeup()
    sent = time.time() - 0.2  # a 0.2 s round trip, the database 100 s ahead
    wakeup.learn_next_due(due_epoch=time.time() + 100 + 30, db_now=sent + 0.1 + 100, sent=sent)
    assert abs(wakeup.clock_offset - 100) < 0.02
    due_in = wakeup.due_in()
    assert due_in is not None and 29.9 < due_in < 30.1
    wakeup.learn_next_due(due_epoch=None, db_now=time.time(), sent=time.time())
    assert wakeup.due_in() is None


def test_a_late_look_up_reply_does_not_make_jobs_due_now_look_ahead() -> None:
    """One reply 300 ms late (a stalled VM) used to put the offset 150 ms off: every
    job due now looked 150 ms ahead, and an idle worker waited that long for each."""
    wakeup = Wakeup()
    sent = time.time() - 0.001  # a 1 ms round trip, the database 100 s ahead
    wakeup.learn_next_due(due_epoch=None, db_now=sent + 0.0005 + 100, sent=sent)
    sent = time.time() - 0.3  # the database read its clock at once; the reply took 300 ms
    wakeup.learn_next_due(due_epoch=None, db_now=sent + 100, sent=sent)
    assert abs(wakeup.clock_offset - 100) < 0.01
    wakeup.work_ready = False
    assert wakeup.job_notified(f"{time.time() + 100}:7")  # dispatched just now: due now
    assert wakeup.work_ready


def test_a_closer_look_up_or_a_clock_that_moved_replaces_the_offset() -> None:
    wakeup = Wakeup()
    sent = time.time() - 0.2  # a first estimate to within 0.1 s
    wakeup.learn_next_due(due_epoch=None, db_now=sent + 0.15 + 100, sent=sent)
    assert abs(wakeup.clock_offset - 100.05) < 0.01
    sent = time.time() - 0.002  # a closer one
    wakeup.learn_next_due(due_epoch=None, db_now=sent + 0.001 + 100, sent=sent)
    assert abs(wakeup.clock_offset - 100) < 0.005
    sent = time.time() - 0.2  # slower, but 5 s away from the estimate: the clock was stepped
    wakeup.learn_next_due(due_epoch=None, db_now=sent + 0.1 + 105, sent=sent)
    assert abs(wakeup.clock_offset - 105) < 0.02


def test_over_a_slow_link_the_offset_follows_a_clock_that_moved_less_than_the_round_trip() -> None:
    """A 40 ms step hides in a 120 ms round trip's error: the old estimate must age out,
    or jobs due now would look 40 ms ahead (past the 25 ms slack) until a record-low
    round trip came along, hours later."""
    wakeup = Wakeup()
    start = time.time()
    wakeup._learn_clock(db_now=start + 0.06 + 100, sent=start, received=start + 0.12)
    assert abs(wakeup.clock_offset - 100) < 0.001
    for look_up in range(1, 20):  # every 3 s, the database clock now 40 ms later
        sent = start + 3 * look_up
        wakeup._learn_clock(db_now=sent + 0.0625 + 100.04, sent=sent, received=sent + 0.125)
    assert abs(wakeup.clock_offset - 100.04) < 0.001


def test_a_notification_without_a_due_time_means_now() -> None:
    wakeup = Wakeup()
    wakeup.work_ready = False
    wakeup.job_notified("")
    assert wakeup.work_ready


def test_limits() -> None:
    assert limits.reached(WorkerOptions(), processed=10**6, running_seconds=10**6) is None
    assert limits.reached(WorkerOptions(max_jobs=3), 3, 0) == ("max jobs reached", None)
    assert limits.reached(WorkerOptions(max_jobs=3), 2, 0) is None
    assert limits.reached(WorkerOptions(max_time=5), 0, 5.0) == ("max time reached", None)
    assert limits.reached(WorkerOptions(memory_mb=1), 0, 0) == ("memory limit exceeded", limits.EXIT_MEMORY)
    assert limits.reached(WorkerOptions(memory_mb=10**6), 0, 0) is None
    assert limits.rss_mb() > 1


def test_a_notification_names_its_job_only_when_dispatched_alone() -> None:
    now = time.time()
    assert notified_job(f"{now}:42") == 42
    assert notified_job(str(now)) is None
    assert notified_job("0") is None and notified_job("") is None
    # Anyone who may connect may NOTIFY: nothing but a plain bigint names a job.
    for payload in ("0:²", "0:٣", "0:-1", "0:1e3", "0: 7", f"0:{2**63}", "0:" + "9" * 5000):
        assert notified_job(payload) is None, payload
    assert notified_job(f"0:{2**63 - 1}") == 2**63 - 1
    wakeup = Wakeup()
    wakeup.work_ready = False
    wakeup.job_notified(f"{now}:42")  # the due time still decides when to look
    assert wakeup.work_ready
    wakeup = Wakeup()
    assert not wakeup.job_notified(f"{now + 60}:43")
    assert wakeup.next_due is not None and abs(wakeup.next_due - (now + 60)) < 0.01
