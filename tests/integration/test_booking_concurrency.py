"""32 threads booking the same three rooms at once, with real deadlocks."""

from __future__ import annotations

import collections
from datetime import date, timedelta
from typing import Any

import psycopg

from soleil.booking import BookingController, BookingRequest, CreateBookingService, RoomService
from soleil.booking import sql as booking_sql
from soleil.booking.load import fire, overlapping_requests
from soleil.booking.mailbox import LocalMailbox
from soleil.booking.service import FaultHook
from tests.booking_support import BookingDb, jobs_waiting
from tests.helpers import scalar, wait_for

THREADS = 32
# Besides the natural deadlocks, these requests deadlock on every try (a real
# 40P01 raised in their transaction), so the 202 path runs in every test run:
# two of the overlapping requests, and two stays on days nobody else wants,
# which CreateBookingJob must then book.
FORCED = {"lonely-0", "lonely-1"}


def deadlock_forcer(forced_errors: list[str]) -> FaultHook:
    def force_deadlock(conn: psycopg.Connection[Any], request: BookingRequest, attempt: int) -> None:
        if request.request_id in FORCED or request.request_id.endswith(("-0", "-1")):
            forced_errors.append(request.request_id)  # list.append is atomic: safe from threads
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40P01'; END $$")

    return force_deadlock


def lonely_requests(db: BookingDb, day: date) -> list[dict[str, Any]]:
    return [
        {
            "room_id": db.room_ids[n],
            "user_id": db.user_ids[n],
            "check_in": (day + timedelta(days=n)).isoformat(),
            "check_out": (day + timedelta(days=n + 1)).isoformat(),
            "guest_name": "Lone Guest",
            "guest_email": "lone@example.com",
            "request_id": f"lonely-{n}",
        }
        for n in range(2)
    ]


def test_concurrent_bookings_never_overlap_and_every_202_ends_booked_or_failed_and_notified(
    booking_db: BookingDb, booking_worker: Any, mailbox: LocalMailbox
) -> None:
    booking_db.open_connections(THREADS + 2)
    forced_errors: list[str] = []
    service = CreateBookingService(booking_db.runner, fault_hook=deadlock_forcer(forced_errors))
    controller = BookingController(booking_db.runner, service)
    first_day = date.today() + timedelta(days=40)
    requests = overlapping_requests(booking_db.room_ids, booking_db.user_ids, THREADS - 2, first_day)
    requests += lonely_requests(booking_db, first_day + timedelta(days=200))
    assert len(requests) == THREADS
    rooms = RoomService(booking_db.runner)
    for room_id in booking_db.room_ids:  # warm the cache: it must not stay stale afterwards
        rooms.availability(room_id, first_day)

    outcomes = fire(controller, requests)

    statuses = collections.Counter(o.status for o in outcomes)
    assert set(statuses) <= {201, 202, 409}, statuses
    assert statuses[201] >= len(booking_db.room_ids)  # every room got its first booking
    assert statuses[202] >= len(FORCED)
    natural_deadlocks = service.transient_errors - len(forced_errors)
    assert natural_deadlocks > 0, "the requests should have deadlocked each other too"
    booking_worker(concurrency=4)
    with booking_db.runner.connection() as conn:
        wait_for(lambda: jobs_waiting(conn) == 0, timeout=30, what="the queues to drain")
        assert scalar(conn, booking_sql.get("booking_overlapping_pairs")) == 0
        booked = collections.Counter(
            row[0] for row in conn.execute("SELECT request_id FROM booking.bookings")
        )
        failed = collections.Counter(
            row[0]
            for row in conn.execute(
                "SELECT payload->>'request_id' FROM soleil.failed_jobs WHERE job = 'booking.create'"
            )
        )
    assert max(booked.values()) == 1  # no request booked twice
    for outcome in outcomes:
        request_id = outcome.request["request_id"]
        if outcome.status == 201:
            assert booked[request_id] == 1 and failed[request_id] == 0
        elif outcome.status == 409:
            assert booked[request_id] == 0 and failed[request_id] == 0
        else:
            assert booked[request_id] + failed[request_id] == 1, request_id
    assert all(booked[request_id] == 1 for request_id in FORCED)  # booked by CreateBookingJob
    notified = collections.Counter(str(m["X-Soleil-Request-Id"]) for m in mailbox.messages)
    assert notified == failed  # one email per failed queued request, none for anything else
    for message in mailbox.messages:
        assert "could not be made" in str(message["Subject"])
    for room_id in booking_db.room_ids:
        cached = rooms.availability(room_id, first_day)
        assert cached.booked_days == rooms.booked_days_uncached(room_id, first_day)
