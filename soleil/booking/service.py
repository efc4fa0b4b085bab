"""Creating and cancelling bookings, each in one transaction.

Why bookings deadlock here: the service share-locks the room (it must not
change while it is booked), inserts the booking, then updates the room's
booked_nights. Two concurrent bookings of one room both hold the share lock
when each wants to update the row: PostgreSQL aborts one of them with a
deadlock error (40P01). This is the common way such code is written; locking
the room FOR UPDATE up front would serialise a room's bookings instead. The
application relies on what this module adds: deadlocks and serialization
failures (40001) are transient, so the whole transaction is retried after a
jittered backoff, and the controller queues the request when retries run out.
An exclusion violation (23P01) means the room is taken: never retried.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg_errors

from soleil.booking import sql
from soleil.booking.errors import DeadlockRetriesExceeded, RoomUnavailable, ValidationFailed
from soleil.booking.events import BookingCancelled, BookingCreated
from soleil.booking.models import Booking, BookingRequest
from soleil.runner import Runner

log = structlog.get_logger("soleil.booking")

TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
MAX_DEADLOCK_RETRIES = 3
BACKOFF_BASE_SECONDS = 0.05

# Called inside the booking's transaction, after the insert and before the
# room update, with the request and the attempt number (1 = first try): tests
# inject faults through it.
FaultHook = Callable[[psycopg.Connection[Any], BookingRequest, int], None]


def insert_booking(
    conn: psycopg.Connection[Any],
    runner: Runner,
    request: BookingRequest,
    fault_hook: FaultHook | None = None,
    attempt: int = 1,
) -> tuple[Booking, bool]:
    """Write the booking and fire BookingCreated in the open transaction of `conn`.
    Returns (booking, created); created is False when the request_id had booked already."""
    conn.execute(sql.get("room_lock_for_booking"), {"room_id": request.room_id})
    row = conn.execute(
        sql.get("booking_insert"),
        {
            **request.model_dump(exclude={"additional_data"}),
            "additional_data": json.dumps(request.additional_data),
        },
    ).fetchone()
    if row is None:
        existing = conn.execute(sql.get("booking_find_by_request"), {"request_id": request.request_id})
        found = existing.fetchone()
        assert found is not None, "booking_insert found a conflict on request_id, so the row exists"
        return Booking.from_row(found), False
    if fault_hook is not None:
        fault_hook(conn, request, attempt)
    nights = (request.check_out - request.check_in).days
    conn.execute(sql.get("room_add_booked_nights"), {"room_id": request.room_id, "nights": nights})
    booking = Booking.from_row(row)
    runner.events.dispatch(
        BookingCreated(
            booking_id=booking.id,
            room_id=booking.room_id,
            user_id=booking.user_id,
            check_in=booking.check_in,
            check_out=booking.check_out,
        ),
        connection=conn,
    )
    return booking, True


class CreateBookingService:
    def __init__(
        self,
        runner: Runner,
        *,
        max_retries: int = MAX_DEADLOCK_RETRIES,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        fault_hook: FaultHook | None = None,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.runner = runner
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.fault_hook = fault_hook
        self.today = today
        self._lock = threading.Lock()
        self.transient_errors = 0  # deadlocks and serialization failures met (and retried or not)

    def create(
        self,
        room_id: int,
        check_in: date,
        check_out: date,
        guest_name: str,
        guest_email: str,
        user_id: int,
        additional_data: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> Booking:
        """Book the room, or raise ValidationFailed, RoomUnavailable or DeadlockRetriesExceeded."""
        data: dict[str, Any] = {
            "room_id": room_id,
            "check_in": check_in,
            "check_out": check_out,
            "guest_name": guest_name,
            "guest_email": guest_email,
            "user_id": user_id,
            "additional_data": additional_data or {},
        }
        if request_id is not None:
            data["request_id"] = request_id
        return self.create_from(BookingRequest.parse(data, self.today()))

    def create_from(self, request: BookingRequest) -> Booking:
        self.check_known(request)
        attempt = 1
        while True:
            try:
                with self.runner.connection() as conn, conn.transaction():
                    booking, _ = insert_booking(conn, self.runner, request, self.fault_hook, attempt)
                    return booking
            except pg_errors.ExclusionViolation:
                raise RoomUnavailable(request.room_id) from None
            except TRANSIENT as exc:
                with self._lock:
                    self.transient_errors += 1
                if attempt > self.max_retries:
                    log.warning(
                        "booking.retries_exceeded",
                        request_id=request.request_id,
                        room_id=request.room_id,
                        attempts=attempt,
                    )
                    raise DeadlockRetriesExceeded(attempt) from exc
                delay = random.uniform(0, self.backoff_base * 2**attempt)  # full jitter
                log.info(
                    "booking.retrying",
                    request_id=request.request_id,
                    sqlstate=exc.sqlstate,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                )
                time.sleep(delay)
                attempt += 1

    def check_known(self, request: BookingRequest) -> None:
        """The room and the user exist (a read; nothing is written before this passes)."""
        with self.runner.connection() as conn:
            row = conn.execute(
                sql.get("room_and_user_exist"), {"room_id": request.room_id, "user_id": request.user_id}
            ).fetchone()
        assert row is not None
        errors: dict[str, list[str]] = {}
        if not row[0]:
            errors["room_id"] = [f"no room with id {request.room_id}"]
        if not row[1]:
            errors["user_id"] = [f"no user with id {request.user_id}"]
        if errors:
            raise ValidationFailed(errors)


class CancelBookingService:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def cancel(self, booking_id: int) -> bool:
        """Cancel a confirmed booking; False when there is none to cancel."""
        with self.runner.connection() as conn, conn.transaction():
            row = conn.execute(sql.get("booking_cancel"), {"id": booking_id}).fetchone()
            if row is None:
                return False
            nights = (row[3] - row[2]).days
            conn.execute(sql.get("room_remove_booked_nights"), {"room_id": row[1], "nights": nights})
            self.runner.events.dispatch(
                BookingCancelled(booking_id=row[0], room_id=row[1], check_in=row[2], check_out=row[3]),
                connection=conn,
            )
        return True
