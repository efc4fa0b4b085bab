"""Claiming: one statement reserves a batch of ready jobs for this worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from soleil.runner import prepared, queries


@dataclass(slots=True)
class ClaimedJob:
    id: int
    queue: str
    name: str
    payload: str
    priority: int
    attempt: int  # this attempt's number, counted at reservation
    max_attempts: int
    available_epoch: float  # database clock
    reserved_epoch: float  # database clock
    # To run in a transaction of its own, not in a transaction group: requeued
    # after its group's COMMIT failed, or of a class that does not share_transaction.
    solo: bool = False

    def log_fields(self) -> dict[str, object]:
        """The key-values every job.* log event carries."""
        return {"job_id": self.id, "queue": self.queue, "job": self.name, "attempt": self.attempt}

    @property
    def wait_ms(self) -> float:
        """How long the job waited between becoming due and being reserved."""
        return max(0.0, (self.reserved_epoch - self.available_epoch) * 1000.0)


def claim(
    conn: psycopg.Connection[Any],
    *,
    queues: list[str],
    limit: int,
    worker_id: int,
    default_tries: int,
) -> list[ClaimedJob]:
    cursor = conn.execute(
        queries.get("job_claim_available"),
        {"queues": queues, "limit": limit, "worker_id": worker_id, "default_tries": default_tries},
    )
    jobs = [ClaimedJob(*row) for row in cursor.fetchall()]
    # Executors start them in this order: the claim's (queues as listed, then
    # priority, then due time); the UPDATE returns them in primary-key order.
    position = {name: index for index, name in enumerate(queues)}
    jobs.sort(key=lambda job: (position[job.queue], -job.priority, job.available_epoch, job.id))
    return jobs


def claim_notified(
    conn: psycopg.Connection[Any], *, job_id: int, queues: list[str], worker_id: int, default_tries: int
) -> list[ClaimedJob]:
    """Reserve the one job a notification named, if it is still there for the taking.
    Sent through libpq directly (prepared.py): this is most of an idle worker's pickup."""
    result = _CLAIM_NOTIFIED.execute(
        conn, {"id": job_id, "queues": queues, "worker_id": worker_id, "default_tries": default_tries}
    )
    if not result.ntuples:
        return []
    encoding = prepared.text_encoding(conn)
    row = [(result.get_value(0, column) or b"").decode(encoding) for column in range(result.nfields)]
    job, queue, name, payload, priority, attempt, max_attempts, available, reserved = row
    claimed = ClaimedJob(
        int(job),
        queue,
        name,
        payload,
        int(priority),
        int(attempt),
        int(max_attempts),
        float(available),
        float(reserved),
    )
    return [claimed]


_CLAIM_NOTIFIED = prepared.Statement("job_claim_notified")


def next_due_epoch(conn: psycopg.Connection[Any], queues: list[str]) -> tuple[float | None, float]:
    """(epoch when the next waiting job is due or None, the database's now)."""
    row = conn.execute(queries.get("job_next_available_at"), {"queues": queues}).fetchone()
    assert row is not None
    return row[0], row[1]


def release_lost_claim(conn: psycopg.Connection[Any], worker_id: int) -> int:
    """Give back what a claim whose reply was lost reserved: every job still
    reserved for this worker, which must hold nothing else at that moment."""
    row = conn.execute(queries.get("job_release_lost_claim"), {"worker_id": worker_id}).fetchone()
    return int(row[0]) if row else 0


def release(conn: psycopg.Connection[Any], jobs: list[ClaimedJob], worker_id: int) -> int:
    """Give back claimed jobs that never started; their attempt is returned."""
    if not jobs:
        return 0
    row = conn.execute(
        queries.get("job_release_many"),
        {"ids": [j.id for j in jobs], "attempts": [j.attempt for j in jobs], "worker_id": worker_id},
    ).fetchone()
    return int(row[0]) if row else 0
