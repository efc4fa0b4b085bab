"""Data for the operations tests: failed jobs in bulk, straight in SQL."""

from __future__ import annotations

from typing import Any

import psycopg


def insert_failed(
    conn: psycopg.Connection[Any],
    count: int,
    *,
    queue: str = "default",
    job: str = "tests.record",
    error: str = "RuntimeError: boom",
    hours_ago: float = 0.0,
    start: int = 0,
) -> list[str]:
    """`count` failed jobs with payloads {"tag": "<n>"} (n from `start`); their uuids in id order."""
    rows = conn.execute(
        """
        INSERT INTO soleil.failed_jobs (queue, job, payload, exception, attempts, max_attempts, failed_at)
        SELECT %(queue)s, %(job)s, jsonb_build_object('tag', n::text),
               %(error)s || E'\\nTraceback (most recent call last):\\n  File "app.py", line 1', 3, 3,
               now() - make_interval(secs => %(hours)s * 3600)
        FROM generate_series(%(start)s, %(start)s + %(count)s - 1) AS n
        ORDER BY n
        RETURNING uuid::text
        """,
        {"queue": queue, "job": job, "error": error, "hours": hours_ago, "start": start, "count": count},
    ).fetchall()
    return [row[0] for row in rows]


def assert_nothing_lost_or_duplicated(conn: psycopg.Connection[Any], expected_total: int) -> tuple[int, int]:
    """Every payload is in exactly one of jobs and failed_jobs; returns (jobs, failed).

    All three counts come from one statement, so one snapshot: a chunk committed
    between two separate counts would otherwise be counted twice or not at all."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM soleil.jobs), (SELECT count(*) FROM soleil.failed_jobs),"
        " (SELECT count(DISTINCT payload) FROM (SELECT payload FROM soleil.jobs"
        "  UNION ALL SELECT payload FROM soleil.failed_jobs) p)"
    ).fetchone()
    assert row is not None
    jobs, failed, distinct = (int(x) for x in row)
    assert jobs + failed == expected_total, (jobs, failed)
    assert distinct == expected_total, "a payload appears twice"
    return jobs, failed
