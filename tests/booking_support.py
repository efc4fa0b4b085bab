"""Fixtures of the booking tests: a migrated, seeded booking database, a runner
whose sessions detect deadlocks fast, and a local SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from soleil.booking import migrate
from soleil.booking.load import seed, with_fast_deadlock_detection
from soleil.booking.mailbox import LocalMailbox
from soleil.runner import Runner, Worker, WorkerOptions
from tests.conftest import FAST

ROOMS = ["Room A", "Room B", "Room C"]


@dataclass
class BookingDb:
    url: str  # with the fast deadlock_timeout, for workers in subprocesses too
    runner: Runner
    room_ids: list[int]
    user_ids: list[int]

    def open_connections(self, count: int) -> None:
        """Open `count` connections up front, so that concurrent requests really run at once."""
        pool = self.runner.pool
        pool.resize(min_size=count, max_size=max(count + 4, pool.max_size))
        pool.wait(timeout=30)


@pytest.fixture
def booking_db(database_url: str) -> Iterator[BookingDb]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        room_ids, user_ids = seed(conn, ROOMS, 8)
        url = with_fast_deadlock_detection(database_url, conn)
    pool = ConnectionPool(url, min_size=2, max_size=40, kwargs={"autocommit": True}, open=False)
    pool.open(wait=True, timeout=30)
    try:
        yield BookingDb(url, Runner(url, pool=pool), room_ids, user_ids)
    finally:
        pool.close()


@pytest.fixture
def booking_worker(booking_db: BookingDb) -> Iterator[Any]:
    """Start in-process workers on the booking database; stopped at teardown."""
    started: list[Worker] = []

    def start(queues: str = "bookings,cache,mail", **options: Any) -> Worker:
        worker = booking_db.runner.worker(queues, WorkerOptions(**{**FAST, **options}))
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=30)


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalMailbox]:
    with LocalMailbox() as box:
        for key, value in box.env().items():
            monkeypatch.setenv(key, value)
        yield box


def jobs_waiting(conn: psycopg.Connection[Any], queues: str = "bookings,cache,mail") -> int:
    row = conn.execute(
        "SELECT count(*) FROM soleil.jobs WHERE queue = ANY(%s)", (queues.split(","),)
    ).fetchone()
    assert row is not None
    return int(row[0])
