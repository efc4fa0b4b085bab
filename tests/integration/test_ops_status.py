"""status.snapshot and busy_queues: numbers a worker's real runs produce."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner, control, status
from tests.apps.basic import Doomed, Record
from tests.helpers import count_failed, wait_for


def _queue(snapshot: status.Status, name: str) -> status.QueueStatus:
    return next(q for q in snapshot.queues if q.queue == name)


def test_status_counts_jobs_by_state_and_throughput_from_queue_stats(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(4)])
    runner.dispatch(Doomed())
    worker = start_worker(concurrency=2)
    wait_for(lambda: count_failed(conn) == 1, what="the doomed job to fail")

    def counted() -> status.Status | None:
        snapshot = status.snapshot(runner)
        default = _queue(snapshot, "default")
        return snapshot if (default.completed_1m, default.failed_1m) == (4, 1) else None

    done = wait_for(counted, what="the completion batches to reach queue_stats")
    assert done is not None
    default = _queue(done, "default")
    assert (default.failed, default.failed_1m, default.completed_1h, default.failed_1h) == (1, 1, 4, 1)
    assert default.avg_runtime_ms is not None and default.avg_runtime_ms > 0
    assert default.avg_wait_ms is not None and default.avg_wait_ms >= 0
    (me,) = done.workers
    assert (me.id, me.queues, me.concurrency, me.paused) == (worker.id, ["default"], 2, [])

    for _ in range(3):
        runner.dispatch(Record(tag="x"), queue="mail")
    runner.dispatch(Record(tag="later"), queue="mail", delay=600)
    conn.execute(
        "UPDATE soleil.jobs SET reserved_by = 99, reserved_at = now()"
        " WHERE id = (SELECT min(id) FROM soleil.jobs WHERE queue = 'mail')"
    )
    control.pause(runner, "default")
    after = status.snapshot(runner)
    mail = _queue(after, "mail")
    assert (mail.ready, mail.delayed, mail.reserved, mail.failed, mail.paused) == (2, 1, 1, 0, False)
    assert mail.oldest_ready_age_s is not None and mail.oldest_ready_age_s >= 0
    assert (mail.completed_1m, mail.avg_runtime_ms) == (0, None)
    assert _queue(after, "default").paused and after.workers[0].paused == ["default"]
    assert "password" not in str(after.as_dict())


def test_status_never_shows_the_password(database_url: str) -> None:
    with Runner(database_url.replace("user=postgres", "user=postgres password=s3cr3t-pw")) as runner:
        snapshot = status.snapshot(runner)
    assert "s3cr3t" not in repr(snapshot) and snapshot.database.startswith("postgres@")


def test_busy_queues_compares_ready_counts_with_limits(runner: Runner) -> None:
    runner.dispatch_many([Record()] * 3)
    runner.dispatch(Record(), delay=600)  # delayed jobs are not ready
    counts, busy = status.busy_queues(runner, {"default": 2, "mail": 0})
    assert counts == {"default": 3, "mail": 0}
    assert busy == [status.Busy("default", 3, 2)]
    assert status.busy_queues(runner, {"default": 3})[1] == []
