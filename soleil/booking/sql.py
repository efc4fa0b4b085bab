"""The booking application's named statements (sql/booking/queries.sql) and
migrations (sql/booking/NNNN_name.sql), read with the runner's public helpers."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import LiteralString

from soleil.runner import Query, parse_queries, sql_root


def booking_sql_dir() -> Path:
    return sql_root() / "booking"


@cache
def _load() -> dict[str, Query]:
    path = booking_sql_dir() / "queries.sql"
    return parse_queries(path.read_text(encoding="utf-8"), str(path))


def get(name: str) -> LiteralString:
    """The SQL text of a named booking statement."""
    try:
        return _load()[name].sql
    except KeyError:
        raise KeyError(f"no SQL statement named {name!r} in {booking_sql_dir() / 'queries.sql'}") from None


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of the booking migrations, in order."""
    found = []
    for path in sorted(booking_sql_dir().glob("[0-9][0-9][0-9][0-9]_*.sql")):
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_name.sql")
        found.append((int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    return found
