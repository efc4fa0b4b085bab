"""Database URLs, their redaction, and the connections Soleil opens."""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed

from soleil.runner.errors import ConfigurationError, DatabaseUnavailable

ENV_DATABASE_URL = "SOLEIL_DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 5

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)", re.I)
# A quoted value may be unterminated in a malformed string: redact to its end then.
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*(?:'|$)|[^\s']+)", re.I)


def redact(text: str, url: str | None = None) -> str:
    """`text` with every database password replaced by `***`."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    password = _password_of(url) if url else None
    if password and len(password) >= 3:
        text = text.replace(password, "***")
    return text


def _password_of(url: str) -> str | None:
    try:
        return pg_conninfo.conninfo_to_dict(url).get("password")  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        # A malformed URL: libpq's message may quote the password, so find it by shape.
        match = _URL_PASSWORD.search(url) or _KV_PASSWORD.search(url)
        return match.group("secret").strip("'") if match else None


def resolve_url(url: str | None = None) -> str:
    """The database URL given, else $SOLEIL_DATABASE_URL; checked for syntax."""
    url = url or os.environ.get(ENV_DATABASE_URL)
    if not url:
        raise ConfigurationError(
            f"no database: pass --database-url or set {ENV_DATABASE_URL} "
            "(e.g. postgresql://user@localhost/app)"
        )
    if _password_needs_encoding(url):
        # libpq would read pieces of the password as host, port or database name,
        # and print them in its errors; nothing of the URL is echoed here.
        raise ConfigurationError(
            "invalid database URL: its user, password or database name holds a '/' or '@',"
            " which must be percent-encoded (%2F, %40)"
        )
    try:
        pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        if "://" in url and "@" in url.partition("://")[2].partition("/")[2]:
            # An '@' past the first '/' that libpq could not parse: a password holding
            # '/' and then '?', whose pieces libpq's message would quote.
            raise ConfigurationError(
                "invalid database URL: if its password holds '/', '?', '#' or '@',"
                " percent-encode them (%2F, %3F, %23, %40)"
            ) from None
        raise ConfigurationError(
            f"invalid database URL {redact(url)!r}: {redact(first_line(exc), url)}"
        ) from None
    return url


_URI = re.compile(r"[a-z][a-z0-9+.-]*://(?:[^@/]*@)?(?P<net>[^/?]*)(?P<path>/[^?]*)?", re.I | re.S)


def _password_needs_encoding(url: str) -> bool:
    """libpq ends a URI's user and password at the first '@' before the first '/':
    an '@' after it in the hosts or the path means a user or password holding an
    unencoded '@' or '/', whose pieces libpq would take for host, port or database."""
    match = _URI.match(url)
    return match is not None and "@" in (match.group("net") or "") + (match.group("path") or "")


def describe(url: str) -> str:
    """A password-free description of where a URL points, for logs and status."""
    try:
        parts = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact(url)
    host = parts.get("host") or "local socket"
    port = parts.get("port") or "5432"
    return f"{parts.get('user') or 'default user'}@{host}:{port}/{parts.get('dbname') or '?'}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """A direct connection (the LISTEN connection, the migrator), with a clear error."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs)
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"cannot reach the database at {describe(url)}: {redact(first_line(exc), url)}"
    )


_JOBS_TRANSACTION = (
    "{} is not allowed in a transactional job's handle(): Soleil commits the job's"
    " transaction together with the job's deletion; use ctx.connection.transaction()"
    " for a savepoint"
)


class PooledConnection(psycopg.Connection[TupleRow]):
    """The connections of Soleil's pools. While a transactional job's handler runs
    on one (`in_jobs_transaction`), the transaction is Soleil's: commit() and
    rollback() raise, as they do inside psycopg's own transaction() block, whose
    BEGIN Soleil sends itself (transaction.py)."""

    in_jobs_transaction = False

    def commit(self) -> None:
        if self.in_jobs_transaction:
            raise psycopg.ProgrammingError(_JOBS_TRANSACTION.format("commit()"))
        super().commit()

    def rollback(self) -> None:
        if self.in_jobs_transaction:
            raise psycopg.ProgrammingError(_JOBS_TRANSACTION.format("rollback()"))
        super().rollback()


def guard_transaction(conn: psycopg.Connection[Any], guarded: bool) -> None:
    """Make `conn`'s commit() and rollback() raise (or work again)."""
    if isinstance(conn, PooledConnection):
        conn.in_jobs_transaction = guarded


REGROW_SECONDS = 1.0


class Pool(ConnectionPool):
    """psycopg_pool's pool, trying again while callers wait for a connection.

    With the database down, the pool's attempt to add a connection gives up after
    `reconnect_timeout` (0 here: two tries), and only a new request starts another.
    A caller already waiting would sleep out its whole timeout (30 s) even when the
    database came back meanwhile: a failed attempt with callers waiting schedules
    the next one a second later.
    """

    def reconnect_failed(self) -> None:
        super().reconnect_failed()
        if self.get_stats().get("requests_waiting", 0):
            retry = threading.Timer(REGROW_SECONDS, self._grow_for_waiters)
            retry.daemon = True
            retry.start()

    def _grow_for_waiters(self) -> None:
        # check() starts adding a connection when the pool has room and is not already.
        with contextlib.suppress(PoolClosed):
            if not self.closed:
                self.check()


def make_pool(url: str, *, max_size: int, name: str = "soleil") -> ConnectionPool:
    """A pool of autocommit connections; statements that must commit together use
    `with conn.transaction()`. The pool replaces broken connections by itself."""
    return Pool(
        url,
        connection_class=PooledConnection,
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        check=check_quietly,
        reconnect_timeout=0,  # keep retrying: a worker outlives a database restart
    )


def check_quietly(conn: psycopg.Connection[Any]) -> None:
    """The pool's check on every checkout, without a round trip while the socket is quiet.

    psycopg_pool's own check sends an empty query: one extra round trip per claim,
    flush and dispatch. A server that closed the session (restart, terminated
    backend, crash) leaves the socket readable (its FATAL message or EOF), so only
    then is the full check needed; it raises and the pool replaces the connection.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)
