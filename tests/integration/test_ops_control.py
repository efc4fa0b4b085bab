"""Pause, resume, restart and clear (soleil.runner.control) with real workers."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from soleil.runner import Runner, Worker, control
from tests.apps.basic import Record, Sleep
from tests.helpers import count_jobs, scalar, wait_for


def _ran(conn: psycopg.Connection[Any], tag: str) -> bool:
    return bool(scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = %s", (tag,)))


def _seconds_until(predicate: Any, what: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout=timeout, interval=0.01, what=what)
    return time.monotonic() - started


def _prove_a_is_not_claimed(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    """Queue a comes first in the worker's strict priority order: once b's job
    ran, a's job would have run before it unless a is paused."""
    runner.dispatch(Record(tag="a"), queue="a")
    runner.dispatch(Record(tag="b"), queue="b")
    wait_for(lambda: _ran(conn, "b"), what="the job of queue b")
    assert not _ran(conn, "a")
    assert scalar(conn, "SELECT reserved_by FROM soleil.jobs WHERE queue = 'a'") is None


def test_pause_and_resume_take_effect_within_a_second(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker: Worker = start_worker("a,b")
    control.pause(runner, "a")
    paused_in = _seconds_until(lambda: worker.paused_queues == {"a"}, "the worker to pause a")
    assert paused_in < 1.0
    _prove_a_is_not_claimed(runner, conn)

    control.resume(runner, "a")
    resumed_in = _seconds_until(lambda: _ran(conn, "a"), "the job of queue a to run")
    assert resumed_in < 1.0
    assert worker.paused_queues == set()


def test_a_worker_whose_listener_missed_the_notify_obeys_the_table(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker: Worker = start_worker("a,b")
    # Written without a NOTIFY: only the once-a-second read can see it.
    conn.execute("INSERT INTO soleil.queue_control (queue, paused) VALUES ('a', true)")
    assert _seconds_until(lambda: worker.paused_queues == {"a"}, "the worker to pause a") < 2.0
    _prove_a_is_not_claimed(runner, conn)
    conn.execute("UPDATE soleil.queue_control SET paused = false WHERE queue = 'a'")
    assert _seconds_until(lambda: _ran(conn, "a"), "the job of queue a to run") < 2.0


def test_a_worker_started_while_a_queue_is_paused_does_not_claim_it(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    control.pause(runner, "a")
    worker: Worker = start_worker("a,b")
    assert worker.paused_queues == {"a"}
    _prove_a_is_not_claimed(runner, conn)


def test_restart_lets_the_running_job_finish_then_the_worker_exits_0(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch(Sleep(seconds=0.5, tag="long"))
    runner.dispatch(Record(tag="next"))
    worker: Worker = start_worker()
    wait_for(lambda: _ran(conn, "start:long"), what="the long job to start")
    control.restart(runner)
    assert worker.join(10), "the worker did not exit"
    assert (worker.exit_code, worker.stop_reason) == (0, "restart requested")
    assert _ran(conn, "end:long") and not _ran(conn, "next")
    assert count_jobs(conn) == 1  # the long job completed; the next one waits for the new worker
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0


def test_restart_stored_without_notify_still_stops_the_worker(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    worker: Worker = start_worker()
    conn.execute("INSERT INTO soleil.settings (key, value) VALUES ('restart_requested_at', 'by hand')")
    assert _seconds_until(lambda: worker.join(0), "the worker to exit") < 2.0
    assert worker.exit_code == 0


def test_a_worker_started_after_a_restart_keeps_working(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    control.restart(runner)
    worker: Worker = start_worker()
    read_before = worker._last_control
    wait_for(lambda: worker._last_control > read_before, what="a control read")
    runner.dispatch(Record(tag="after"))
    wait_for(lambda: _ran(conn, "after"), what="the job to run")
    assert not worker.stopping


def test_clear_deletes_every_job_of_one_queue_only(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(25)])
    runner.dispatch(Record(tag="later"), delay=600)
    runner.dispatch(Record(tag="other"), queue="other")
    conn.execute("UPDATE soleil.jobs SET reserved_by = 99, reserved_at = now() WHERE id = 1")
    chunks: list[int] = []
    assert control.clear(runner, "default", chunk_size=10, progress=chunks.append) == 26
    assert chunks == [10, 10, 6]
    assert count_jobs(conn) == 1 and count_jobs(conn, "queue = 'other'") == 1
