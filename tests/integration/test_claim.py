"""The claim statement: its plan with a large backlog, its concurrency safety, and
the order it hands jobs out in."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
from psycopg import sql

from soleil.runner import Runner
from soleil.runner.claim import claim, claim_notified
from tests.apps.basic import Record
from tests.helpers import nested_plans, scalar

BACKLOG = 1_000_000


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += plan_nodes(child)
    return nodes


def test_the_claim_is_an_index_scan_with_a_million_queued_jobs(conn: psycopg.Connection[Any]) -> None:
    # Load fast without changing what the planner sees: no WAL for this throwaway
    # database's table, and the indexes built once after the load, from their own
    # definitions, instead of maintained row by row.
    definitions = [
        row[0]
        for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'soleil' AND tablename = 'jobs'"
            " AND indexname <> 'jobs_pkey'"
        )
    ]
    with conn.transaction():
        conn.execute("ALTER TABLE soleil.jobs SET UNLOGGED")
        for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'soleil' AND tablename = 'jobs'"
            " AND indexname <> 'jobs_pkey'"
        ).fetchall():
            conn.execute(sql.SQL("DROP INDEX soleil.{}").format(sql.Identifier(name)))
        conn.execute(
            "INSERT INTO soleil.jobs (queue, job, payload, priority, available_at)"
            " SELECT CASE WHEN g %% 10 = 0 THEN 'low' ELSE 'default' END, 'tests.record', '{}'::jsonb,"
            "        g %% 3, now() - make_interval(secs => g %% 1000)"
            " FROM generate_series(1, %s) AS g",
            (BACKLOG,),
        )
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for definition in definitions:
            conn.execute(definition)
    conn.execute("ANALYZE soleil.jobs")
    # The plan that runs: the generic one soleil.claim_jobs keeps for the session.
    with nested_plans(conn) as plans, conn.transaction(force_rollback=True):
        claimed = claim(conn, queues=["default", "low"], limit=10, worker_id=1, default_tries=1)
    assert len(claimed) == 10
    assert {job.queue for job in claimed} == {"default"}
    assert {job.priority for job in claimed} == {2}
    # The generic plan's cost grows with the table; JIT compiling it cost 140 ms a claim.
    assert not [p for p in plans if "JIT" in p], "the claim was JIT-compiled"
    nodes = plan_nodes(claim_plan(plans))
    jobs_scans = [n for n in nodes if n.get("Relation Name") == "jobs"]
    described = json.dumps([(n["Node Type"], n.get("Index Name")) for n in nodes])
    assert not [n for n in jobs_scans if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], described
    assert any(n.get("Index Name") == "jobs_claim_idx" for n in jobs_scans), described
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], described


def claim_plan(plans: list[dict[str, Any]]) -> dict[str, Any]:
    """The claim's UPDATE among the plans auto_explain reported."""
    found: list[dict[str, Any]] = [
        p["Plan"] for p in plans if "UPDATE soleil.jobs" in p.get("Query Text", "")
    ]
    assert len(found) == 1, [p.get("Query Text") for p in plans]
    return found[0]


