"""Turning job instances into rows of soleil.jobs: one INSERT, or COPY for a batch.

Both paths write on the caller's connection when given one, so the job commits
or rolls back with the caller's own writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from pydantic_core import PydanticSerializationError

from soleil.runner import queries
from soleil.runner.errors import InvalidPayload, PayloadTooLarge
from soleil.runner.job import Job
from soleil.runner.names import validate_queue

DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
# A NUL character in the JSON text: `\u0000` after an even number of backslashes
# (after an odd number it is the literal text "\u0000", which jsonb stores fine).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class Row:
    queue: str
    job: str
    payload: str
    max_attempts: int | None


def to_row(job: Job, max_payload_bytes: int, queue: str | None = None) -> Row:
    if not isinstance(job, Job):
        raise TypeError(f"dispatch takes Job instances, not {type(job).__name__}")
    cls = type(job)
    try:
        payload = job.model_dump_json()
    except PydanticSerializationError as exc:
        raise InvalidPayload(cls.name, str(exc)) from None
    if len(payload) > max_payload_bytes // 4 and len(payload.encode()) > max_payload_bytes:
        raise PayloadTooLarge(cls.name, len(payload.encode()), max_payload_bytes)
    if "\\u0000" in payload and _JSON_NUL.search(payload):
        raise InvalidPayload(cls.name, "strings must not contain NUL (PostgreSQL's jsonb cannot store it)")
    return Row(validate_queue(queue or cls.queue), cls.name, payload, cls.tries)


def insert_one(
    conn: psycopg.Connection[Any],
    row: Row,
    priority: int,
    delay: float,
    available_at: datetime | None,
    unique_key: str | None,
) -> int | None:
    cursor = conn.execute(
        queries.get("job_insert_one"),
        {
            "queue": row.queue,
            "job": row.job,
            "payload": row.payload,
            "priority": priority,
            "max_attempts": row.max_attempts,
            "available_at": available_at,
            "delay": delay,
            "unique_key": unique_key,
        },
    )
    found = cursor.fetchone()
    return None if found is None else int(found[0])


def insert_many(
    conn: psycopg.Connection[Any],
    rows: list[Row],
    priority: int,
    delay: float,
    available_at: datetime | None,
) -> list[int]:
    """One statement reserves the ids, fixes the due time and queues one notification
    per queue; then one COPY writes the rows."""
    if not rows:
        return []
    queues = list(dict.fromkeys(row.queue for row in rows))
    with conn.transaction():
        reserved = conn.execute(
            queries.get("job_reserve_many"),
            {"count": len(rows), "queues": queues, "available_at": available_at, "delay": delay},
        ).fetchone()
        assert reserved is not None
        ids, due_at, _ = reserved
        with conn.cursor().copy(queries.get("job_copy_in")) as copy:
            copy.write(_copy_text(ids, rows, priority, due_at))
    return list(ids)


def _copy_text(ids: list[int], rows: list[Row], priority: int, due_at: str) -> str:
    """The rows in COPY's text format, built in one pass (several times faster than
    write_row per row). Queue and job names are validated and need no escaping; the
    payload is compact JSON, whose only character special to COPY is the backslash
    (JSON escapes control characters itself)."""
    tail = f"\t{priority}\t"
    return "".join(
        f"{job_id}\t{row.queue}\t{row.job}\t{row.payload.replace(_BACKSLASH, _BACKSLASH_ESCAPED)}{tail}"
        f"{_NULL if row.max_attempts is None else row.max_attempts}\t{due_at}\n"
        for job_id, row in zip(ids, rows, strict=True)
    )


_BACKSLASH, _BACKSLASH_ESCAPED, _NULL = "\\", "\\\\", "\\N"
