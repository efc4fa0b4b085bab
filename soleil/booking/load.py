"""Concurrent booking requests, as the demo and the tests fire them."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import conninfo

from soleil.booking import sql
from soleil.booking.controller import BookingController

DEADLOCK_TIMEOUT_MS = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    request: dict[str, Any]
    status: int
    body: dict[str, Any]


def seed(conn: psycopg.Connection[Any], rooms: list[str], users: int) -> tuple[list[int], list[int]]:
    """Rooms by name and users user1..N@example.com, created when missing."""
    room_ids = [_one(conn, "room_upsert", {"name": name, "capacity": 2}) for name in rooms]
    user_ids = [
        _one(conn, "user_upsert", {"name": f"Guest {n}", "email": f"guest{n}@example.com"})
        for n in range(1, users + 1)
    ]
    return room_ids, user_ids


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> int:
    row = conn.execute(sql.get(name), params).fetchone()
    assert row is not None
    return int(row[0])


def overlapping_requests(
    room_ids: list[int],
    user_ids: list[int],
    count: int,
    first_day: date,
    *,
    spread_days: int = 6,
    random_seed: int = 7,
) -> list[dict[str, Any]]:
    """`count` requests for stays of 2 to 4 nights starting within `spread_days`
    of `first_day`: most of them overlap on some room."""
    rng = random.Random(random_seed)
    requests = []
    for n in range(count):
        check_in = first_day + timedelta(days=rng.randrange(spread_days))
        user_id = rng.choice(user_ids)
        requests.append(
            {
                "room_id": room_ids[n % len(room_ids)],
                "user_id": user_id,
                "check_in": check_in.isoformat(),
                "check_out": (check_in + timedelta(days=rng.randint(2, 4))).isoformat(),
                "guest_name": f"Guest {user_id}",
                "guest_email": f"guest{user_id}@example.com",
                "request_id": f"req-{first_day.isoformat()}-{random_seed}-{n}",
                "additional_data": {"source": "load"},
            }
        )
    return requests


def fire(controller: BookingController, requests: list[dict[str, Any]]) -> list[Outcome]:
    """One thread per request, all released at the same moment."""
    start = threading.Barrier(len(requests))
    outcomes: list[Outcome | None] = [None] * len(requests)

    def send(index: int) -> None:
        start.wait()
        status, body = controller.store(requests[index])
        outcomes[index] = Outcome(requests[index], status, body)

    threads = [threading.Thread(target=send, args=(i,), name=f"request-{i}") for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [outcome for outcome in outcomes if outcome is not None]


def with_fast_deadlock_detection(url: str, conn: psycopg.Connection[Any]) -> str:
    """`url` with a short deadlock_timeout for its sessions, when the role may set it.

    PostgreSQL looks for deadlocks only after a lock wait of deadlock_timeout
    (1 s by default); every deadlock of a concurrent run costs that long. Only a
    superuser may change it, per session here (never for the whole database).
    """
    row = conn.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()
    if row is None or not row[0]:
        return url
    return conninfo.make_conninfo(url, options=f"-c deadlock_timeout={DEADLOCK_TIMEOUT_MS}")
