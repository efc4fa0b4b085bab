"""Least-privilege roles: a dispatcher that may only insert jobs, a worker that
claims, completes and fails them (no DDL), an operator that manages failed jobs,
queues and reads status. See sql/queries/roles.sql for exactly what each gets.

The roles are NOLOGIN groups; operators grant them to login roles
(`GRANT soleil_worker TO app_worker`). Re-run `grant` after every `migrate`:
privileges are given table by table, so a table added later needs it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any

import psycopg
from psycopg import sql

from soleil.runner import queries
from soleil.runner.errors import InvalidName
from soleil.runner.migrate import check_schema

DEFAULT_PREFIX = "soleil_"
_MAX_ROLE_NAME = 63  # NAMEDATALEN - 1


@dataclass(frozen=True)
class RoleNames:
    dispatcher: str = "soleil_dispatcher"
    worker: str = "soleil_worker"
    operator: str = "soleil_operator"

    @classmethod
    def with_prefix(cls, prefix: str) -> RoleNames:
        if not prefix:
            # Roles named plain "worker" or "operator" may well exist for other uses,
            # and would be granted Soleil's privileges without a word.
            raise InvalidName("invalid role prefix '': give one, such as the default 'soleil_'")
        names = cls(f"{prefix}dispatcher", f"{prefix}worker", f"{prefix}operator")
        for name in astuple(names):
            if not (0 < len(name) <= _MAX_ROLE_NAME and name.replace("_", "a").isalnum() and name.isascii()):
                raise InvalidName(
                    f"invalid role name {name!r}: use letters, digits and '_', "
                    f"at most {_MAX_ROLE_NAME} characters"
                )
        return names

    def all(self) -> tuple[str, str, str]:
        return (self.dispatcher, self.worker, self.operator)


def _statement(name: str, names: RoleNames, **extra: str) -> sql.Composed:
    identifiers = {
        "dispatcher": sql.Identifier(names.dispatcher),
        "worker": sql.Identifier(names.worker),
        "operator": sql.Identifier(names.operator),
        **{key: sql.Identifier(value) for key, value in extra.items()},
    }
    return sql.SQL(queries.get(name)).format(**identifiers)


def grant(conn: psycopg.Connection[Any], names: RoleNames | None = None) -> list[str]:
    """Create the missing roles and (re)grant their privileges on this database's
    schema, in one transaction. Returns the names of the roles it created."""
    names = names or RoleNames()
    check_schema(conn)
    created = []
    with conn.transaction():
        for role in names.all():
            exists = conn.execute(queries.get("role_exists"), {"role": role}).fetchone()
            if not (exists and exists[0]):
                conn.execute(_statement("role_create", names, role=role))
                created.append(role)
        conn.execute(_statement("role_revoke_all", names))
        for kind in ("dispatcher", "worker", "operator"):
            conn.execute(_statement(f"role_grant_{kind}", names))
    return created
