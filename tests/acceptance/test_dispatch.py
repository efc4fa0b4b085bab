"""`soleil-runner dispatch NAME`: validates the payload with the job class,
prints the id, and a worker then runs the job."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.acceptance.support import APPS, assert_one_line_error
from tests.conftest import Processes
from tests.helpers import scalar


def dispatch(processes: Processes, url: str, *args: str) -> Any:
    return processes.run("dispatch", *args, "--app", APPS, database_url=url)


def test_dispatch_prints_the_id_of_the_job_it_wrote(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = dispatch(
        processes,
        database_url,
        "tests.typed",
        "--payload",
        '{"count": 3, "label": "hello"}',
        "--priority",
        "7",
        "--delay",
        "60",
    )
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    row = conn.execute(
        "SELECT queue, job, payload, priority, available_at > now() + interval '50 seconds'"
        " FROM soleil.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("typed", "tests.typed", {"count": 3, "label": "hello"}, 7, True)


def test_dispatch_to_another_queue_then_work_runs_it(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = dispatch(processes, database_url, "tests.record", "--payload", '{"tag": "cli"}', "--queue", "q2")
    job_id = int(result.stdout)
    assert scalar(conn, "SELECT queue FROM soleil.jobs WHERE id = %s", (job_id,)) == "q2"
    worked = processes.run("work", "q2", "--app", APPS, "--stop-when-empty", database_url=database_url)
    assert worked.returncode == 0, worked.stderr
    assert conn.execute("SELECT job_id, tag FROM public.runs").fetchall() == [(job_id, "cli")]


def test_unique_key_taken_enqueues_nothing(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    first = dispatch(processes, database_url, "tests.record", "--unique-key", "nightly")
    assert first.returncode == 0 and first.stdout.strip().isdigit()
    second = dispatch(processes, database_url, "tests.record", "--unique-key", "nightly")
    assert second.returncode == 0
    assert second.stdout == ""
    assert "unique key 'nightly' is taken" in second.stderr
    assert scalar(conn, "SELECT count(*) FROM soleil.jobs") == 1


def test_invalid_payload_is_refused_with_pydantic_message(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    for payload, expected in [
        ('{"count": "many"}', "count: Input should be a valid integer"),
        ("{}", "count: Field required"),
        ("[1, 2]", "Input should be an object"),
        ("{not json", "Invalid JSON"),
    ]:
        line = assert_one_line_error(dispatch(processes, database_url, "tests.typed", "--payload", payload))
        assert "invalid payload for job 'tests.typed'" in line and expected in line, line
    assert scalar(conn, "SELECT count(*) FROM soleil.jobs") == 0


def test_unknown_job_name(processes: Processes, database_url: str) -> None:
    line = assert_one_line_error(dispatch(processes, database_url, "tests.nope"))
    assert "unknown job 'tests.nope'" in line


def test_bad_options_are_usage_errors(processes: Processes, database_url: str) -> None:
    for args, expected in [
        (["--queue", "no spaces"], "invalid queue name"),
        (["--delay", "-1"], "--delay"),
        (["--priority", "high"], "--priority"),
    ]:
        result = dispatch(processes, database_url, "tests.record", *args)
        assert result.returncode == 2, result.stderr
        assert "Usage: soleil-runner dispatch" in result.stderr and expected in result.stderr
        assert "Traceback" not in result.stderr


def test_help_lists_dispatch(processes: Processes) -> None:
    result = processes.run("--help")
    assert result.returncode == 0
    assert "dispatch" in result.stdout
