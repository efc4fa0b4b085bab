"""The booking schema: its own migration stream, tracked in booking.migrations,
separate from the runner's (soleil.migrations). Same rules as the runner's
migrator: all pending files in one transaction, under an advisory lock."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.booking import sql


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the missing booking migrations; returns the versions applied now."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(sql.get("booking_migration_lock"))
        conn.execute(sql.get("booking_migration_table_create"))
        done = {row[0] for row in conn.execute(sql.get("booking_migration_applied"))}
        for version, name, text in sql.migrations():
            if version not in done:
                conn.execute(text.encode())
                conn.execute(sql.get("booking_migration_record"), {"version": version, "name": name})
                applied_now.append(version)
    return applied_now
