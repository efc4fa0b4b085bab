"""Validation of the names that reach SQL as values or LISTEN channels."""

from __future__ import annotations

import re

from soleil.runner.errors import InvalidName

# The only check on queue names: the table only keeps their length within a LISTEN
# channel's (sql/migrations/0003_queue_name_length_check.sql).
# 56 characters: the LISTEN channel is 'soleil:' + queue, and PostgreSQL caps
# identifiers (channel names) at 63 bytes.
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,55}")
_JOB = re.compile(r"[A-Za-z_][A-Za-z0-9_.:<>-]{0,199}")


def validate_queue(name: object) -> str:
    if not isinstance(name, str) or not _QUEUE.fullmatch(name):
        raise InvalidName(
            f"invalid queue name {name!r}: use 1 to 56 letters, digits, '_', '.', ':' or '-',"
            " starting with a letter or digit"
        )
    return name


def validate_queue_filter(name: str | None) -> str | None:
    """A command's optional queue: None means every queue; anything else, the empty
    string included (an unset shell variable), must be a valid name."""
    return None if name is None else validate_queue(name)


def validate_job_name(name: object) -> str:
    if not isinstance(name, str) or not _JOB.fullmatch(name):
        raise InvalidName(
            f"invalid job name {name!r}: use up to 200 letters, digits, '_', '.', ':' or '-',"
            " starting with a letter or '_'"
        )
    return name


def parse_queue_list(text: str) -> list[str]:
    """`a,b,c` into a validated list, in the given (priority) order, without repeats."""
    queues: list[str] = []
    for part in text.split(","):
        name = validate_queue(part.strip())
        if name not in queues:
            queues.append(name)
    return queues


def channel(queue: str) -> str:
    """The LISTEN/NOTIFY channel of a queue (built the same way in sql/queries/jobs.sql)."""
    return "soleil:" + queue
