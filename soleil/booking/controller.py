"""The HTTP-facing entry point, framework-agnostic: request data in, (status,
JSON body) out. Wire it into any web framework's route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from soleil.booking.errors import DeadlockRetriesExceeded, RoomUnavailable, ValidationFailed
from soleil.booking.jobs import CreateBookingJob
from soleil.booking.models import BookingRequest
from soleil.booking.service import CreateBookingService
from soleil.runner import Runner

log = structlog.get_logger("soleil.booking")

Response = tuple[int, dict[str, Any]]
QUEUED_MESSAGE = "Booking request queued, will be processed soon"


class BookingController:
    def __init__(self, runner: Runner, service: CreateBookingService | None = None) -> None:
        self.runner = runner
        self.service = service or CreateBookingService(runner)

    def store(self, data: Mapping[str, Any]) -> Response:
        """POST /bookings: 201 booked, 409 room taken, 422 invalid, 202 queued."""
        try:
            request = BookingRequest.parse(dict(data), self.service.today())
            booking = self.service.create_from(request)
        except ValidationFailed as exc:
            return 422, {"success": False, "message": "The given data was invalid.", "errors": exc.errors}
        except RoomUnavailable as exc:
            return 409, {"success": False, "message": str(exc).capitalize()}
        except DeadlockRetriesExceeded as exc:
            # The transaction has rolled back (a job dispatched inside it would
            # have vanished with it): enqueue now, keyed by the idempotency key
            # so that a client retrying this request does not queue it twice.
            job_id = self.runner.dispatch(
                CreateBookingJob.from_request(request), unique_key=request.request_id
            )
            log.warning(
                "booking.queued",
                request_id=request.request_id,
                job_id=job_id,
                attempts=exc.attempts,
            )
            return 202, {"success": True, "message": QUEUED_MESSAGE, "request_id": request.request_id}
        return 201, {"success": True, "booking": booking.model_dump(mode="json")}