def test_two_connections_claiming_at_once_never_get_the_same_job(runner: Runner, database_url: str) -> None:
    total = 3000
    runner.dispatch_many([Record(tag=str(i)) for i in range(total)])
    got: dict[int, list[int]] = {1: [], 2: []}
    start = threading.Barrier(2)

    def claimer(worker_id: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as own:
            start.wait()
            while batch := claim(own, queues=["default"], limit=25, worker_id=worker_id, default_tries=1):
                got[worker_id] += [job.id for job in batch]

    threads = [threading.Thread(target=claimer, args=(worker_id,)) for worker_id in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert got[1] and got[2], "both connections should have claimed some jobs"
    assert not set(got[1]) & set(got[2])
    assert len(got[1]) + len(got[2]) == total
    with psycopg.connect(database_url) as check:
        held: dict[int, int] = dict(
            check.execute("SELECT reserved_by, count(*) FROM soleil.jobs GROUP BY 1").fetchall()
        )
    assert held == {1: len(got[1]), 2: len(got[2])}


def test_queues_are_claimed_in_strict_priority_order(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    b_ids = [runner.dispatch(Record(tag="b"), queue="b", priority=100) for _ in range(3)]
    a_ids = [runner.dispatch(Record(tag="a"), queue="a") for _ in range(4)]
    runner.dispatch(Record(tag="c"), queue="c")  # not listed: never claimed
    first = claim(conn, queues=["a", "b"], limit=3, worker_id=1, default_tries=1)
    assert {job.id for job in first} == set(a_ids[:3])
    # A batch comes back in claim order: executors start its jobs in that order.
    second = claim(conn, queues=["a", "b"], limit=3, worker_id=1, default_tries=1)
    assert [job.id for job in second] == [a_ids[3], *b_ids[:2]]
    third = claim(conn, queues=["a", "b"], limit=3, worker_id=1, default_tries=1)
    assert [job.id for job in third] == b_ids[2:]
    assert claim(conn, queues=["a", "b"], limit=3, worker_id=1, default_tries=1) == []


def test_higher_priority_first_then_oldest(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    low = runner.dispatch(Record(tag="low"), priority=-5)
    normal = [runner.dispatch(Record(tag="n")) for _ in range(2)]
    high = runner.dispatch(Record(tag="high"), priority=10)
    # One job per claim shows the order the claim takes them in.
    order = [claim(conn, queues=["default"], limit=1, worker_id=1, default_tries=1)[0].id for _ in range(4)]
    assert order == [high, *normal, low]


def test_attempts_count_at_reservation_with_the_effective_tries(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    from tests.apps.basic import Flaky

    own = runner.dispatch_many([Flaky()])[0]  # tries = 3 on the class
    default = runner.dispatch_many([Record()])[0]  # no tries: the worker's default applies
    claimed = {j.id: j for j in claim(conn, queues=["default"], limit=5, worker_id=7, default_tries=4)}
    assert (claimed[own].attempt, claimed[own].max_attempts) == (1, 3)
    assert (claimed[default].attempt, claimed[default].max_attempts) == (1, 4)
    rows = conn.execute("SELECT attempts, max_attempts, reserved_by FROM soleil.jobs ORDER BY id").fetchall()
    assert rows == [(1, 3, 7), (1, 4, 7)]
    assert scalar(conn, "SELECT count(*) FROM soleil.jobs WHERE reserved_at IS NULL") == 0
    # Reserved jobs are not claimed again.
    assert claim(conn, queues=["default"], limit=5, worker_id=8, default_tries=4) == []


def test_a_notified_job_is_claimed_by_its_key_and_nothing_else(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    first = runner.dispatch(Record(tag="first"))
    notified = runner.dispatch(Record(tag="notified"))
    assert first is not None and notified is not None
    [claimed] = claim_notified(conn, job_id=notified, queues=["default"], worker_id=7, default_tries=2)
    assert (claimed.id, claimed.attempt, claimed.max_attempts) == (notified, 1, 2)
    rows = conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs ORDER BY id").fetchall()
    assert rows == [(first, 0, None), (notified, 1, 7)]
    # Reserved now: a second worker notified of it gets nothing.
    assert claim_notified(conn, job_id=notified, queues=["default"], worker_id=8, default_tries=2) == []


def test_a_notified_job_is_not_claimed_outside_the_workers_queues_or_before_it_is_due(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    elsewhere = runner.dispatch(Record(), queue="paused")
    later = runner.dispatch(Record(), delay=60)
    for job_id in (elsewhere, later):
        assert job_id is not None
        assert claim_notified(conn, job_id=job_id, queues=["default"], worker_id=7, default_tries=1) == []
    assert scalar(conn, "SELECT count(*) FROM soleil.jobs WHERE reserved_by IS NULL") == 2


def test_a_notified_job_another_worker_is_claiming_is_skipped_without_waiting(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(Record())
    assert job_id is not None
    with psycopg.connect(database_url) as other:  # holds the row, as a claim in flight would
        other.execute("SELECT 1 FROM soleil.jobs WHERE id = %s FOR UPDATE", (job_id,))
        conn.execute("SET statement_timeout = '5s'")  # waiting would fail the test, not hang it
        assert claim_notified(conn, job_id=job_id, queues=["default"], worker_id=7, default_tries=1) == []
