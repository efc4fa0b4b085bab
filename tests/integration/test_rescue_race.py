"""Two rescuers and a claim interleaved: a job another rescuer freed and a live
worker claimed while this rescue was under way stays with that live worker.

PostgreSQL re-checks a row updated after the statement's snapshot against the
row's newest version (EvalPlanQual), but not the NOT EXISTS on soleil.workers,
which keeps reading the old snapshot. The test holds the first rescuer still
inside its statement, after its snapshot and before it reaches the job: a
row-level security policy on soleil.jobs, for the worker role only, waits on
an advisory lock the test holds when the scan meets an earlier orphan."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from soleil.runner import lease
from soleil.runner.claim import claim
from soleil.runner.grants import RoleNames, grant
from tests.conftest import ADMIN_URL
from tests.helpers import scalar, wait_for

GATE_LOCK = 20261129  # the advisory lock the first rescuer waits on, inside its scan
DEAD_WORKER = 900_000  # no row in soleil.workers: its jobs are orphans


@pytest.fixture
def worker_role(database_url: str) -> Iterator[str]:
    """The worker group role of `soleil-runner grant`, under a prefix of this test's own."""
    roles = RoleNames.with_prefix(f"soleil_t{uuid.uuid4().hex[:8]}_")
    with psycopg.connect(database_url, autocommit=True) as admin:
        try:
            grant(admin, roles)
            yield roles.worker
        finally:
            admin.execute(
                sql.SQL("DROP OWNED BY {}").format(sql.SQL(", ").join(map(sql.Identifier, roles.all())))
            )
            with psycopg.connect(ADMIN_URL, autocommit=True) as cluster:
                for role in roles.all():
                    cluster.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def orphan(conn: psycopg.Connection[Any], queue: str) -> int:
    """A job held by a worker whose row is gone, as a SIGKILLed worker's after its removal."""
    return int(
        scalar(
            conn,
            "INSERT INTO soleil.jobs (queue, job, payload, attempts, max_attempts, reserved_by, reserved_at)"
            " VALUES (%s, 'x', '{}', 1, 3, %s, now()) RETURNING id",
            (queue, DEAD_WORKER),
        )
    )


def gate_scans_at(conn: psycopg.Connection[Any], role: str, job_id: int) -> None:
    """Make `role`'s scans of soleil.jobs wait on GATE_LOCK when they reach `job_id`."""
    conn.execute(
        sql.SQL(
            "CREATE FUNCTION public.rescue_gate(job_id bigint) RETURNS boolean LANGUAGE plpgsql AS $$"
            " BEGIN IF job_id = {job} THEN PERFORM pg_advisory_xact_lock({lock}); END IF; RETURN true; END $$"
        ).format(job=sql.Literal(job_id), lock=sql.Literal(GATE_LOCK))
    )
    conn.execute("ALTER TABLE soleil.jobs ENABLE ROW LEVEL SECURITY")
    conn.execute(
        sql.SQL("CREATE POLICY rescue_gate ON soleil.jobs TO {} USING (public.rescue_gate(id))").format(
            sql.Identifier(role)
        )
    )


def waiting_at_gate(conn: psycopg.Connection[Any], pid: int) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory'"
            " FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        )
    )


@pytest.mark.parametrize(
    "registered", ["before", "after"], ids=["live-before-snapshot", "live-after-snapshot"]
)
def test_a_job_freed_and_claimed_by_a_live_worker_during_a_rescue_stays_with_it(
    database_url: str, conn: psycopg.Connection[Any], worker_role: str, registered: str
) -> None:
    live = lease.register(conn, ["default"], 1) if registered == "before" else None
    earlier = orphan(conn, "other")  # scanned first: the first rescuer waits there
    job = orphan(conn, "default")
    gate_scans_at(conn, worker_role, earlier)

    with (
        psycopg.connect(database_url, autocommit=True) as gate,
        psycopg.connect(database_url, autocommit=True) as first,
        psycopg.connect(database_url, autocommit=True) as second,
    ):
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        first.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(worker_role)))
        first_pid = first.info.backend_pid
        outcome: dict[str, Any] = {}

        def first_rescue() -> None:
            try:
                outcome["rescued"] = lease.rescue(first, healthy_seconds=3600.0)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=first_rescue, name="first-rescuer")
        thread.start()
        try:
            # The first rescuer has its snapshot (the job held by the dead worker)
            # and waits in its scan, before the job.
            wait_for(
                lambda: waiting_at_gate(conn, first_pid), what="the first rescuer to wait inside its scan"
            )
            assert lease.rescue(second, healthy_seconds=3600.0) == 2, "the second rescuer frees both orphans"
            if live is None:
                live = lease.register(second, ["default"], 1)
            [claimed] = claim(second, queues=["default"], limit=1, worker_id=live, default_tries=3)
            assert claimed.id == job
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
            thread.join(timeout=30)
        assert not thread.is_alive(), "the first rescue did not finish"
        assert "error" not in outcome, outcome.get("error")

    held = conn.execute("SELECT reserved_by, attempts FROM soleil.jobs WHERE id = %s", (job,)).fetchone()
    assert held == (live, 2), "the live worker's job was taken from it by the first rescuer"
    assert outcome["rescued"] == 0
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (live,)) == 1
