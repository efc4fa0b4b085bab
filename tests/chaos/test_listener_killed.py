"""`pg_terminate_backend` on a worker's LISTEN connection: it re-subscribes, and
no wake-up waits longer than the poll interval."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from soleil.runner import Runner
from tests.chaos.conftest import WorkerStarter
from tests.chaos.measure import describe_ms, pickup_latencies, pickup_latency
from tests.conftest import Processes
from tests.helpers import scalar, wait_for

POLL_SECONDS = 10.0

LISTENER_PID = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE application_name = 'soleil-listener' AND datname = current_database()"
)


@pytest.mark.chaos
@pytest.mark.timeout(90)
def test_a_killed_listener_resubscribes_and_loses_no_wakeup(
    chaos_runner: Runner,
    chaos_conn: psycopg.Connection[Any],
    spawn_worker: WorkerStarter,
    processes: Processes,
) -> None:
    worker = spawn_worker("--sleep", str(POLL_SECONDS))
    old_pid = wait_for(lambda: scalar(chaos_conn, LISTENER_PID), what="the worker's listener")
    before = pickup_latencies(chaos_runner, chaos_conn, 5)

    assert scalar(chaos_conn, "SELECT pg_terminate_backend(%s)", (old_pid,)) is True
    # Dispatched at once: the notification may go to nobody. The worker must still
    # find the job within the poll interval (it looks again when it re-subscribes).
    right_after = pickup_latency(chaos_runner, chaos_conn, timeout=POLL_SECONDS + 5)

    new_pid = wait_for(lambda: scalar(chaos_conn, LISTENER_PID), timeout=10, what="a new listener")
    after = pickup_latencies(chaos_runner, chaos_conn, 5)
    print(
        f"\nlistener killed: pickup before {describe_ms(before)}; dispatched right after the kill: "
        f"{right_after * 1000:.1f} ms; after re-subscribing {describe_ms(after)}"
    )
    assert new_pid != old_pid
    assert right_after < POLL_SECONDS
    # Well under the poll interval: notifications, not polling, wake the worker again.
    assert max(after) < 1.0
    assert worker.poll() is None
    logs = processes.output(worker)[1]
    assert "listener.disconnected" in logs and "listener.reconnected" in logs
