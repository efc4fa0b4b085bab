"""RoomService.availability reads through the cache table; once the queued
InvalidateCacheOnBookingChange listener has run, it is never stale."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from typing import Any

from soleil.booking import CancelBookingService, CreateBookingService, RoomService
from tests.booking_support import BookingDb, jobs_waiting
from tests.helpers import wait_for

MONTH = (date.today().replace(day=1) + timedelta(days=100)).replace(day=1)


def drained(db: BookingDb) -> bool:
    with db.runner.connection() as conn:
        return jobs_waiting(conn) == 0


def test_a_booking_shows_once_its_listener_ran_and_a_cancellation_frees_the_days(
    booking_db: BookingDb, booking_worker: Any
) -> None:
    rooms = RoomService(booking_db.runner)
    room = booking_db.room_ids[0]
    first = rooms.availability(room, MONTH)
    assert (first.cached, first.booked_days) == (False, ())
    assert rooms.availability(room, MONTH).cached  # a hit now

    booking = CreateBookingService(booking_db.runner).create(
        room,
        MONTH + timedelta(days=3),
        MONTH + timedelta(days=5),
        "Ada",
        "ada@example.com",
        booking_db.user_ids[0],
    )
    # Before the listener runs the cache may lag (that is what the queue is for)...
    assert rooms.availability(room, MONTH).booked_days == ()
    booking_worker("cache")
    wait_for(lambda: drained(booking_db), what="the cache listener")
    # ...after it, never.
    after = rooms.availability(room, MONTH)
    assert (after.cached, after.booked_days) == (
        False,
        (MONTH + timedelta(days=3), MONTH + timedelta(days=4)),
    )
    assert len(after.free_days) == len(first.free_days) - 2

    assert CancelBookingService(booking_db.runner).cancel(booking.id)
    assert not CancelBookingService(booking_db.runner).cancel(booking.id)
    wait_for(lambda: drained(booking_db), what="the cache listener after the cancellation")
    assert rooms.availability(room, MONTH).booked_days == ()


def test_readers_racing_bookings_never_leave_a_stale_month(
    booking_db: BookingDb, booking_worker: Any
) -> None:
    rooms = RoomService(booking_db.runner)
    service = CreateBookingService(booking_db.runner)
    room = booking_db.room_ids[1]
    booking_worker("cache", concurrency=2)
    stop = threading.Event()

    def read_constantly() -> None:
        while not stop.is_set():
            rooms.availability(room, MONTH)

    readers = [threading.Thread(target=read_constantly) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for n in range(0, 20, 2):  # ten two-night stays, one after the other
            service.create(
                room,
                MONTH + timedelta(days=n),
                MONTH + timedelta(days=n + 2),
                "Bo",
                "bo@example.com",
                booking_db.user_ids[1],
                request_id=f"race-{n}",
            )
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    wait_for(lambda: drained(booking_db), what="every invalidation")
    assert rooms.availability(room, MONTH).booked_days == rooms.booked_days_uncached(room, MONTH)
    assert len(rooms.booked_days_uncached(room, MONTH)) == 20
