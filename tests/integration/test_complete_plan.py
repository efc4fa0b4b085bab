"""The completion statement finds its rows by primary key: its cost must not grow
with the number of jobs the worker completed before (dead index entries)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg

from soleil.runner import Runner, queries
from soleil.runner.claim import claim
from tests.apps.basic import Record
from tests.integration.test_claim import plan_nodes


def test_a_completion_batch_reads_jobs_by_primary_key(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    runner.dispatch_many([Record(tag="x")] * 3000)
    conn.execute("VACUUM ANALYZE soleil.jobs")  # statistics: nothing reserved
    history = claim(conn, queues=["default"], limit=2500, worker_id=1, default_tries=1)
    conn.execute("DELETE FROM soleil.jobs WHERE id = ANY(%s)", ([j.id for j in history],))
    batch = claim(conn, queues=["default"], limit=100, worker_id=1, default_tries=1)
    params = {
        "worker_id": 1,
        "ids": [j.id for j in batch],
        "attempts": [j.attempt for j in batch],
        "stat_queues": ["default"],
        "stat_minutes": [datetime.now(UTC)],
        "stat_completed": [len(batch)],
        "stat_failed": [0],
        "stat_retried": [0],
        "stat_runtime_ms": [1.0],
        "stat_wait_ms": [1.0],
    }

    row = conn.execute("EXPLAIN (FORMAT JSON) " + queries.get("job_complete_many"), params).fetchone()

    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    indexes = {n.get("Index Name") for n in plan_nodes(plan) if n.get("Relation Name") == "jobs"}
    assert "jobs_reserved_by_idx" not in indexes, indexes
    assert conn.execute(queries.get("job_complete_many"), params).fetchone() == (len(batch),)
