"""Statements sent straight through libpq, as server-side prepared statements.

On the path an idle worker's pickup waits on (a dispatch in a transaction of its
own, then the claim of the job its notification names) and for a transactional
job's fence, psycopg's execute() costs more than the statement: a cursor, its
adapters, the query's conversion and the result's loaders, about 0.2 ms of
Python on a CPU that has just woken up. These statements skip that layer. Their
SQL comes from sql/queries like every other (its %(name)s placeholders numbered
$1, $2, ... here), is prepared once per connection, and takes its parameters as
text, which PostgreSQL reads as the types the statement gives them.

A handler that runs DEALLOCATE ALL or DISCARD ALL on a pooled connection
unprepares them; the next use then fails with 26000, and the statement is
prepared and sent again.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Mapping
from datetime import date
from typing import Any

import psycopg
from psycopg import errors, generators, pq
from psycopg.pq.abc import PGresult

from soleil.runner import queries

UNDEFINED_STATEMENT = "26000"  # invalid_sql_statement_name: unprepared meanwhile
_UNDEFINED_STATEMENT = UNDEFINED_STATEMENT.encode()
_DUPLICATE_STATEMENT = b"42P05"  # duplicate_prepared_statement
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_FAILED = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE, pq.ExecStatus.NONFATAL_ERROR)


class Statement:
    """One statement of sql/queries, prepared on each connection at its first use."""

    def __init__(self, query_name: str) -> None:
        self.query_name = query_name
        self._compiled: tuple[bytes, tuple[str, ...]] | None = None
        self._name: bytes | None = None
        # Connections on which it is prepared, as far as Soleil knows.
        self._prepared_on: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    @property
    def name(self) -> bytes:
        """The statement's name on the server: its query's, and a digest of its
        text. A statement whose text (its columns, say) changed between two
        versions of Soleil then never meets the other version's under the same
        name on a server session that outlived a process (a pooler's), which a
        statement already prepared under its name is taken to be (_prepare)."""
        if self._name is None:
            digest = hashlib.sha256(self.sql).hexdigest()[:8]
            self._name = f"soleil_{self.query_name}_{digest}".encode()
        return self._name

    @property
    def sql(self) -> bytes:
        return self._compile()[0]

    def params(self, conn: psycopg.Connection[Any], values: Mapping[str, object]) -> list[bytes | None]:
        """The parameters, in the statement's order, as text."""
        ordered = [values[name] for name in self._compile()[1]]
        # ASCII reads the same in every client encoding: the connection's is only
        # looked up (an object and a lookup per call) when a string needs it.
        ascii_only = all(value.isascii() for value in ordered if isinstance(value, str))
        encoding = "ascii" if ascii_only else text_encoding(conn)
        return [_text(value, encoding) for value in ordered]

    def is_prepared_on(self, conn: psycopg.Connection[Any]) -> bool:
        return conn in self._prepared_on

    def prepared(self, conn: psycopg.Connection[Any]) -> None:
        self._prepared_on.add(conn)

    def unprepared(self, conn: psycopg.Connection[Any]) -> None:
        self._prepared_on.discard(conn)

    def execute(self, conn: psycopg.Connection[Any], values: Mapping[str, object]) -> PGresult:
        """Run on a connection with no transaction open (unprepared meanwhile, the
        statement is sent again, which an aborted transaction would refuse);
        returns its result, or raises psycopg's error for it."""
        params = self.params(conn, values)
        with conn.lock:
            if not self.is_prepared_on(conn):
                self._prepare(conn)
            result = _one_result(conn, self.name, params)
            if (
                result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT
                and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
            ):
                self._prepare(conn)
                result = _one_result(conn, self.name, params)
        if result.status in _FAILED:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
        return result

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        self.unprepared(conn)
        conn.pgconn.send_prepare(self.name, self.sql)
        (result,) = conn.wait(generators.execute(conn.pgconn))
        # Already there: prepared by a call interrupted before it could note it
        # (Ctrl-C while the reply was on its way). The name is Soleil's own.
        duplicate = result.error_field(pq.DiagnosticField.SQLSTATE) == _DUPLICATE_STATEMENT
        if result.status != pq.ExecStatus.COMMAND_OK and not duplicate:
            raise errors.error_from_result(result, encoding=conn.info.encoding)
        self.prepared(conn)

    def _compile(self) -> tuple[bytes, tuple[str, ...]]:
        if self._compiled is None:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) is None:
                    return "%"  # %% in psycopg's syntax
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            sql = _PLACEHOLDER.sub(number, queries.get(self.query_name))
            self._compiled = sql.encode(), tuple(names)
        return self._compiled


def text_encoding(conn: psycopg.Connection[Any]) -> str:
    """How strings travel on this connection: its client encoding, and UTF-8 on a
    SQL_ASCII database (which stores bytes as they come), as psycopg does."""
    encoding = conn.info.encoding
    return "utf-8" if encoding == "ascii" else encoding


def _one_result(conn: psycopg.Connection[Any], name: bytes, params: list[bytes | None]) -> PGresult:
    conn.pgconn.send_query_prepared(name, params)
    results: list[PGresult] = conn.wait(generators.execute(conn.pgconn))
    return results[-1]


def _text(value: object, encoding: str) -> bytes | None:
    """A parameter in PostgreSQL's text input format."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int | float):
        return str(value).encode()
    if isinstance(value, str):
        if "\x00" in value:  # libpq would cut the parameter short there
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return value.encode(encoding)
    if isinstance(value, date):  # a datetime, or a date (midnight)
        return value.isoformat().encode()
    if isinstance(value, list | tuple) and all(type(item) is int for item in value):
        return ("{" + ",".join(str(item) for item in value) + "}").encode()
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        # Validated names (queues): no quote or backslash to escape; quoted so
        # that a queue named NULL stays a name.
        return ("{" + ",".join(f'"{item}"' for item in value) + "}").encode(encoding)
    raise TypeError(f"no text form for a {type(value).__name__} parameter")
