"""Applies the numbered migrations in `sql/migrations`, once each, in order.

All pending migrations run in one transaction under an advisory lock, so two
hosts running `migrate` at once end with the same schema and no error.
"""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import queries
from soleil.runner.errors import SchemaNotReady


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply what is missing; returns the versions applied now."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(queries.get("migration_lock"))
        conn.execute(queries.get("migration_table_create"))
        done = {row[0] for row in conn.execute(queries.get("migration_applied"))}
        for version, name, sql in queries.migrations():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute(queries.get("migration_record"), {"version": version, "name": name})
            applied_now.append(version)
    return applied_now


def latest_version() -> int:
    return max(version for version, _, _ in queries.migrations())


def current_version(conn: psycopg.Connection[Any]) -> int | None:
    exists = conn.execute(queries.get("schema_migrations_exists")).fetchone()
    if exists is None or not exists[0]:
        return None
    row = conn.execute(queries.get("schema_version")).fetchone()
    return None if row is None else row[0]


def check_schema(conn: psycopg.Connection[Any]) -> int:
    """The schema version, or SchemaNotReady when it is missing or behind this code."""
    version = current_version(conn)
    latest = latest_version()
    if version is None:
        raise SchemaNotReady("the database has no Soleil schema: run `soleil-runner migrate`")
    if version < latest:
        raise SchemaNotReady(
            f"the Soleil schema is at version {version}, this code needs {latest}: "
            "run `soleil-runner migrate`"
        )
    return version
