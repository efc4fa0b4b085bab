"""Queue control through the database: pause, resume, restart and clear.

Each signal is a durable row (soleil.queue_control, soleil.settings) and a
NOTIFY on `soleil:control`, committed together. Workers act on the NOTIFY at
once and re-read the rows every second (`read_state`), so a worker whose
listener missed the notification still obeys within a second or two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from soleil.runner import queries
from soleil.runner.chunks import DEFAULT_CHUNK_SIZE, Progress, check_chunk_size, run_chunks
from soleil.runner.names import validate_queue

if TYPE_CHECKING:
    from soleil.runner.runner import Runner


def pause(runner: Runner, queue: str) -> None:
    """Workers stop claiming from this queue (running jobs finish)."""
    _set_paused(runner, queue, True)


def resume(runner: Runner, queue: str) -> None:
    """Workers claim from this queue again."""
    _set_paused(runner, queue, False)


def _set_paused(runner: Runner, queue: str, paused: bool) -> None:
    with runner.connection() as conn:
        conn.execute(queries.get("queue_set_paused"), {"queue": validate_queue(queue), "paused": paused})


def restart(runner: Runner) -> str:
    """Every running worker exits 0 after its current jobs; returns the request's token."""
    with runner.connection() as conn:
        row = conn.execute(queries.get("restart_request")).fetchone()
    assert row is not None
    return str(row[0])


def clear(
    runner: Runner, queue: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None
) -> int:
    """Delete every job of a queue, running ones included; returns how many."""
    params = {"queue": validate_queue(queue), "limit": check_chunk_size(chunk_size)}
    return run_chunks(runner, "queue_clear_chunk", params, progress)


@dataclass(frozen=True)
class ControlState:
    """What a worker must obey, as stored in the database."""

    paused: frozenset[str]
    restart_token: str | None


def read_state(conn: psycopg.Connection[Any], queues: list[str]) -> ControlState:
    """The worker's once-a-second read (one small query, off the per-job path)."""
    row = conn.execute(queries.get("control_state"), {"queues": queues}).fetchone()
    assert row is not None
    return ControlState(paused=frozenset(row[0]), restart_token=row[1])
