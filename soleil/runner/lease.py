"""Leases: a reserved job belongs to a live worker, and a worker is live while
it heartbeats. Every worker also rescues: it removes workers silent for longer
than their own lease and puts their jobs back in their queues.

The heartbeat is sent from the worker's main loop, not from a side thread, so a
wedged loop stops heartbeating and its jobs come back (a side thread would
only prove that the process exists).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg
import structlog

from soleil.runner import queries
from soleil.runner.options import WorkerOptions

log = structlog.get_logger("soleil.lease")

# The lease of a worker with the default --heartbeat.
DEFAULT_LEASE_SECONDS = WorkerOptions().lease_seconds


def register(
    conn: psycopg.Connection[Any],
    queues: list[str],
    concurrency: int,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> int:
    row = conn.execute(
        queries.get("worker_register"),
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "concurrency": concurrency,
            "lease_seconds": lease_seconds,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def heartbeat(
    conn: psycopg.Connection[Any],
    worker_id: int,
    queues: list[str],
    concurrency: int,
    running: int,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> bool:
    """Renew the lease. False when the worker had been declared dead meanwhile."""
    row = conn.execute(
        queries.get("worker_heartbeat"),
        {
            "id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "concurrency": concurrency,
            "running": running,
            "lease_seconds": lease_seconds,
        },
    ).fetchone()
    return not (row is not None and row[0])


def rescue(
    conn: psycopg.Connection[Any], healthy_seconds: float, own_lease: float = DEFAULT_LEASE_SECONDS
) -> int:
    """Remove silent workers and requeue the jobs nobody holds; returns how many.
    `healthy_seconds`: how long the caller has been heartbeating without a break;
    workers with a longer lease are not judged yet (worker_remove_dead).
    `own_lease`: the caller's, for workers that wrote none (older code)."""
    with conn.transaction():
        dead = conn.execute(
            queries.get("worker_remove_dead"), {"healthy_seconds": healthy_seconds, "own_lease": own_lease}
        ).fetchall()
        for worker_id, host, pid in dead:
            log.warning("worker.lost", lost_worker_id=worker_id, host=host, pid=pid)
        # Two statements: the second re-checks each locked row's holder against a
        # snapshot taken after the lock (job_lock_orphans says why).
        locked = [int(row[0]) for row in conn.execute(queries.get("job_lock_orphans"))]
        rescued = (
            conn.execute(queries.get("job_rescue_orphans"), {"ids": locked}).fetchall() if locked else []
        )
    total = 0
    for queue, count, _ in rescued:
        total += int(count)
        log.warning("job.rescued", queue=queue, jobs=int(count))
    return total


def unregister(conn: psycopg.Connection[Any], worker_id: int) -> None:
    conn.execute(queries.get("worker_unregister"), {"id": worker_id})
