"""Delayed jobs in front of ready ones: a higher priority's jobs that are not due
yet are stepped over by the claim, in order and without reading them one by one."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner
from soleil.runner.claim import claim
from tests.apps.basic import Record
from tests.helpers import nested_plans
from tests.integration.test_claim import claim_plan, plan_nodes

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
    with nested_plans(conn, analyze=True) as plans:
        claimed = claim(conn, queues=["default"], limit=10, worker_id=1, default_tries=1)
    picking = next(n for n in plan_nodes(claim_plan(plans)) if n.get("Subplan Name") == "CTE picked")
    pages = picking["Shared Hit Blocks"] + picking["Shared Read Blocks"]
    # Reading the delayed jobs' index entries one by one took more than 100 pages.
    assert pages < 40, pages
    assert sorted(job.id for job in claimed) == ready[:10]
