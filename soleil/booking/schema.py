"""The booking schema: its own migration stream (sql/booking/NNNN_name.sql),
tracked in booking.migrations apart from the runner's, applied with the runner's
migrator (one transaction, under an advisory lock)."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.booking.sql import booking_sql_dir
from soleil.runner import apply_migrations


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the missing booking migrations; returns the versions applied now."""
    return apply_migrations(conn, booking_sql_dir(), "booking")
