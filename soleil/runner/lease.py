"""Leases: a reserved job belongs to a live worker, and a worker is live while
it heartbeats. Every worker also rescues: it removes workers silent for longer
than the lease and puts their jobs back in their queues.

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

log = structlog.get_logger("soleil.lease")


def register(conn: psycopg.Connection[Any], queues: list[str], concurrency: int) -> int:
    row = conn.execute(
        queries.get("worker_register"),
        {"host": socket.gethostname(), "pid": os.getpid(), "queues": queues, "concurrency": concurrency},
    ).fetchone()
    assert row is not None
    return int(row[0])


def heartbeat(
    conn: psycopg.Connection[Any], worker_id: int, queues: list[str], concurrency: int, running: int
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
        },
    ).fetchone()
    return not (row is not None and row[0])


def rescue(conn: psycopg.Connection[Any], lease_seconds: float) -> int:
    """Remove silent workers and requeue the jobs nobody holds; returns how many."""
    with conn.transaction():
        dead = conn.execute(queries.get("worker_remove_dead"), {"lease_seconds": lease_seconds}).fetchall()
        for worker_id, host, pid in dead:
            log.warning("worker.lost", lost_worker_id=worker_id, host=host, pid=pid)
        rescued = conn.execute(queries.get("job_rescue_orphans")).fetchall()
    total = 0
    for queue, count, _ in rescued:
        total += int(count)
        log.warning("job.rescued", queue=queue, jobs=int(count))
    return total


def unregister(conn: psycopg.Connection[Any], worker_id: int) -> None:
    conn.execute(queries.get("worker_unregister"), {"id": worker_id})
