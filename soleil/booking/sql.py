"""The booking application's named statements (sql/booking/queries.sql), read
like the runner's own. Its migrations sit beside them (sql/booking/NNNN_name.sql)."""

from __future__ import annotations

from pathlib import Path
from typing import LiteralString

from soleil.runner import SqlStatements, sql_root


def booking_sql_dir() -> Path:
    return sql_root() / "booking"


STATEMENTS = SqlStatements(lambda: [booking_sql_dir() / "queries.sql"])


def get(name: str) -> LiteralString:
    """The SQL text of a named booking statement."""
    return STATEMENTS.get(name)
