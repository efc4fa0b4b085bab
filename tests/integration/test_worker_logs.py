"""The worker's log events carry what an operator greps for: job id, queue,
name, attempt and duration."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import psycopg
from structlog.testing import capture_logs

from soleil.runner import Runner
from tests.apps.basic import Flaky, LogsFromHandler, Record
from tests.apps.lifecycle import GivesUp
from tests.helpers import count_jobs, wait_for


def test_job_events_name_the_job_its_attempt_and_duration(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    record = runner.dispatch(Record(tag="logged"))
    flaky = runner.dispatch(Flaky(succeed_on=2))
    doomed = runner.dispatch(GivesUp())
    with capture_logs() as logs:
        worker = start_worker()
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    events: dict[tuple[str, int | None], list[MutableMapping[str, Any]]] = {}
    for entry in logs:
        events.setdefault((entry["event"], entry.get("job_id")), []).append(entry)

    [started] = events["job.started", record]
    assert (started["queue"], started["job"], started["attempt"]) == ("default", "tests.record", 1)
    [completed] = events["job.completed", record]
    assert completed["duration_ms"] >= 0 and completed["attempt"] == 1

    [retrying] = events["job.retrying", flaky]
    assert retrying["attempt"] == 1 and retrying["max_attempts"] == 3
    assert retrying["error"] == "RuntimeError: flaky failure on attempt 1"
    assert "retry_in" in retrying and "duration_ms" in retrying
    assert [e["attempt"] for e in events["job.started", flaky]] == [1, 2]
    assert [e["attempt"] for e in events["job.completed", flaky]] == [2]

    [failed] = events["job.failed", doomed]
    assert failed["job"] == "tests.gives_up" and failed["attempt"] == 1
    assert failed["error"] == "NotWorthIt: card declined"
    assert len(failed["failed_uuid"]) == 36 and "duration_ms" in failed
    assert failed["log_level"] == "error"
    assert any(e["event"] == "worker.started" for e in logs)
    assert any(e["event"] == "worker.stopped" and e["exit_code"] == 0 for e in logs)


def test_a_handlers_own_events_carry_its_job(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(LogsFromHandler())
    with capture_logs() as logs:
        worker = start_worker()
        wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
        worker.stop(timeout=10)
    [event] = [e for e in logs if e["event"] == "rooms.checked"]
    assert event == {
        "event": "rooms.checked",
        "free": 2,
        "job_id": job_id,
        "queue": "default",
        "job": "tests.logs_from_handler",
        "attempt": 1,
        "log_level": "info",
    }
