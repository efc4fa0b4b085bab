"""The hostel booking application: Soleil's reference user.

It uses only soleil.runner's public API. A worker running its jobs and
listeners imports it with `--app soleil.booking`.
"""

from soleil.booking.controller import BookingController
from soleil.booking.errors import BookingError, DeadlockRetriesExceeded, RoomUnavailable, ValidationFailed
from soleil.booking.events import BookingCancelled, BookingCreated, InvalidateCacheOnBookingChange
from soleil.booking.jobs import CreateBookingJob
from soleil.booking.mail import BookingFailedNotification, SmtpSettings
from soleil.booking.models import Booking, BookingRequest
from soleil.booking.rooms import Availability, RoomService
from soleil.booking.schema import migrate
from soleil.booking.service import CancelBookingService, CreateBookingService

QUEUES = "bookings,cache,mail"  # the queues a worker for this app serves, in priority order

__all__ = [
    "QUEUES",
    "Availability",
    "Booking",
    "BookingCancelled",
    "BookingController",
    "BookingCreated",
    "BookingError",
    "BookingFailedNotification",
    "BookingRequest",
    "CancelBookingService",
    "CreateBookingJob",
    "CreateBookingService",
    "DeadlockRetriesExceeded",
    "InvalidateCacheOnBookingChange",
    "RoomService",
    "RoomUnavailable",
    "SmtpSettings",
    "ValidationFailed",
    "migrate",
]
