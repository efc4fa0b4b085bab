"""Time: delayed jobs never run before they are due, and a lease that expires
while its job still runs (the worker frozen with SIGSTOP past the lease) never
makes a transactional job run twice. For plain jobs the tests pin down what is
promised: a frozen worker's job runs again elsewhere, and the frozen run, when
it thaws, can no longer complete, retry or fail the job."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner
from tests.apps.basic import Record, Sleep
from tests.apps.chaos import LockedSleep
from tests.chaos.conftest import WorkerStarter
from tests.conftest import Processes
from tests.helpers import count_failed, count_jobs, scalar, wait_for

FAST_LEASE = ("--heartbeat", "0.5")  # lease: 1 s


def due_times(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, datetime]:
    rows = conn.execute("SELECT id, available_at FROM soleil.jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert sorted(job_id for job_id, _ in rows) == sorted(ids)
    return dict(rows)


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_delayed_jobs_run_no_earlier_than_due_and_once(
    chaos_runner: Runner, chaos_conn: psycopg.Connection[Any], spawn_worker: WorkerStarter
) -> None:
    for _ in range(2):
        spawn_worker("--concurrency", "4")
    # Workers ready and waiting, so only its due time can hold a job back.
    wait_for(
        lambda: scalar(chaos_conn, "SELECT count(*) FROM soleil.workers") == 2, timeout=30, what="workers"
    )
    # Each dispatch in its own transaction, its due time read before it commits: until then no
    # worker can see (let alone run) the job, however slowly a loaded machine dispatches. (Reading
    # them all after dispatching raced the first jobs, due 0.2 s later, under load.)
    due: dict[int, datetime] = {}
    for i in range(60):
        with chaos_conn.transaction():
            job_id = chaos_runner.dispatch(
                Record(tag=f"d{i}"), delay=0.2 + (i % 10) * 0.15, connection=chaos_conn
            )
            assert job_id is not None
            due |= due_times(chaos_conn, [job_id])
    with chaos_conn.transaction():
        bulk = chaos_runner.dispatch_many(
            [Record(tag="bulk") for _ in range(40)], delay=1.0, connection=chaos_conn
        )
        due |= due_times(chaos_conn, bulk)
    assert len(due) == 100

    # Generous: the latest is due 1.55 s after dispatch; a loaded machine may take far longer.
    wait_for(lambda: count_jobs(chaos_conn) == 0, timeout=60, what="the delayed jobs to run")

    runs = chaos_conn.execute("SELECT job_id, at FROM public.runs").fetchall()
    assert sorted(job_id for job_id, _ in runs) == sorted(due), "each delayed job ran exactly once"
    early = [(job_id, at, due[job_id]) for job_id, at in runs if at < due[job_id]]
    assert early == [], "a job started before it was due"
    lateness = sorted((at - due[job_id]).total_seconds() * 1000 for job_id, at in runs)
    print(
        f"\ndelayed jobs: started {lateness[len(lateness) // 2]:.1f} ms after due (p50), "
        f"max {lateness[-1]:.1f} ms"
    )


@contextmanager
def frozen(worker: subprocess.Popen[str]) -> Iterator[None]:
    """SIGSTOP the whole worker process (heartbeats included), SIGCONT on exit."""
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(worker.pid, signal.SIGCONT)


def worker_id_of(conn: psycopg.Connection[Any], pid: int) -> int:
    return int(wait_for(lambda: scalar(conn, "SELECT id FROM soleil.workers WHERE pid = %s", (pid,))))


def wait_until_declared_dead_and_rescue_ran(
    conn: psycopg.Connection[Any], frozen_id: int, live_id: int
) -> None:
    """The live worker removed the frozen one (and ran the rescue in that transaction),
    then heartbeat twice more, so its rescuer and claimer had every chance to act."""
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (frozen_id,)) == 0,
        timeout=15,
        what="the frozen worker to be declared dead",
    )
    beat = scalar(conn, "SELECT heartbeat_at FROM soleil.workers WHERE id = %s", (live_id,))
    wait_for(
        lambda: scalar(
            conn,
            "SELECT heartbeat_at > %s + interval '0.9 s' FROM soleil.workers WHERE id = %s",
            (beat, live_id),
        ),
        timeout=15,
        what="two more heartbeats of the live worker",
    )


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_an_expired_lease_never_runs_a_transactional_job_twice(
    chaos_runner: Runner,
    chaos_conn: psycopg.Connection[Any],
    spawn_worker: WorkerStarter,
    processes: Processes,
) -> None:
    first = spawn_worker(*FAST_LEASE)
    first_id = worker_id_of(chaos_conn, first.pid)
    chaos_runner.dispatch(LockedSleep(key="once", seconds=2.0))
    wait_for(lambda: scalar(chaos_conn, "SELECT count(*) FROM public.runs") == 1, what="the job to start")

    with frozen(first):
        second = spawn_worker(*FAST_LEASE)
        wait_until_declared_dead_and_rescue_ran(chaos_conn, first_id, worker_id_of(chaos_conn, second.pid))
        # The job's row is deleted (and so locked) by the frozen run's open transaction:
        # the rescuer skips it and no claim can see it.
        assert scalar(chaos_conn, "SELECT count(*) FROM public.runs") == 1

    wait_for(lambda: count_jobs(chaos_conn) == 0, timeout=15, what="the thawed run to commit")
    wait_for(lambda: "worker.lease_lost" in processes.output(first)[1], what="the lease_lost warning")
    starts = chaos_conn.execute("SELECT pid FROM public.runs").fetchall()
    assert starts == [(first.pid,)]
    assert scalar(chaos_conn, "SELECT count(*) FROM public.effects WHERE key = 'once'") == 1
    assert count_failed(chaos_conn) == 0


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_a_frozen_workers_plain_job_runs_again_and_its_old_run_is_fenced_out(
    chaos_runner: Runner,
    chaos_conn: psycopg.Connection[Any],
    spawn_worker: WorkerStarter,
    processes: Processes,
) -> None:
    first = spawn_worker(*FAST_LEASE)
    first_id = worker_id_of(chaos_conn, first.pid)
    chaos_runner.dispatch(Sleep(seconds=1.5, tag="frozen"))
    wait_for(lambda: scalar(chaos_conn, "SELECT count(*) FROM public.runs") == 1, what="the job to start")

    with frozen(first):
        second = spawn_worker(*FAST_LEASE)
        wait_until_declared_dead_and_rescue_ran(chaos_conn, first_id, worker_id_of(chaos_conn, second.pid))
        # At-least-once: the job runs again on the live worker while the first is frozen.
        wait_for(lambda: count_jobs(chaos_conn) == 0, timeout=15, what="the second run to complete")

    # The thawed run finishes its handler (a thread cannot be stopped) but its
    # completion is fenced out: nothing is deleted, retried or failed twice.
    wait_for(
        lambda: scalar(
            chaos_conn, "SELECT count(*) FROM public.runs WHERE pid = %s AND tag = 'end:frozen'", (first.pid,)
        ),
        timeout=15,
        what="the thawed run to end",
    )
    wait_for(lambda: "worker.lease_lost" in processes.output(first)[1], what="the lease_lost warning")
    runs = chaos_conn.execute("SELECT tag, pid FROM public.runs ORDER BY id").fetchall()
    assert sorted(runs) == sorted(
        [
            ("start:frozen", first.pid),
            ("start:frozen", second.pid),
            ("end:frozen", second.pid),
            ("end:frozen", first.pid),
        ]
    )
    assert count_jobs(chaos_conn) == 0
    assert count_failed(chaos_conn) == 0
    assert first.poll() is None and second.poll() is None


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_a_job_longer_than_the_lease_on_a_live_worker_runs_once(
    chaos_runner: Runner, chaos_conn: psycopg.Connection[Any], spawn_worker: WorkerStarter
) -> None:
    # The default test lease (2 s): short enough to expire twice during the job, long
    # enough that a busy machine does not starve the heartbeat.
    spawn_worker()
    chaos_runner.dispatch(Sleep(seconds=4.5, tag="long"))
    wait_for(lambda: scalar(chaos_conn, "SELECT count(*) FROM public.runs") == 1, what="the job to start")
    spawn_worker()  # an idle rescuer, ready to take anything that looks orphaned
    wait_for(lambda: count_jobs(chaos_conn) == 0, timeout=20, what="the long job to complete")
    tags = [row[0] for row in chaos_conn.execute("SELECT tag FROM public.runs ORDER BY id")]
    assert tags == ["start:long", "end:long"]
