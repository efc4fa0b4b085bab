"""`status`, `queue clear|pause|resume`, `restart` and `monitor` as an operator
runs them, against a real worker process."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from typing import Any

import psycopg
from psycopg import conninfo

from soleil.runner import Runner
from tests.acceptance.support import APPS, FAST, assert_one_line_error, log_events, named, wait_exit
from tests.apps.basic import Record, Sleep
from tests.conftest import ROOT, Processes
from tests.helpers import count_jobs, scalar, wait_for
from tests.ops_data import insert_failed

SECRET = "s3cret-Passw0rd"


def _ran(conn: psycopg.Connection[Any], tag: str) -> bool:
    return bool(scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = %s", (tag,)))


def test_status_shows_queues_and_workers_and_never_the_password(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    url = conninfo.make_conninfo(runner.database_url, password=SECRET)
    empty = processes.run("status", database_url=url)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.endswith("No queues.\n\nNo workers.\n")

    runner.dispatch_many([Record()] * 2)
    runner.dispatch(Record(), delay=600)
    insert_failed(conn, 1, queue="mail")
    worker = processes.soleil("work", "default,mail", "--app", APPS, "--sleep", "30", database_url=url)
    wait_for(lambda: count_jobs(conn) == 1, what="the ready jobs to run")

    def status_with_completions() -> subprocess.CompletedProcess[str] | None:
        result = processes.run("status", database_url=url)
        return result if "2/0" in result.stdout else None

    result = wait_for(status_with_completions, what="status to show the completions")
    assert result is not None
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Database: postgres@127.0.0.1:5432/soleil_t_")
    assert lines[2].split()[:5] == ["QUEUE", "READY", "DELAYED", "RESERVED", "FAILED"]
    assert lines[3].split()[:5] == ["default", "0", "1", "0", "0"]
    assert lines[4].split()[:5] == ["mail", "0", "0", "0", "1"]
    assert lines[6].split() == ["WORKER", "HOST", "PID", "QUEUES", "RUNNING", "HEARTBEAT", "LEASE", "PAUSED"]
    assert f" {worker.pid} " in lines[7] and "default,mail" in lines[7] and lines[7].endswith("no")
    assert " 20s " in lines[7], "the lease of the default --heartbeat"

    data = json.loads(processes.run("status", "--json", database_url=url).stdout)
    default = next(q for q in data["queues"] if q["queue"] == "default")
    assert (default["completed_1m"], default["delayed"], default["paused"]) == (2, 1, False)
    assert [(w["pid"], w["lease_s"]) for w in data["workers"]] == [(worker.pid, 20.0)]
    for command in (["status"], ["status", "--json"], ["failed", "list"]):
        output = processes.run(*command, database_url=url)
        assert SECRET not in output.stdout + output.stderr


def test_status_watch_refreshes_until_interrupted(processes: Processes, database_url: str) -> None:
    proc = processes.soleil("status", "--watch", "--json", "--interval", "0.1", database_url=database_url)
    wait_for(lambda: len(processes.output(proc)[0].splitlines()) >= 3, what="three refreshes")
    proc.send_signal(signal.SIGINT)
    assert wait_exit(proc) == 0
    assert all(json.loads(line)["queues"] == [] for line in processes.output(proc)[0].splitlines())


def test_pause_resume_and_restart_a_running_worker(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    worker = processes.soleil("work", "a,b", "--app", APPS, *FAST, database_url=runner.database_url)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.workers"), what="the worker to start")

    paused = processes.run("queue", "pause", "a", database_url=runner.database_url)
    assert (paused.returncode, paused.stdout) == (0, "Paused queue a.\n")
    wait_for(
        lambda: named(log_events(processes.output(worker)[1]), "queue.paused"), what="the worker to pause"
    )
    runner.dispatch(Record(tag="a"), queue="a")
    runner.dispatch(Record(tag="b"), queue="b")
    wait_for(lambda: _ran(conn, "b"), what="queue b's job")  # a comes first in priority: it is skipped
    assert not _ran(conn, "a")
    status = processes.run("status", database_url=runner.database_url).stdout.splitlines()
    assert status[3].split()[0] == "a" and status[3].endswith("yes")
    assert status[-1].endswith(" a")

    resumed = processes.run("queue", "resume", "a", database_url=runner.database_url)
    assert (resumed.returncode, resumed.stdout) == (0, "Resumed queue a.\n")
    wait_for(lambda: _ran(conn, "a"), timeout=2, what="queue a's job after resume")

    runner.dispatch(Sleep(seconds=0.5, tag="long"), queue="b")
    wait_for(lambda: _ran(conn, "start:long"), what="the long job to start")
    restart = processes.run("restart", database_url=runner.database_url)
    assert restart.returncode == 0 and restart.stdout.startswith("Restart requested")
    assert wait_exit(worker) == 0
    assert _ran(conn, "end:long") and count_jobs(conn) == 0
    (stopping,) = named(log_events(processes.output(worker)[1]), "worker.stopping")
    assert stopping["reason"] == "restart requested"


def _clear_on_a_terminal(database_url: str, answer: str) -> subprocess.CompletedProcess[str]:
    main, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOLEIL_DATABASE_URL": database_url}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "soleil.runner", "queue", "clear", "default"],
            cwd=ROOT, env=env, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.write(main, answer.encode() + b"\n")
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        os.close(main)
        os.close(terminal)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_queue_clear_asks_on_a_terminal_and_refuses_without_force_elsewhere(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Record()] * 4)
    runner.dispatch(Record(), queue="other")
    refused = processes.run("queue", "clear", "default", database_url=runner.database_url, input="y\n")
    assert refused.returncode == 2
    assert "refusing to clear queue 'default' without --force: stdin is not a terminal" in refused.stderr

    declined = _clear_on_a_terminal(runner.database_url, "n")
    assert declined.returncode == 1 and "Delete every job of queue 'default'" in declined.stdout
    assert declined.stdout.endswith("Nothing cleared.\n")
    assert count_jobs(conn) == 5

    accepted = _clear_on_a_terminal(runner.database_url, "y")
    assert accepted.returncode == 0 and accepted.stdout.endswith("Cleared 4 jobs from queue default.\n")
    runner.dispatch(Record())
    forced = processes.run("queue", "clear", "default", "--force", database_url=runner.database_url)
    assert (forced.returncode, forced.stdout) == (0, "Cleared 1 job from queue default.\n")
    assert count_jobs(conn) == 1 and count_jobs(conn, "queue = 'other'") == 1


def test_monitor_exits_1_and_logs_queue_busy_above_max(processes: Processes, runner: Runner) -> None:
    runner.dispatch_many([Record()] * 3)
    calm = processes.run("monitor", "default:3,mail:0", database_url=runner.database_url)
    assert calm.returncode == 0 and named(log_events(calm.stderr), "queue.busy") == []
    assert calm.stdout.splitlines()[1].split() == ["default", "3", "3", "ok"]

    busy = processes.run("monitor", "default:2,mail:0", database_url=runner.database_url)
    assert busy.returncode == 1
    (event,) = named(log_events(busy.stderr), "queue.busy")
    assert (event["queue"], event["ready"], event["max"], event["level"]) == ("default", 3, 2, "warning")
    assert busy.stdout.splitlines()[1].split() == ["default", "3", "2", "BUSY"]
    as_json = json.loads(
        processes.run("monitor", "default:2", "--json", database_url=runner.database_url).stdout
    )
    assert as_json == [{"queue": "default", "ready": 3, "max": 2, "busy": True}]

    for bad in ("default", "default:many", "bad queue:1", "mail:10,mail:0"):
        result = processes.run("monitor", bad, database_url=runner.database_url)
        assert result.returncode == 2 and "Invalid value" in result.stderr


def test_commands_on_a_database_without_the_schema_say_migrate(
    processes: Processes, empty_database_url: str
) -> None:
    for command in (["status"], ["failed", "retry", "all"], ["queue", "pause", "a"], ["monitor", "a:1"]):
        result = processes.run(*command, database_url=empty_database_url)
        line = assert_one_line_error(result, code=2)
        assert line == "error: the database has no Soleil schema: run `soleil-runner migrate`"
