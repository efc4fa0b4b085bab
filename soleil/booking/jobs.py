"""CreateBookingJob: the fallback for a request that kept deadlocking.

Transactional: the booking insert runs on ctx.connection, the transaction that
also deletes the job row, so the booking and the job's completion commit
together. A crash before that commit leaves neither (the job runs again); a
retry after it finds the request_id booked and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar

import structlog
from psycopg import errors as pg_errors

from soleil.booking.mail import BookingFailedNotification
from soleil.booking.models import BookingRequest
from soleil.booking.service import insert_booking
from soleil.runner import Job, JobContext, PermanentFailure

log = structlog.get_logger("soleil.booking")


class CreateBookingJob(Job):
    name = "booking.create"
    queue = "bookings"
    tries = 3
    backoff = [0.2, 1]
    transactional = True

    # Test hook: called inside the job's transaction right after the insert
    # (tests make it sleep, then kill the worker).
    after_insert_hook: ClassVar[Callable[[JobContext], None] | None] = None

    request_id: str
    room_id: int
    user_id: int
    check_in: date
    check_out: date
    guest_name: str
    guest_email: str
    additional_data: dict[str, Any] = {}

    @classmethod
    def from_request(cls, request: BookingRequest) -> CreateBookingJob:
        return cls(**request.model_dump())

    def request(self) -> BookingRequest:
        return BookingRequest.model_validate(self.model_dump())

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None, "CreateBookingJob is transactional"
        hook = type(self).after_insert_hook

        def after_insert(*_: Any) -> None:
            if hook is not None:
                hook(ctx)

        try:
            booking, created = insert_booking(ctx.connection, ctx.runner, self.request(), after_insert)
        except pg_errors.ExclusionViolation as exc:
            raise PermanentFailure(f"room {self.room_id} is already booked for these dates") from exc
        if not created:
            ctx.log.info("booking.already_created", booking_id=booking.id, request_id=self.request_id)
            return
        ctx.log.info("Booking created via job", booking_id=booking.id, user_id=booking.user_id)

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        ctx.log.error("Booking job failed", user_id=self.user_id, room_id=self.room_id, error=str(exc))
        ctx.dispatch(
            BookingFailedNotification(
                guest_name=self.guest_name,
                guest_email=self.guest_email,
                room_id=self.room_id,
                check_in=self.check_in,
                check_out=self.check_out,
                request_id=self.request_id,
                reason=_reason(exc),
            )
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermanentFailure):
        return str(exc)
    return "the booking system was too busy; it gave up after several tries"
