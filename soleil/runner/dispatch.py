"""Turning job instances into rows of soleil.jobs: one INSERT, or COPY for a batch.

Both paths write on the caller's connection when given one, so the job commits
or rolls back with the caller's own writes.
"""

from __future__ import annotations

import decimal
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from pydantic_core import PydanticSerializationError

from soleil.runner import prepared, queries
from soleil.runner.errors import InvalidPayload, InvalidSchedule, PayloadTooLarge
from soleil.runner.job import Job
from soleil.runner.names import validate_queue

DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
# Rows per COPY write: small enough that the server starts on the first slice
# while later ones are serialised, large enough to keep the writes few.
STREAM_ROWS = 250
# A NUL character in the JSON text: `\u0000` after an even number of backslashes
# (after an odd number it is the literal text "\u0000", which jsonb stores fine).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class Row:
    queue: str
    job: str
    payload: str
    max_attempts: int | None


MAX_DELAY_SECONDS = 100 * 366 * 24 * 3600.0
PRIORITIES = range(-(2**31), 2**31)  # the jobs table's integer


def timing(priority: int, delay: float | None) -> float:
    """The delay in seconds, after checking both against what the jobs table holds:
    refused here with the value named, rather than by PostgreSQL mid-dispatch."""
    # On the path an idle worker's pickup waits on: the usual call (an int
    # priority, no delay) does no more than three checks, and no error message
    # is built unless one is raised (that alone cost 40 µs on a CPU just woken).
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        raise InvalidSchedule(f"invalid priority {priority!r}: use an integer from -2**31 to 2**31 - 1")
    if delay is None:
        return 0.0
    seconds = _seconds(delay)
    if not 0.0 <= seconds <= MAX_DELAY_SECONDS:  # NaN fails both
        raise InvalidSchedule(f"invalid delay {delay!r}: use 0 to {MAX_DELAY_SECONDS:.0f} seconds")
    return seconds


def _seconds(delay: object) -> float:
    """A delay as a float; -1.0 (refused) for what is not a real number."""
    if isinstance(delay, bool) or not isinstance(delay, numbers.Real | decimal.Decimal):
        return -1.0
    try:
        return float(delay)
    except OverflowError:  # an int past float's range
        return float("inf")


def to_row(job: Job, max_payload_bytes: int, queue: str | None = None) -> Row:
    cls = _job_class(job)
    name = validate_queue(cls.queue if queue is None else queue)  # "" is refused, not the default
    return Row(name, cls.name, payload_of(job, max_payload_bytes), cls.tries)


def _job_class(job: Job) -> type[Job]:
    if not isinstance(job, Job):
        raise TypeError(f"dispatch takes Job instances, not {type(job).__name__}")
    return type(job)


def payload_of(job: Job, max_payload_bytes: int) -> str:
    """The job's JSON payload, refused if it is too large or holds what jsonb cannot store."""
    name = type(job).name
    try:
        payload = job.model_dump_json()
    except PydanticSerializationError as exc:
        raise InvalidPayload(name, str(exc)) from None
    if len(payload) > max_payload_bytes // 4 and len(payload.encode()) > max_payload_bytes:
        raise PayloadTooLarge(name, len(payload.encode()), max_payload_bytes)
    if "\\u0000" in payload and _JSON_NUL.search(payload):
        raise InvalidPayload(name, "strings must not contain NUL (PostgreSQL's jsonb cannot store it)")
    return payload


def insert_one(
    conn: psycopg.Connection[Any],
    row: Row,
    priority: int,
    delay: float,
    available_at: datetime | None,
    unique_key: str | None,
    *,
    own_transaction: bool,
) -> int | None:
    """`own_transaction`: the row commits alone, so its notification may name it."""
    values = {
        "queue": row.queue,
        "job": row.job,
        "payload": row.payload,
        "priority": priority,
        "max_attempts": row.max_attempts,
        "available_at": available_at,
        "delay": delay,
        "unique_key": unique_key,
        "name_job": own_transaction,
    }
    if own_transaction:
        # A pooled connection of Soleil's: the quicker path an idle worker's pickup waits on.
        result = _INSERT_ONE.execute(conn, values)
        found = result.get_value(0, 0) if result.ntuples else None
        return None if found is None else int(found)
    row_found = conn.execute(queries.get("job_insert_one"), values).fetchone()
    return None if row_found is None else int(row_found[0])


_INSERT_ONE = prepared.Statement("job_insert_one")


def insert_many(
    conn: psycopg.Connection[Any],
    jobs: Sequence[Job],
    max_payload_bytes: int,
    priority: int,
    delay: float,
    available_at: datetime | None,
) -> list[int]:
    """One statement reserves the ids, fixes the due time and queues one notification
    per queue; then one COPY writes the rows, serialised slice by slice while the
    server stores the slices before them (Python and PostgreSQL work on both cores).
    A payload refused half way aborts the COPY: the transaction writes nothing."""
    if not jobs:
        return []
    # Everything that can be checked without serialising is checked before any SQL.
    columns = {cls: _ClassColumns.of(cls) for cls in {_job_class(job) for job in jobs}}
    queues = list(dict.fromkeys(columns[type(job)].queue for job in jobs))
    with conn.transaction():
        reserved = conn.execute(
            queries.get("job_reserve_many"),
            {"count": len(jobs), "queues": queues, "available_at": available_at, "delay": delay},
        ).fetchone()
        assert reserved is not None
        ids, due_at, _ = reserved
        with conn.cursor().copy(queries.get("job_copy_in")) as copy:
            for start in range(0, len(jobs), STREAM_ROWS):
                piece = slice(start, start + STREAM_ROWS)
                copy.write(_copy_text(ids[piece], jobs[piece], columns, priority, due_at, max_payload_bytes))
    return list(ids)


@dataclass(frozen=True, slots=True)
class _ClassColumns:
    """What every row of one job class shares in the COPY stream."""

    queue: str
    names: str  # the tab-separated queue and job columns, between the id and the payload
    max_attempts: str

    @classmethod
    def of(cls, job_class: type[Job]) -> _ClassColumns:
        queue = validate_queue(job_class.queue)
        tries = _NULL if job_class.tries is None else str(job_class.tries)
        return cls(queue, f"\t{queue}\t{job_class.name}\t", tries)


def _copy_text(
    ids: list[int],
    jobs: Sequence[Job],
    columns: dict[type[Job], _ClassColumns],
    priority: int,
    due_at: str,
    max_payload_bytes: int,
) -> str:
    """Rows in COPY's text format, built in one pass (several times faster than
    write_row per row). Queue and job names are validated and need no escaping; the
    payload is compact JSON, whose only character special to COPY is the backslash
    (JSON escapes control characters itself)."""
    parts: list[str] = []
    for job_id, job in zip(ids, jobs, strict=True):
        shared = columns[type(job)]
        payload = payload_of(job, max_payload_bytes).replace(_BACKSLASH, _BACKSLASH_ESCAPED)
        parts.append(f"{job_id}{shared.names}{payload}\t{priority}\t{shared.max_attempts}\t{due_at}\n")
    return "".join(parts)


_BACKSLASH, _BACKSLASH_ESCAPED, _NULL = "\\", "\\\\", "\\N"
