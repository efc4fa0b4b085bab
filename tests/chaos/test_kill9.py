"""Workers SIGKILLed at random while 5,000 jobs flow: nothing is lost, and only
the runs a kill interrupted happen twice."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from soleil.runner import Runner
from tests.apps.basic import InsertRow, Record
from tests.chaos.conftest import WorkerStarter
from tests.chaos.monkey import Monkey
from tests.helpers import count_failed, count_jobs, scalar

JOBS = 5_000
WORKERS = 3
CONCURRENCY = ("--concurrency", "4")


@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_kill9_transactional_jobs_commit_their_effect_exactly_once(
    chaos_runner: Runner, chaos_conn: psycopg.Connection[Any], spawn_worker: WorkerStarter
) -> None:
    chaos_runner.dispatch_many([InsertRow(key=f"k{i}", sleep=0.002) for i in range(JOBS)])
    monkey = Monkey(lambda: spawn_worker(*CONCURRENCY), [spawn_worker(*CONCURRENCY) for _ in range(WORKERS)])

    took = monkey.run_until(lambda: count_jobs(chaos_conn) == 0, timeout=110)

    print(f"\nkill -9 (transactional): {JOBS} jobs in {took:.1f} s, {len(monkey.killed_pids)} workers killed")
    assert len(monkey.killed_pids) >= 2, "the run was too short to inflict any fault"
    assert scalar(chaos_conn, "SELECT count(*) FROM public.effects") == JOBS
    assert scalar(chaos_conn, "SELECT count(DISTINCT key) FROM public.effects") == JOBS
    assert count_jobs(chaos_conn) == 0
    assert count_failed(chaos_conn) == 0
    assert len(monkey.alive()) == WORKERS


@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_kill9_plain_jobs_run_at_least_once_and_twice_only_after_a_kill(
    chaos_runner: Runner, chaos_conn: psycopg.Connection[Any], spawn_worker: WorkerStarter
) -> None:
    ids = chaos_runner.dispatch_many([Record(tag=str(i)) for i in range(JOBS)])
    # A 4 s lease: a live worker starved of CPU on this shared machine must not lose
    # its jobs to the rescuer, or a job would run twice without a kill.
    args = (*CONCURRENCY, "--heartbeat", "2")
    monkey = Monkey(lambda: spawn_worker(*args), [spawn_worker(*args) for _ in range(WORKERS)])
    took = monkey.run_until(lambda: count_jobs(chaos_conn) == 0, timeout=110)

    runs = chaos_conn.execute("SELECT job_id, pid FROM public.runs").fetchall()
    by_job: dict[int, list[int]] = {}
    for job_id, pid in runs:
        by_job.setdefault(job_id, []).append(pid)
    twice = {job_id: pids for job_id, pids in by_job.items() if len(pids) > 1}
    print(
        f"\nkill -9 (plain): {JOBS} jobs in {took:.1f} s, {len(monkey.killed_pids)} workers killed, "
        f"{len(twice)} jobs ran more than once"
    )
    assert len(monkey.killed_pids) >= 2, "the run was too short to inflict any fault"
    assert set(by_job) == set(ids), "every job ran at least once"
    for job_id, pids in twice.items():
        survivors = [pid for pid in pids if pid not in monkey.killed_pids]
        assert len(survivors) <= 1, f"job {job_id} ran {len(pids)} times, not only on killed workers: {pids}"
    assert count_jobs(chaos_conn) == 0
    assert count_failed(chaos_conn) == 0
