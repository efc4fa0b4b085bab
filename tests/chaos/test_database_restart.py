"""`pg_ctl restart -m fast` while workers process jobs: the workers ride it out."""

from __future__ import annotations

import statistics

import psycopg
import pytest
from psycopg import conninfo

from soleil.runner import Job, Runner
from tests.apps.basic import InsertRow, Record
from tests.chaos.conftest import WorkerStarter
from tests.chaos.measure import describe_ms, pickup_latencies
from tests.conftest import Processes
from tests.helpers import count_failed, count_jobs, scalar, wait_for
from tests.pgcluster import Cluster

JOBS = 3_000
SECRET = "Restart-S3cret"  # half plain, half transactional

LISTENERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'soleil-listener' AND datname = current_database()"
)


@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_workers_survive_a_database_restart_and_pick_up_fast_again(
    cluster: Cluster,
    chaos_runner: Runner,
    chaos_url: str,
    spawn_worker: WorkerStarter,
    processes: Processes,
) -> None:
    # The URL carries a password (trust auth ignores it): the outage's log lines must not show it.
    with_password = conninfo.make_conninfo(chaos_url, password=SECRET)
    # --sleep 30: after the restart, only a re-subscribed listener can explain fast pickups.
    workers = [spawn_worker("--concurrency", "4", "--sleep", "30", url=with_password) for _ in range(2)]
    with psycopg.connect(chaos_url, autocommit=True) as conn:
        wait_for(lambda: scalar(conn, LISTENERS) == 2, timeout=30, what="both workers to listen")
        before = pickup_latencies(chaos_runner, conn, 10)
        conn.execute("TRUNCATE public.runs")

    jobs: list[Job] = []
    for i in range(JOBS // 2):
        jobs += [Record(tag=str(i)), InsertRow(key=f"k{i}", sleep=0.002)]
    ids = chaos_runner.dispatch_many(jobs)
    with psycopg.connect(chaos_url, autocommit=True) as conn:
        wait_for(lambda: count_jobs(conn) < JOBS * 3 // 4, timeout=60, what="work to be under way")

    cluster.restart(mode="fast")

    with psycopg.connect(chaos_url, autocommit=True) as conn:
        remaining_at_restart = count_jobs(conn)
        wait_for(lambda: count_jobs(conn) == 0, timeout=90, interval=0.2, what="every job to complete")
        assert [w.poll() for w in workers] == [None, None], "a worker exited"
        ran = {row[0] for row in conn.execute("SELECT DISTINCT job_id FROM public.runs")}
        assert ran == set(ids[0::2]), "every plain job ran at least once"
        assert scalar(conn, "SELECT count(DISTINCT key) FROM public.effects") == JOBS // 2
        assert scalar(conn, "SELECT count(*) FROM public.effects") == JOBS // 2
        assert count_failed(conn) == 0

        wait_for(lambda: scalar(conn, LISTENERS) == 2, timeout=30, what="both listeners to re-subscribe")
        conn.execute("TRUNCATE public.runs")
        latencies = pickup_latencies(chaos_runner, conn, 20)
    print(
        f"\ndatabase restart with {remaining_at_restart} jobs left; idle pickup before: "
        f"{describe_ms(before)}; after: {describe_ms(latencies)}"
    )
    # Under 10 ms on a quiet machine; on a loaded one, back to what it was before.
    assert statistics.median(latencies) < max(0.010, 2 * statistics.median(before))
    logs = "".join(processes.output(w)[1] for w in workers)
    assert "listener.reconnected" in logs
    assert "database.unavailable" in logs or "listener.disconnected" in logs
    assert SECRET not in logs
