"""The database server crashes (`pg_ctl restart -m immediate`: no shutdown
checkpoint, crash recovery on start) while workers process jobs.

Claims commit without waiting for their WAL flush, so a crash can lose the
newest claims: those jobs are claimed again and the first run's outcome is
fenced out. Promised and checked here: workers survive, every plain job runs at
least once, every transactional job's effect exists exactly once, nothing ends
in failed_jobs (tries to spare), nothing stays reserved."""

from __future__ import annotations

import psycopg
import pytest

from soleil.runner import Runner
from tests.apps.basic import InsertRow, Record
from tests.chaos.conftest import WorkerStarter
from tests.helpers import scalar, wait_for
from tests.pgcluster import Cluster

JOBS = 1_500


def _count(url: str, sql: str) -> int:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            return int(scalar(conn, sql))
    except psycopg.OperationalError:
        return -1  # the server is still recovering


@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_a_database_crash_loses_no_job_and_runs_no_effect_twice(
    cluster: Cluster, chaos_url: str, chaos_runner: Runner, spawn_worker: WorkerStarter
) -> None:
    plain = chaos_runner.dispatch_many([Record(tag=str(i)) for i in range(JOBS)])
    chaos_runner.dispatch_many([InsertRow(key=f"k{i}", sleep=0.001) for i in range(JOBS)])
    chaos_runner.close()  # its pooled connections die with the server
    workers = [spawn_worker("--concurrency", "4", "--tries", "5", "--heartbeat", "2") for _ in range(2)]

    remaining = "SELECT count(*) FROM soleil.jobs"
    wait_for(lambda: 0 <= _count(chaos_url, remaining) < 2 * JOBS * 0.8, timeout=60, what="work under way")
    cluster.restart(mode="immediate")
    wait_for(lambda: _count(chaos_url, remaining) == 0, timeout=100, interval=0.2, what="the queue to drain")

    with psycopg.connect(chaos_url, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM public.effects") == JOBS
        assert scalar(conn, "SELECT count(DISTINCT key) FROM public.effects") == JOBS
        ran = {row[0] for row in conn.execute("SELECT DISTINCT job_id FROM public.runs")}
        assert set(plain) <= ran, "every plain job ran at least once"
        assert scalar(conn, "SELECT count(*) FROM soleil.failed_jobs") == 0
    assert all(worker.poll() is None for worker in workers), "workers reconnect instead of exiting"
