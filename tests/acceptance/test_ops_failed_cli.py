"""`soleil-runner failed ...` as an operator runs it: output, exit codes and the
tables afterwards; a `failed retry all` killed half way loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from typing import Any

import psycopg

from tests.acceptance.support import assert_one_line_error, wait_exit
from tests.conftest import ROOT, Processes
from tests.helpers import count_failed, count_jobs, scalar, wait_for
from tests.ops_data import assert_nothing_lost_or_duplicated, insert_failed

UNKNOWN = "00000000-0000-0000-0000-000000000000"


def test_list_empty_then_newest_first_as_table_and_json(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    empty = processes.run("failed", "list", database_url=database_url)
    assert (empty.returncode, empty.stdout) == (0, "No failed jobs.\n")
    assert processes.run("failed", "list", "--json", database_url=database_url).stdout == "[]\n"

    insert_failed(conn, 2, queue="mail", error="SMTPError: 550 mailbox unavailable", hours_ago=1)
    newest = insert_failed(conn, 1, queue="default", error="ValueError: bad input", start=10)
    result = processes.run("failed", "list", "--limit", "2", database_url=database_url)
    assert result.returncode == 0, result.stderr
    header, first, second, footer = result.stdout.splitlines()
    assert header.split() == ["UUID", "FAILED", "AT", "QUEUE", "JOB", "ATTEMPTS", "ERROR"]
    assert first.startswith(newest[0]) and first.endswith("tests.record  3         ValueError: bad input")
    assert "mail" in second and second.endswith("SMTPError: 550 mailbox unavailable")
    assert footer == "(showing 2 of 3; use --limit to see more)"

    listed = json.loads(
        processes.run("failed", "list", "--queue", "mail", "--json", database_url=database_url).stdout
    )
    assert [(j["queue"], j["attempts"], j["error"]) for j in listed] == [
        ("mail", 3, "SMTPError: 550 mailbox unavailable")
    ] * 2
    assert set(listed[0]) == {"uuid", "failed_at", "queue", "job", "attempts", "error"}


def test_show_prints_the_traceback_and_payload(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    (uuid,) = insert_failed(conn, 1, error="ValueError: bad input", start=7)
    result = processes.run("failed", "show", uuid, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert f"UUID:       {uuid}" in result.stdout and "Attempts:   3 of 3" in result.stdout
    assert '"tag": "7"' in result.stdout
    assert result.stdout.endswith(
        'ValueError: bad input\nTraceback (most recent call last):\n  File "app.py", line 1\n'
    )
    shown = json.loads(processes.run("failed", "show", uuid, "--json", database_url=database_url).stdout)
    assert shown["payload"] == {"tag": "7"} and shown["exception"].startswith("ValueError: bad input\n")


def test_unknown_uuids_say_so_and_exit_1(processes: Processes, database_url: str) -> None:
    for command in (["show", UNKNOWN], ["forget", UNKNOWN], ["retry", UNKNOWN], ["show", "not-a-uuid"]):
        result = processes.run("failed", *command, database_url=database_url)
        if command[0] == "retry":
            assert result.stdout == "Pushed back 0 failed jobs.\n"
            result.stdout = ""
        line = assert_one_line_error(result, code=1)
        assert line == f"error: no failed job with uuid {command[1]}"


def test_retry_by_uuid_moves_the_known_ones_and_names_the_missing(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    first, second, third = insert_failed(conn, 3)
    result = processes.run("failed", "retry", first, second, database_url=database_url)
    assert (result.returncode, result.stdout) == (0, "Pushed back 2 failed jobs.\n")
    assert count_jobs(conn, "attempts = 0 AND queue = 'default'") == 2 and count_failed(conn) == 1

    result = processes.run("failed", "retry", third, first, database_url=database_url)
    assert result.returncode == 1
    assert result.stdout == "Pushed back 1 failed job.\n"
    assert result.stderr == f"error: no failed job with uuid {first}\n"
    assert_nothing_lost_or_duplicated(conn, 3)


def test_retry_all_of_a_queue_and_usage_errors(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    insert_failed(conn, 5, queue="mail")
    (other,) = insert_failed(conn, 1, queue="default", start=10)
    result = processes.run("failed", "retry", "all", "--queue", "mail", database_url=database_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Pushed back 5 failed jobs.\n", "")
    assert count_jobs(conn, "queue = 'mail'") == 5 and count_failed(conn) == 1
    assert processes.run("failed", "retry", "all", other, database_url=database_url).returncode == 2
    assert processes.run("failed", "retry", other, "--queue", "x", database_url=database_url).returncode == 2
    assert processes.run("failed", "retry", database_url=database_url).returncode == 2
    assert count_failed(conn) == 1


def test_an_empty_queue_name_is_refused_not_taken_for_every_queue(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    insert_failed(conn, 2, queue="mail")
    insert_failed(conn, 1, queue="default", start=10)
    # `--queue "$QUEUE"` with QUEUE unset must not retry every queue's failed jobs.
    for command in (("retry", "all"), ("list",)):
        result = processes.run("failed", *command, "--queue", "", database_url=database_url)
        assert "invalid queue name ''" in assert_one_line_error(result), command
    assert count_failed(conn) == 3 and count_jobs(conn) == 0


def test_forget_flush_and_prune(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    (one,) = insert_failed(conn, 1)
    insert_failed(conn, 3, hours_ago=50, start=10)
    insert_failed(conn, 2, hours_ago=5, start=20)
    assert (
        processes.run("failed", "forget", one, database_url=database_url).stdout
        == f"Deleted failed job {one}.\n"
    )
    result = processes.run("failed", "prune", "--hours", "48", database_url=database_url)
    assert (result.returncode, result.stdout) == (0, "Deleted 3 failed jobs older than 48 hours.\n")
    missing_hours = processes.run("failed", "prune", database_url=database_url)
    assert missing_hours.returncode == 2 and "Missing option '--hours'" in missing_hours.stderr
    result = processes.run("failed", "flush", "--hours", "1", database_url=database_url)
    assert result.stdout == "Deleted 2 failed jobs older than 1 hour.\n"
    insert_failed(conn, 4, start=30)
    assert processes.run("failed", "flush", database_url=database_url).stdout == "Deleted 4 failed jobs.\n"
    assert count_failed(conn) == 0


def test_retry_all_killed_half_way_loses_and_duplicates_nothing(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    total = 20_000
    insert_failed(conn, total)
    proc = processes.soleil(
        "failed", "retry", "all", database_url=database_url, env={"SOLEIL_CHUNK_SIZE": "10"}
    )
    wait_for(lambda: count_jobs(conn) >= 1_000, timeout=30, interval=0.005, what="retry to be under way")
    proc.send_signal(signal.SIGKILL)
    assert wait_exit(proc) == -signal.SIGKILL  # reaped
    # The killed client's backend may still be finishing a COMMIT it had already received; count
    # only once it is gone, so nothing can land after the count (and no transaction is left open).
    wait_for(
        lambda: (
            scalar(
                conn,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            == 0
        ),
        timeout=30,
        what="the killed process's backend to end",
    )
    jobs, failed = assert_nothing_lost_or_duplicated(conn, total)
    assert jobs % 10 == 0 and 0 < failed < total, "killed half way: whole chunks moved, others not"

    result = processes.run("failed", "retry", "all", database_url=database_url)
    assert (result.returncode, result.stdout) == (0, f"Pushed back {failed} failed jobs.\n")
    assert assert_nothing_lost_or_duplicated(conn, total) == (total, 0)


def test_a_progress_bar_shows_on_a_terminal(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    insert_failed(conn, 200)
    main, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOLEIL_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "soleil.runner", "failed", "retry", "all", "--chunk-size", "50"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, text=True,
    )  # fmt: skip
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    stdout, _ = proc.communicate(timeout=30)
    assert (proc.returncode, stdout) == (0, "Pushed back 200 failed jobs.\n")
    assert b"Retrying" in drawn and b"100%" in drawn
