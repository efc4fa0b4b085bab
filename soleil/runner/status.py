"""What `soleil-runner status` and `monitor` report: per-queue depth and
throughput (from soleil.queue_stats, written by workers once per completion
batch), and the registered workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from soleil.runner import db, queries
from soleil.runner.names import validate_queue

if TYPE_CHECKING:
    from soleil.runner.runner import Runner


@dataclass(frozen=True)
class QueueStatus:
    queue: str
    ready: int
    delayed: int
    reserved: int
    failed: int
    oldest_ready_age_s: float | None
    completed_1m: int
    failed_1m: int
    completed_1h: int
    failed_1h: int
    avg_runtime_ms: float | None  # last hour
    avg_wait_ms: float | None  # last hour, from available to started
    paused: bool


@dataclass(frozen=True)
class WorkerStatus:
    id: int
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    started_at: datetime
    heartbeat_age_s: float
    lease_s: float | None  # its own: silent for longer, it is declared dead (None: older code)
    paused: list[str]  # those of its queues that are paused


@dataclass(frozen=True)
class Status:
    database: str  # where, never with the password
    queues: list[QueueStatus]
    workers: list[WorkerStatus]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for worker in data["workers"]:
            worker["started_at"] = worker["started_at"].isoformat()
        return data


def snapshot(runner: Runner) -> Status:
    with runner.connection() as conn:
        queues = [QueueStatus(*row) for row in conn.execute(queries.get("status_queues"))]
        workers = [WorkerStatus(*row) for row in conn.execute(queries.get("status_workers"))]
    return Status(database=db.describe(runner.database_url), queues=queues, workers=workers)


def ready_counts(runner: Runner, queues: list[str]) -> dict[str, int]:
    """Ready jobs per queue, for `monitor`."""
    names = [validate_queue(q) for q in queues]
    with runner.connection() as conn:
        rows = conn.execute(queries.get("status_ready_counts"), {"queues": names}).fetchall()
    return {queue: int(ready) for queue, ready in rows}


@dataclass(frozen=True)
class Busy:
    queue: str
    ready: int
    limit: int


def busy_queues(runner: Runner, limits: dict[str, int]) -> tuple[dict[str, int], list[Busy]]:
    """Ready counts of the queues, and those above their limit."""
    counts = ready_counts(runner, list(limits))
    return counts, [Busy(q, counts[q], limit) for q, limit in limits.items() if counts[q] > limit]


def job_count(runner: Runner, queue: str) -> int:
    """Every job of a queue: ready, delayed and reserved."""
    with runner.connection() as conn:
        row = conn.execute(queries.get("status_queue_job_count"), {"queue": validate_queue(queue)}).fetchone()
    return int(row[0]) if row else 0
