"""Long operations (retry, flush, clear of hundreds of thousands of rows) run as
one short statement per chunk, each committing alone: safe to kill half way,
never holding locks for long, and reporting progress as they go."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from soleil.runner import queries
from soleil.runner.errors import ConfigurationError

if TYPE_CHECKING:
    from soleil.runner.runner import Runner

DEFAULT_CHUNK_SIZE = 5000  # rows per statement: about 50 ms of work, see docs/operations.md

Progress = Callable[[int], None]  # called with the rows done by each chunk


def check_chunk_size(chunk_size: int) -> int:
    if chunk_size < 1:
        raise ConfigurationError(f"invalid chunk size {chunk_size!r}: use 1 or more")
    return chunk_size


def rowcount(cursor: psycopg.Cursor[Any]) -> int:
    return cursor.rowcount


def run_chunks(
    runner: Runner,
    statement: str,
    params: dict[str, Any],
    progress: Progress | None = None,
    done_by: Callable[[psycopg.Cursor[Any]], int] = rowcount,
) -> int:
    """Run the named statement until a chunk does nothing; returns the rows done."""
    total = 0
    with runner.connection() as conn:
        while True:
            done = done_by(conn.execute(queries.get(statement), params))
            if done <= 0:
                return total
            total += done
            if progress is not None:
                progress(done)
