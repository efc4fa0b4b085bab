"""Applies the numbered migrations in `sql/migrations`, once each, in order.

All pending migrations run in one transaction under an advisory lock, so two
hosts running `migrate` at once end with the same schema and no error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from soleil.runner import queries
from soleil.runner.errors import SchemaNotReady

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply what is missing of the runner's schema; returns the versions applied now."""
    return apply_migrations(conn, queries.sql_root() / "migrations", "soleil")


def apply_migrations(conn: psycopg.Connection[Any], directory: Path, schema: str) -> list[int]:
    """Apply the NNNN_name.sql files of `directory` not yet recorded in
    `<schema>.migrations`: all in one transaction, under an advisory lock named
    after the schema. Applications (the booking app) keep their own stream this way."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}")

    def statement(name: str) -> sql.Composed:
        return sql.SQL(queries.get(name)).format(schema=sql.Identifier(schema))

    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(queries.get("migration_lock"), {"lock_name": f"{schema}.migrate"})
        conn.execute(statement("migration_table_create"))
        done = {row[0] for row in conn.execute(statement("migration_applied"))}
        for version, name, text in queries.migrations(directory):
            if version in done:
                continue
            conn.execute(text.encode())
            conn.execute(statement("migration_record"), {"version": version, "name": name})
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


NO_SCHEMA = "the database has no Soleil schema: run `soleil-runner migrate`"
# What a statement of Soleil's meets in a database never migrated.
SCHEMA_MISSING_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
)


def check_schema(conn: psycopg.Connection[Any]) -> int:
    """The schema version, or SchemaNotReady when it is missing or behind this code."""
    version = current_version(conn)
    latest = latest_version()
    if version is None:
        raise SchemaNotReady(NO_SCHEMA)
    if version < latest:
        raise SchemaNotReady(
            f"the Soleil schema is at version {version}, this code needs {latest}: "
            "run `soleil-runner migrate`"
        )
    return version
