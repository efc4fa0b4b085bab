"""Stopping a worker process: SIGTERM lets the running job finish, SIGKILL loses
nothing (another worker rescues the job), and a database that goes away for a
moment does not stop the worker."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from soleil.runner import Runner
from tests.acceptance.support import APPS, log_events, named, wait_exit
from tests.apps.basic import Record, Sleep
from tests.apps.cli import SlowFirstAttempt, SlowTransactionalFirstAttempt
from tests.conftest import ADMIN_URL, Processes
from tests.helpers import effects, scalar, wait_for

HEARTBEAT = 0.5  # seconds; a silent worker's jobs come back after two intervals
FAST = ["--sleep", "0.2", "--heartbeat", str(HEARTBEAT)]


def runs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT tag, attempt, pid FROM public.runs ORDER BY id").fetchall()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_lets_the_running_job_finish(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any], signum: signal.Signals
) -> None:
    running = runner.dispatch(Sleep(seconds=1.0, tag="long"))
    queued = runner.dispatch_many([Record(tag="a"), Record(tag="b")])
    worker = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: runs(conn), what="the long job to start")
    worker.send_signal(signum)
    assert wait_exit(worker) == 0
    assert runs(conn) == [("start:long", 1, worker.pid), ("end:long", 1, worker.pid)]
    assert scalar(conn, "SELECT count(*) FROM soleil.jobs WHERE id = %s", (running,)) == 0
    waiting = conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs ORDER BY id").fetchall()
    assert waiting == [(queued[0], 0, None), (queued[1], 0, None)]
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    events = log_events(processes.output(worker)[1])
    assert named(events, "worker.stopping")[0]["reason"] == signum.name
    assert named(events, "job.completed")[0]["job_id"] == running
    assert named(events, "worker.stopped")[0]["exit_code"] == 0


def test_job_outliving_the_stop_grace_goes_back_to_its_queue(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(SlowFirstAttempt(first=60))
    worker = processes.soleil(
        "work", "default", "--app", APPS, "--stop-grace", "0.3", *FAST, database_url=runner.database_url
    )
    wait_for(lambda: runs(conn), what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker) == 1  # not a clean stop: systemd's Restart=always starts a new one
    # Back in its queue at once, the interrupted attempt counted; no worker row left.
    assert conn.execute(
        "SELECT id, attempts, reserved_by, available_at <= now() FROM soleil.jobs"
    ).fetchall() == [(job_id, 1, None, True)]
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    (timeout,) = named(log_events(processes.output(worker)[1]), "worker.stop_timeout")
    assert timeout["job_ids"] == [job_id]


def test_transactional_job_outliving_the_stop_grace_is_rolled_back_and_goes_back_at_once(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    # Its open transaction holds the job's row: the worker must end it rather
    # than wait for the handler (60 s) to give the job back.
    job_id = runner.dispatch(SlowTransactionalFirstAttempt(key="slow", first=60))
    worker = processes.soleil(
        "work", "default", "--app", APPS, "--stop-grace", "0.3", *FAST, database_url=runner.database_url
    )
    wait_for(lambda: runs(conn), what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker, timeout=10.0) == 1
    assert conn.execute(
        "SELECT id, attempts, reserved_by, available_at <= now() FROM soleil.jobs"
    ).fetchall() == [(job_id, 1, None, True)]
    assert effects(conn) == [], "the interrupted attempt's write rolled back"
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    (timeout,) = named(log_events(processes.output(worker)[1]), "worker.stop_timeout")
    assert timeout["job_ids"] == [job_id]
    again = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.jobs") == 0, what="attempt 2 to commit")
    assert effects(conn) == ["slow:2"]
    again.send_signal(signal.SIGTERM)
    assert wait_exit(again) == 0


def test_sigkilled_worker_job_is_rescued_by_another_worker(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(SlowFirstAttempt(first=60))
    worker_a = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: runs(conn), what="worker A to start the job")
    worker_a.send_signal(signal.SIGKILL)
    assert wait_exit(worker_a) == -signal.SIGKILL
    killed_at = time.monotonic()
    worker_b = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: len(runs(conn)) == 3, timeout=30, what="worker B to run the job")
    rescued_in = time.monotonic() - killed_at
    # Two heartbeat intervals, plus worker B's start-up and one rescue tick on a busy machine.
    assert rescued_in < 2 * HEARTBEAT + 3.0, rescued_in
    assert runs(conn) == [
        ("start", 1, worker_a.pid),
        ("start", 2, worker_b.pid),
        ("end", 2, worker_b.pid),
    ]
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.jobs") == 0, what="the completion")
    worker_b.send_signal(signal.SIGTERM)
    assert wait_exit(worker_b) == 0
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    assert scalar(conn, "SELECT count(*) FROM soleil.failed_jobs") == 0
    events = log_events(processes.output(worker_b)[1])
    assert [e["pid"] for e in named(events, "worker.lost")] == [worker_a.pid]
    assert [(e["job_id"], e["attempt"]) for e in named(events, "job.completed")] == [(job_id, 2)]


def test_worker_outlives_a_database_that_refuses_connections_for_a_moment(
    processes: Processes, runner: Runner, database_url: str
) -> None:
    name = conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(name, str) and name.startswith("soleil_t")
    worker = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=database_url)
    wait_for(lambda: "worker.started" in processes.output(worker)[1], what="the worker to start")
    runner.close()  # the test's own pool would be cut off too
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            wait_for(
                lambda: "listener.connect_failed" in processes.output(worker)[1],
                what="the worker to notice the outage",
            )
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
    job_id = runner.dispatch(Record(tag="after"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        wait_for(lambda: runs(conn), timeout=15, what="the job dispatched after the outage")
        assert runs(conn) == [("after", 1, worker.pid)]
        worker.send_signal(signal.SIGTERM)
        assert wait_exit(worker) == 0
        assert scalar(conn, "SELECT count(*) FROM soleil.jobs") == 0
        assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    events = log_events(processes.output(worker)[1])  # still all JSON: library warnings included
    assert [e["job_id"] for e in named(events, "job.completed")] == [job_id]


def test_second_ctrl_c_stops_without_waiting_for_the_running_job(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(SlowFirstAttempt(first=60))
    worker = processes.soleil("work", "default", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: runs(conn), what="the job to start")
    worker.send_signal(signal.SIGINT)
    wait_for(lambda: "worker.stopping" in processes.output(worker)[1], what="the first Ctrl-C")
    began = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert wait_exit(worker) == 1
    assert time.monotonic() - began < 10  # not the 60 s --stop-grace
    assert conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall() == [(job_id, 1, None)]
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0
    events = log_events(processes.output(worker)[1])
    assert named(events, "worker.stopping")[0]["reason"] == "SIGINT"
    assert named(events, "worker.stop_timeout")[0]["forced"] is True
