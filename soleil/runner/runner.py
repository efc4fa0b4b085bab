"""The Runner: Soleil's entry point for applications. It owns the connection
pool and dispatches jobs; workers, migrations and operations hang off it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from soleil.runner import db, dispatch
from soleil.runner.dispatch import Row
from soleil.runner.errors import DatabaseUnavailable, SchemaNotReady
from soleil.runner.events import Events
from soleil.runner.job import Job
from soleil.runner.migrate import NO_SCHEMA, SCHEMA_MISSING_ERRORS, check_schema, migrate

if TYPE_CHECKING:
    from soleil.runner.worker import Worker, WorkerOptions

POOL_OPEN_TIMEOUT_SECONDS = 10.0


def _callers_to_retry(exc: psycopg.OperationalError) -> bool:
    """Deadlocks and serialization failures are OperationalErrors too, but the
    caller's to retry: only connection-level failures become DatabaseUnavailable."""
    return (exc.sqlstate or "").startswith("40")  # class 40: transaction rollback


class Runner:
    """Dispatches jobs and builds workers.

    `Runner(database_url)` opens its own pool on first use; `Runner(pool=...)`
    uses an existing psycopg_pool.ConnectionPool (whose connections must be in
    autocommit mode) and leaves it open on close().
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        pool: ConnectionPool | None = None,
        pool_size: int = 10,
        max_payload_bytes: int = dispatch.DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if pool is None:
            self.database_url = db.resolve_url(database_url)
        else:
            self.database_url = database_url or str(pool.conninfo)
        self._pool = pool
        self._pool_lock = threading.Lock()
        self._owns_pool = pool is None
        self.pool_size = pool_size
        self.max_payload_bytes = max_payload_bytes

    @classmethod
    def from_env(cls, **options: Any) -> Runner:
        """A runner on $SOLEIL_DATABASE_URL."""
        return cls(None, **options)

    # -- connections -------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._pool_lock:  # threads dispatching at once must share one pool
                if self._pool is None:
                    self._pool = self._open_pool()
        return self._pool

    def _open_pool(self) -> ConnectionPool:
        # One direct attempt first: a wrong or unreachable database fails at once
        # with libpq's reason, instead of after the pool's open timeout.
        db.connect(self.database_url).close()
        pool = db.make_pool(self.database_url, max_size=self.pool_size, name="soleil-runner")
        try:
            pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_SECONDS)
        except PoolTimeout:
            pool.close()
            self._raise_unavailable()
        return pool

    def _raise_unavailable(self) -> None:
        # The pool only says it timed out; one direct attempt gives the real reason.
        db.connect(self.database_url).close()
        raise DatabaseUnavailable(f"cannot reach the database at {db.describe(self.database_url)}")

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection, with connection failures made clear."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if _callers_to_retry(exc):
                raise
            raise db.unavailable(self.database_url, exc) from exc

    def close(self) -> None:
        if self._pool is not None and self._owns_pool:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create or update the `soleil` schema; returns the versions applied."""
        conn = db.connect(self.database_url)
        try:
            return migrate(conn)
        finally:
            conn.close()

    def check_schema(self) -> int:
        with self.connection() as conn:
            return check_schema(conn)

    # -- dispatch ----------------------------------------------------------

    def dispatch(
        self,
        job: Job,
        *,
        delay: float | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
        unique_key: str | None = None,
        queue: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> int | None:
        """Enqueue one job; returns its id, or None when `unique_key` is taken.

        With `connection`, the row is written in that connection's open
        transaction: invisible until it commits, gone if it rolls back.
        Higher `priority` runs first; `delay` (seconds, from this call, even in a
        transaction that began earlier) or `available_at` hold it back.
        """
        row = dispatch.to_row(job, self.max_payload_bytes, queue)
        seconds = dispatch.timing(priority, delay)
        try:
            if connection is not None:
                return dispatch.insert_one(
                    connection, row, priority, seconds, available_at, unique_key, own_transaction=False
                )
            return self._insert_alone(row, priority, seconds, available_at, unique_key)
        except SCHEMA_MISSING_ERRORS:
            raise SchemaNotReady(NO_SCHEMA) from None

    def _insert_alone(
        self, row: Row, priority: int, seconds: float, available_at: datetime | None, key: str | None
    ) -> int | None:
        # getconn/putconn rather than the pool's context manager, whose commit on
        # exit does nothing on an autocommit connection but costs 50-130 µs of
        # Python after idleness, on the path an idle worker's pickup waits on.
        pool = self.pool
        try:
            conn = pool.getconn()
            try:
                return dispatch.insert_one(
                    conn, row, priority, seconds, available_at, key, own_transaction=True
                )
            finally:
                pool.putconn(conn)
        except psycopg.OperationalError as exc:
            if _callers_to_retry(exc):
                raise
            raise db.unavailable(self.database_url, exc) from exc

    def dispatch_many(
        self,
        jobs: Iterable[Job],
        *,
        delay: float | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[int]:
        """Enqueue many jobs with one COPY; returns their ids in order. All or none are written."""
        batch = list(jobs)
        limit, seconds = self.max_payload_bytes, dispatch.timing(priority, delay)
        try:
            if connection is not None:
                return dispatch.insert_many(connection, batch, limit, priority, seconds, available_at)
            with self.connection() as conn:
                return dispatch.insert_many(conn, batch, limit, priority, seconds, available_at)
        except SCHEMA_MISSING_ERRORS:
            raise SchemaNotReady(NO_SCHEMA) from None

    # -- events ------------------------------------------------------------

    @property
    def events(self) -> Events:
        """Dispatches events: `runner.events.dispatch(event, connection=conn)`."""
        return Events(self)

    # -- workers -----------------------------------------------------------

    def worker(self, queues: str | list[str], options: WorkerOptions | None = None) -> Worker:
        """A worker for these queues (a list or "a,b,c", in priority order)."""
        from soleil.runner.worker import Worker, WorkerOptions

        return Worker(self, queues, options or WorkerOptions())
