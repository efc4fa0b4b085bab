"""dispatch_many's COPY stream: payloads with characters special to COPY's text
format arrive intact, and every row gets the same due time and its class's tries."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Job, JobContext, Runner


class Text(Job):
    name = "tests.copy_text"
    tries = 4
    value: str

    def handle(self, ctx: JobContext) -> None:
        pass


class Untried(Job):
    name = "tests.copy_untried"

    def handle(self, ctx: JobContext) -> None:
        pass


AWKWARD = ["back\\slash", "tab\there", "new\nline", "cr\rhere", 'quote"', "\\N", "é ✓ 💡", "\\.", ""]


def test_awkward_payloads_round_trip(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    ids = runner.dispatch_many([Text(value=v) for v in AWKWARD])

    rows = conn.execute(
        "SELECT id, payload->>'value', max_attempts FROM soleil.jobs ORDER BY id",
    ).fetchall()
    assert rows == [(i, v, 4) for i, v in zip(ids, AWKWARD, strict=True)]


def test_a_batch_shares_one_due_time_and_keeps_default_tries_open(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([Untried(), Text(value="x"), Untried()], delay=60, priority=3)

    rows = conn.execute(
        "SELECT count(DISTINCT available_at), bool_and(available_at > now() + interval '50 seconds'),"
        " array_agg(max_attempts ORDER BY id), array_agg(DISTINCT priority) FROM soleil.jobs"
    ).fetchone()
    assert rows == (1, True, [None, 4, None], [3])
