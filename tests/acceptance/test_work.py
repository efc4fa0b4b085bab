"""`soleil-runner work` as an operator runs it: jobs run, the log says so, and
the exit codes of --max-jobs, --max-time, --stop-when-empty and --memory."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
from psycopg import conninfo

from soleil.runner import Runner
from tests.acceptance.support import APPS, FAST, log_events, named, wait_exit
from tests.apps.basic import Doomed, Flaky, Record, Sleep
from tests.conftest import Processes
from tests.helpers import count_jobs, scalar, wait_for

JOB_FIELDS = {"job_id", "queue", "job", "attempt"}


def test_json_log_lines_tell_each_job_story(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    ok = runner.dispatch(Record(tag="ok"))
    flaky = runner.dispatch(Flaky(succeed_on=2))
    doomed = runner.dispatch(Doomed())
    result = processes.run(
        "--log-format", "json", "work", "default", "--app", APPS, "--stop-when-empty", *FAST,
        database_url=runner.database_url, env={"SOLEIL_LOG_FORMAT": "console"},  # the option wins
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = log_events(result.stderr)
    started = named(events, "job.started")
    assert sorted((e["job_id"], e["attempt"]) for e in started) == sorted(
        [(ok, 1), (flaky, 1), (flaky, 2), (doomed, 1)]
    )
    completed = {e["job_id"]: e for e in named(events, "job.completed")}
    assert set(completed) == {ok, flaky}
    assert completed[flaky]["attempt"] == 2
    (retrying,) = named(events, "job.retrying")
    assert (retrying["job_id"], retrying["attempt"], retrying["job"]) == (flaky, 1, "tests.flaky")
    assert "flaky failure on attempt 1" in retrying["error"]
    (failed,) = named(events, "job.failed")
    assert (failed["job_id"], failed["job"]) == (doomed, "tests.doomed")
    assert failed["error"] == "PermanentFailure: no point trying again"
    for event in [*started, *completed.values(), retrying, failed]:
        assert event.keys() >= JOB_FIELDS and event["queue"] == "default", event
        assert event["level"] in {"info", "warning", "error"} and event["timestamp"].endswith("Z")
    for event in [*completed.values(), retrying, failed]:
        assert isinstance(event["duration_ms"], float) and event["duration_ms"] >= 0, event
    assert events[0]["event"] == "worker.started"
    assert named(events, "worker.stopped")[0]["exit_code"] == 0
    assert count_jobs(conn) == 0
    assert scalar(conn, "SELECT job_id FROM soleil.failed_jobs") == doomed


def test_console_log_format_is_for_people(processes: Processes, runner: Runner) -> None:
    job_id = runner.dispatch(Record())
    # After the command, where operators tend to put it; it beats SOLEIL_LOG_FORMAT=json.
    result = processes.run(
        "work", "default", "--app", APPS, "--stop-when-empty", "--log-format", "console", *FAST,
        database_url=runner.database_url, env={"SOLEIL_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if "job.completed" in line)
    assert not line.lstrip().startswith("{")
    assert f"job_id={job_id}" in line and "queue=default" in line and "duration_ms=" in line
    assert "\x1b[" not in result.stderr  # no colours when stderr is not a terminal


def test_max_jobs_exits_0_after_exactly_that_many(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(5)])
    result = processes.run(
        "work", "default", "--app", APPS, "--max-jobs", "3", "--concurrency", "2", *FAST,
        database_url=runner.database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 3
    assert named(log_events(result.stderr), "worker.stopping")[0]["reason"] == "max jobs reached"
    # The two left are waiting, unreserved, with no attempt spent.
    assert conn.execute(
        "SELECT count(*), max(attempts) FROM soleil.jobs WHERE reserved_by IS NULL"
    ).fetchone() == (
        2,
        0,
    )


def test_max_time_exits_0(processes: Processes, database_url: str) -> None:
    began = time.monotonic()
    result = processes.run(
        "work", "default", "--max-time", "0.5", *FAST,
        database_url=database_url, env={"SOLEIL_LOG_FORMAT": "auto"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 10
    # auto: JSON lines, since stderr is not a terminal here.
    events = log_events(result.stderr)
    assert named(events, "worker.stopping")[0]["reason"] == "max time reached"
    assert named(events, "worker.no_job_classes")  # no --app: a worker that can only fail jobs says so


def test_stop_when_empty_exits_0_once_the_queue_is_drained(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(20)])
    runner.dispatch(Record(tag="later"), delay=3600)  # not ready: does not keep the worker up
    result = processes.run(
        "--log-level", "warning", "work", "default", "--app", APPS, "--stop-when-empty", "--concurrency", "3",
        *FAST, database_url=runner.database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 20
    assert count_jobs(conn) == 1
    assert all(e["level"] != "info" for e in log_events(result.stderr))  # --log-level warning


def test_memory_limit_exits_12(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    secret = "hunter2-Secret"  # the test server trusts local connections: any password works
    url = conninfo.make_conninfo(database_url, password=secret)
    result = processes.run("work", "default", "--app", APPS, "--memory", "1", *FAST, database_url=url)
    assert secret not in result.stdout + result.stderr
    assert result.returncode == 12, result.stderr
    events = log_events(result.stderr)
    assert named(events, "worker.memory_exceeded")[0]["limit_mb"] == 1
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0


def test_timeout_fails_a_stuck_job_and_the_worker_goes_on(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    stuck = runner.dispatch(Sleep(seconds=30, tag="stuck"))  # time.sleep ignores the JobTimeout
    after = runner.dispatch(Record(tag="after"))
    began = time.monotonic()
    worker = processes.soleil(
        "work", "default", "--app", APPS, "--timeout", "0.3", "--timeout-grace", "0.3", *FAST,
        database_url=runner.database_url,
    )  # fmt: skip
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'after'"), what="the next job"
    )
    assert time.monotonic() - began < 15  # not the 30 s the stuck job wanted
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (stuck,))
    assert exception.startswith("JobTimeout: attempt exceeded the job's timeout of 0.3 s"), exception
    worker.send_signal(signal.SIGTERM)
    assert wait_exit(worker) == 0
    events = log_events(processes.output(worker)[1])
    for name in ("job.timeout", "job.abandoned"):
        (event,) = named(events, name)
        assert (event["job_id"], event["queue"], event["job"], event["attempt"]) == (
            stuck,
            "default",
            "tests.sleep",
            1,
        )
    assert [e["job_id"] for e in named(events, "job.completed")] == [after]
    assert count_jobs(conn) == 0
