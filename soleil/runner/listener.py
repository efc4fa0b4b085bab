"""The LISTEN connection: one direct connection per worker, outside the pool
(LISTEN needs a session; it does not survive PgBouncer's transaction mode).

It hands each batch of notifications, with its connection, to the worker: an idle
worker claims on this connection at once, because its backend and thread are the
ones already awake (a pooled connection idle for a while costs a wake-up or two
more). Losing it costs latency, never jobs, because the worker also polls. It
checks itself with a round trip every few seconds and re-subscribes after any
error, then has the worker look for work in case a notification was missed
meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg import sql

from soleil.runner import db

log = structlog.get_logger("soleil.listener")

HEALTH_CHECK_SECONDS = 5.0
# How operators (and the chaos tests) find this connection in pg_stat_activity.
APPLICATION_NAME = "soleil-listener"
# How long one wait for notifications lasts: bounds how fast stop() takes effect.
WAIT_SLICE_SECONDS = 0.25


class Listener:
    def __init__(
        self,
        url: str,
        channels: list[str],
        on_notifies: Callable[[list[psycopg.Notify], psycopg.Connection[Any]], None],
        on_connect: Callable[[psycopg.Connection[Any]], None],
    ) -> None:
        self._url = url
        self._channels = channels
        self._on_notifies = on_notifies
        self._on_connect = on_connect
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self.connections = 0  # how many times it (re)subscribed; read by tests
        self.backend_pid: int | None = None
        self._thread = threading.Thread(target=self._run, name="soleil-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                conn = db.connect(self._url, application_name=APPLICATION_NAME)
            except Exception as exc:  # DatabaseUnavailable: keep trying until stopped
                log.warning("listener.connect_failed", error=str(exc), retry_in=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                self._listen(conn)
                backoff = 0.1
            except (psycopg.Error, OSError) as exc:
                log.warning("listener.disconnected", error=str(exc).strip() or type(exc).__name__)
                self.ready.clear()
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                conn.close()

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        for channel in self._channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.backend_pid = conn.info.backend_pid
        self.connections += 1
        if self.connections > 1:
            log.info("listener.reconnected", channels=self._channels)
        self._on_connect(conn)  # before ready: a worker reports idle only once it has looked
        self.ready.set()
        checked = time.monotonic()
        while not self._stopping.is_set():
            # stop_after: the generator holds the connection's lock, and the worker
            # may claim on this connection as soon as a batch arrives.
            received = list(conn.notifies(timeout=WAIT_SLICE_SECONDS, stop_after=1))
            if received:
                self._on_notifies(received, conn)
            if time.monotonic() - checked >= HEALTH_CHECK_SECONDS:
                conn.execute("SELECT 1")
                checked = time.monotonic()
