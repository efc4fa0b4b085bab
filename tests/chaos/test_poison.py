"""Poison: jobs no class can run, payloads that no longer validate, oversized or
unstorable payloads, names with SQL in them. Each ends with one clear error, at
dispatch or as a failed_jobs row, and the worker keeps processing the good jobs
around them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from soleil.runner import InvalidName, InvalidPayload, PayloadTooLarge, Runner
from tests.apps.basic import Record
from tests.chaos.conftest import WorkerStarter
from tests.conftest import Processes
from tests.helpers import count_jobs, scalar, wait_for

SQL_IN_NAME = "default'; DROP TABLE soleil.jobs; --"
LIMIT = 1_000_000  # the default max_payload_bytes


def insert_raw(conn: psycopg.Connection[Any], job: str, payload: str) -> None:
    """A row written behind the runner's back (an old deploy, a hand-made fix)."""
    conn.execute("INSERT INTO soleil.jobs (queue, job, payload) VALUES ('default', %s, %s)", (job, payload))


@pytest.mark.chaos
@pytest.mark.timeout(90)
def test_poison_ends_in_clear_errors_and_good_jobs_around_it_run(
    chaos_runner: Runner,
    chaos_conn: psycopg.Connection[Any],
    spawn_worker: WorkerStarter,
    processes: Processes,
) -> None:
    for i in range(3):
        chaos_runner.dispatch(Record(tag=f"before-{i}"))
    insert_raw(chaos_conn, "no.such.job", "{}")
    insert_raw(chaos_conn, "chaos.stamp", '{"sent_at": "yesterday"}')
    insert_raw(chaos_conn, "x'); DROP TABLE soleil.jobs; --", "{}")

    # Refused at dispatch, before any SQL: nothing is written.
    with pytest.raises(PayloadTooLarge, match=r"is 1000010 bytes, above the limit of 1000000 bytes"):
        chaos_runner.dispatch(Record(tag="x" * LIMIT))
    with pytest.raises(InvalidPayload, match="must not contain NUL"):
        chaos_runner.dispatch(Record(tag="nul\x00byte"))
    with pytest.raises(InvalidPayload, match="surrogates not allowed"):
        chaos_runner.dispatch(Record(tag="lone \ud800 surrogate"))
    with pytest.raises(InvalidName, match="invalid queue name"):
        chaos_runner.dispatch(Record(tag="sql"), queue=SQL_IN_NAME)
    # Behind the runner's back, PostgreSQL refuses a queue name too long for a LISTEN
    # channel; any other name is an inert string (checked below).
    with pytest.raises(psycopg.errors.CheckViolation):
        chaos_conn.execute(
            "INSERT INTO soleil.jobs (queue, job, payload) VALUES (%s, 'tests.record', '{}')", ("q" * 57,)
        )
    with pytest.raises(psycopg.errors.UntranslatableCharacter):
        chaos_conn.execute("SELECT %s::jsonb", ('{"tag": "\\u0000"}',))

    chaos_runner.dispatch(Record(tag="near-limit-" + "x" * (LIMIT - 100)))
    for i in range(3):
        chaos_runner.dispatch(Record(tag=f"after-{i}"))
    assert count_jobs(chaos_conn) == 10

    refused = processes.run("work", SQL_IN_NAME, "--app", "tests.apps.basic", database_url="unused")
    assert refused.returncode == 2
    assert "invalid queue name" in refused.stderr and "Traceback" not in refused.stderr

    worker = spawn_worker()
    wait_for(lambda: count_jobs(chaos_conn) == 0, timeout=30, what="the queue to drain")

    tags = {row[0][:11] for row in chaos_conn.execute("SELECT tag FROM public.runs")}
    assert tags == {"before-0", "before-1", "before-2", "near-limit-", "after-0", "after-1", "after-2"}
    failed = dict(chaos_conn.execute("SELECT job, exception FROM soleil.failed_jobs").fetchall())
    assert set(failed) == {"no.such.job", "chaos.stamp", "x'); DROP TABLE soleil.jobs; --"}
    assert failed["no.such.job"].startswith("UnknownJob: unknown job 'no.such.job'")
    assert failed["chaos.stamp"].startswith(
        "InvalidPayload: invalid payload for job 'chaos.stamp': sent_at: Input should be a valid number"
    )
    assert scalar(chaos_conn, "SELECT max(attempts) FROM soleil.failed_jobs") == 1, "poison is not retried"
    assert worker.poll() is None
    chaos_conn.execute(
        "INSERT INTO soleil.jobs (queue, job, payload) VALUES (%s, 'tests.record', '{}')", (SQL_IN_NAME,)
    )
    assert scalar(chaos_conn, "SELECT to_regclass('soleil.jobs') IS NOT NULL")
    assert scalar(chaos_conn, "SELECT count(*) FROM soleil.jobs WHERE queue = %s", (SQL_IN_NAME,)) == 1
