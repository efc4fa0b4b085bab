"""CreateBookingService and the controller: 201, 409, 422, and 202 through
CreateBookingJob when deadlock retries run out."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from soleil.booking import (
    BookingController,
    BookingRequest,
    CreateBookingService,
    RoomUnavailable,
    ValidationFailed,
)
from soleil.booking.controller import QUEUED_MESSAGE
from tests.booking_support import BookingDb, jobs_waiting
from tests.helpers import scalar, wait_for

DAY = date.today() + timedelta(days=60)


def request(db: BookingDb, **overrides: Any) -> dict[str, Any]:
    data = {
        "room_id": db.room_ids[0],
        "user_id": db.user_ids[0],
        "check_in": DAY.isoformat(),
        "check_out": (DAY + timedelta(days=3)).isoformat(),
        "guest_name": "Ada",
        "guest_email": "ada@example.com",
        "request_id": "req-1",
    }
    return {**data, **overrides}


def inject_deadlock(conn: psycopg.Connection[Any]) -> None:
    """A real 40P01 from the server, on every attempt."""
    conn.execute("DO $$ BEGIN RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; END $$")


def bookings(db: BookingDb) -> int:
    with db.runner.connection() as conn:
        return int(scalar(conn, "SELECT count(*) FROM booking.bookings"))


def test_201_then_the_same_request_again_returns_the_same_booking(booking_db: BookingDb) -> None:
    controller = BookingController(booking_db.runner)
    status, body = controller.store(request(booking_db))
    assert status == 201 and body["success"] is True
    assert body["booking"]["room_id"] == booking_db.room_ids[0]
    again_status, again = controller.store(request(booking_db))
    assert again_status == 201 and again["booking"]["id"] == body["booking"]["id"]
    assert bookings(booking_db) == 1


def test_409_on_overlap_but_check_out_day_can_be_the_next_check_in(booking_db: BookingDb) -> None:
    controller = BookingController(booking_db.runner)
    assert controller.store(request(booking_db))[0] == 201
    overlap = request(
        booking_db,
        request_id="req-2",
        check_in=(DAY + timedelta(days=2)).isoformat(),
        check_out=(DAY + timedelta(days=5)).isoformat(),
    )
    status, body = controller.store(overlap)
    assert (status, body["success"]) == (409, False)
    assert "already booked" in body["message"]
    adjacent = request(
        booking_db,
        request_id="req-3",
        check_in=(DAY + timedelta(days=3)).isoformat(),
        check_out=(DAY + timedelta(days=4)).isoformat(),
    )
    assert controller.store(adjacent)[0] == 201
    other_room = request(booking_db, request_id="req-4", room_id=booking_db.room_ids[1])
    assert controller.store(other_room)[0] == 201
    # A 409 is not retried and queues nothing.
    with booking_db.runner.connection() as conn:
        assert jobs_waiting(conn, "bookings") == 0


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"check_out": DAY.isoformat()}, "check_out"),
    ({"check_in": (date.today() - timedelta(days=1)).isoformat()}, "check_in"),
    ({"guest_email": "not-an-email"}, "guest_email"),
    ({"guest_name": ""}, "guest_name"),
    ({"room_id": 999}, "room_id"),
    ({"user_id": 999}, "user_id"),
    ({"check_in": "soon"}, "check_in"),
]


def test_422_names_the_invalid_field_and_writes_nothing(booking_db: BookingDb) -> None:
    controller = BookingController(booking_db.runner)
    for overrides, field in INVALID:
        status, body = controller.store(request(booking_db, **overrides))
        assert (status, body["success"]) == (422, False)
        assert field in body["errors"], (overrides, body)
    assert bookings(booking_db) == 0


def test_the_service_raises_before_writing(booking_db: BookingDb) -> None:
    service = CreateBookingService(booking_db.runner)
    with pytest.raises(ValidationFailed, match="check_out must be after check_in"):
        service.create(booking_db.room_ids[0], DAY, DAY, "Ada", "ada@example.com", booking_db.user_ids[0])
    booking = service.create(
        booking_db.room_ids[0],
        DAY,
        DAY + timedelta(days=1),
        "Ada",
        "ada@example.com",
        booking_db.user_ids[0],
        {"crib": True},
    )
    with pytest.raises(RoomUnavailable):
        service.create(
            booking_db.room_ids[0],
            DAY,
            DAY + timedelta(days=2),
            "Bo",
            "bo@example.com",
            booking_db.user_ids[1],
        )
    assert booking.status == "confirmed"


def test_202_after_more_than_three_deadlocks_queues_one_job_keyed_by_the_request(
    booking_db: BookingDb, booking_worker: Any
) -> None:
    attempts: list[int] = []

    def deadlock(conn: psycopg.Connection[Any], _: BookingRequest, attempt: int) -> None:
        attempts.append(attempt)
        inject_deadlock(conn)

    service = CreateBookingService(booking_db.runner, fault_hook=deadlock, backoff_base=0.001)
    controller = BookingController(booking_db.runner, service)
    status, body = controller.store(request(booking_db))
    assert (status, body) == (202, {"success": True, "message": QUEUED_MESSAGE, "request_id": "req-1"})
    assert attempts == [1, 2, 3, 4]  # the first try and three retries
    assert service.transient_errors == 4
    # The client retries the same request: still one job.
    assert controller.store(request(booking_db))[0] == 202
    with booking_db.runner.connection() as conn:
        assert bookings(booking_db) == 0
        # The rolled-back attempts fired nothing: no cache invalidation was queued.
        assert jobs_waiting(conn, "cache") == 0
        assert scalar(conn, "SELECT unique_key FROM soleil.jobs WHERE queue = 'bookings'") == "req-1"
        assert jobs_waiting(conn, "bookings") == 1
        booking_worker()
        wait_for(lambda: jobs_waiting(conn) == 0, what="the queued booking and its listener")
        assert scalar(conn, "SELECT count(*) FROM booking.bookings WHERE request_id = 'req-1'") == 1
        assert scalar(conn, "SELECT count(*) FROM soleil.failed_jobs") == 0
