"""Operations on failed jobs: list, show, retry, forget, flush and prune.

Every function takes a Runner and uses its pool. Retries move rows from
soleil.failed_jobs to soleil.jobs in one statement per chunk, so a command
killed half way has moved whole chunks and nothing else; long deletes run in
chunks too, so they never hold many locks for long.
"""

from __future__ import annotations

import json
import uuid as uuid_module
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from soleil.runner import queries
from soleil.runner.chunks import DEFAULT_CHUNK_SIZE, Progress, check_chunk_size, run_chunks
from soleil.runner.errors import ConfigurationError, FailedJobNotFound
from soleil.runner.names import validate_queue_filter

if TYPE_CHECKING:
    from soleil.runner.runner import Runner

DEFAULT_LIST_LIMIT = 50


@dataclass(frozen=True)
class FailedJobSummary:
    uuid: str
    failed_at: datetime
    queue: str
    job: str
    attempts: int
    error: str  # the exception's first line

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failed_at": self.failed_at.isoformat()}


@dataclass(frozen=True)
class FailedJob:
    uuid: str
    failed_at: datetime
    queue: str
    job: str
    attempts: int
    max_attempts: int | None
    priority: int
    job_id: int | None
    exception: str  # first line, then the traceback
    payload: Any

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failed_at": self.failed_at.isoformat()}


def _check_uuids(uuids: Iterable[str]) -> list[str]:
    """Canonical uuids; text that is no uuid can name no failed job."""
    valid: list[str] = []
    invalid: list[str] = []
    for text in uuids:
        try:
            valid.append(str(uuid_module.UUID(text.strip())))
        except ValueError:
            invalid.append(text)
    if invalid:
        raise FailedJobNotFound(invalid)
    return list(dict.fromkeys(valid))


def _check_hours(hours: float | None) -> float | None:
    if hours is not None and hours < 0:
        raise ConfigurationError(f"invalid --hours {hours!r}: use 0 or more")
    return hours


def list_failed(
    runner: Runner, *, queue: str | None = None, limit: int = DEFAULT_LIST_LIMIT
) -> list[FailedJobSummary]:
    """The newest failed jobs first."""
    params = {"queue": validate_queue_filter(queue), "limit": limit}
    with runner.connection() as conn:
        rows = conn.execute(queries.get("failed_list"), params).fetchall()
    return [FailedJobSummary(*row) for row in rows]


def count(runner: Runner, *, queue: str | None = None, older_than_hours: float | None = None) -> int:
    params = {"queue": validate_queue_filter(queue), "hours": _check_hours(older_than_hours)}
    with runner.connection() as conn:
        row = conn.execute(queries.get("failed_count"), params).fetchone()
    return int(row[0]) if row else 0


def show(runner: Runner, uuid: str) -> FailedJob:
    """Everything about one failed job; FailedJobNotFound when there is none."""
    (canonical,) = _check_uuids([uuid])
    with runner.connection() as conn:
        row = conn.execute(queries.get("failed_get"), {"uuid": canonical}).fetchone()
    if row is None:
        raise FailedJobNotFound([uuid])
    uuid_text, failed_at, queue, job, attempts, max_attempts, priority, job_id, exception, payload = row
    if isinstance(payload, str):
        payload = json.loads(payload)
    return FailedJob(
        uuid_text, failed_at, queue, job, attempts, max_attempts, priority, job_id, exception, payload
    )


@dataclass(frozen=True)
class RetryResult:
    retried: list[str]  # uuids put back on their queues
    missing: list[str]  # uuids that name no failed job (never were, or already retried)


def retry(runner: Runner, uuids: Iterable[str]) -> RetryResult:
    """Put these failed jobs back on their queues with attempts reset, in one
    statement. Unknown uuids are reported in `missing`; the others still move."""
    wanted: list[str] = []
    malformed: list[str] = []
    for text in uuids:
        try:
            wanted.append(str(uuid_module.UUID(text.strip())))
        except ValueError:
            malformed.append(text)
    wanted = list(dict.fromkeys(wanted))
    moved: set[str] = set()
    if wanted:
        with runner.connection() as conn:
            moved = {row[0] for row in conn.execute(queries.get("failed_retry_uuids"), {"uuids": wanted})}
    return RetryResult(
        retried=[u for u in wanted if u in moved], missing=malformed + [u for u in wanted if u not in moved]
    )


def retry_all(
    runner: Runner,
    *,
    queue: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """Put every failed job (of one queue) back, one chunk per statement.

    Safe to kill at any point and to run twice at once: each chunk commits
    alone, and concurrent runs take different rows. Returns how many moved."""
    params = {"queue": validate_queue_filter(queue), "limit": check_chunk_size(chunk_size)}
    # The statement returns (queue, moved) per queue of the chunk.
    return run_chunks(
        runner, "failed_retry_chunk", params, progress, lambda cursor: sum(int(r[1]) for r in cursor)
    )


def forget(runner: Runner, uuid: str) -> None:
    """Delete one failed job; FailedJobNotFound when there is none."""
    (canonical,) = _check_uuids([uuid])
    with runner.connection() as conn:
        row = conn.execute(queries.get("failed_forget"), {"uuid": canonical}).fetchone()
    if row is None:
        raise FailedJobNotFound([uuid])


def flush(
    runner: Runner,
    *,
    older_than_hours: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """Delete failed jobs (all, or those older than the hours given); returns how many."""
    params = {"hours": _check_hours(older_than_hours), "limit": check_chunk_size(chunk_size)}
    return run_chunks(runner, "failed_delete_chunk", params, progress)


def prune(
    runner: Runner,
    older_than_hours: float,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> int:
    """Delete failed jobs older than the hours given (a periodic clean-up)."""
    return flush(runner, older_than_hours=older_than_hours, chunk_size=chunk_size, progress=progress)
