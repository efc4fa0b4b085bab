"""Delayed jobs in front of ready ones: a higher priority's jobs that are not due
yet are stepped over by the claim, in order and without reading them one by one."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from soleil.runner import Runner, queries
from soleil.runner.claim import claim
from tests.apps.basic import Record
from tests.integration.test_claim import plan_nodes

DELAYED = 20_000


def test_due_jobs_of_every_priority_come_out_in_order_around_delayed_ones(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Record(tag="later")] * 3, delay=3600, priority=9)
    mid = runner.dispatch_many([Record(tag="mid")] * 2, priority=5)
    runner.dispatch_many([Record(tag="later")] * 3, delay=3600, priority=5)
    low = runner.dispatch_many([Record(tag="low")] * 2, priority=-1)

    order = [job.id for job in claim(conn, queues=["default"], limit=10, worker_id=1, default_tries=1)]

    assert order[:2] == mid or sorted(order[:2]) == mid
    assert sorted(order[2:]) == low
    assert claim(conn, queues=["default"], limit=10, worker_id=1, default_tries=1) == []


def test_a_claim_behind_many_delayed_higher_priority_jobs_reads_a_few_pages(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO soleil.jobs (queue, job, payload, priority, available_at)"
        " SELECT 'default', 'tests.record', '{}'::jsonb, 1, now() + interval '1 hour'"
        " FROM generate_series(1, %s)",
        (DELAYED,),
    )
    ready = runner.dispatch_many([Record(tag="ready")] * 2000)
    conn.execute("VACUUM ANALYZE soleil.jobs")
    params = {"queues": ["default"], "limit": 10, "worker_id": 1, "default_tries": 1}

    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.get("job_claim_available"), params
        ).fetchone()
    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
    picking = next(n for n in plan_nodes(plan) if n.get("Subplan Name") == "CTE picked")
    pages = picking["Shared Hit Blocks"] + picking["Shared Read Blocks"]
    # Reading the delayed jobs' index entries one by one took more than 100 pages.
    assert pages < 40, pages
    claimed = claim(conn, queues=["default"], limit=10, worker_id=1, default_tries=1)
    assert sorted(job.id for job in claimed) == ready[:10]
