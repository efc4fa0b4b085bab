"""The booking application's errors; each maps to one HTTP answer in controller.py."""

from __future__ import annotations

from soleil.runner import SoleilError


class BookingError(SoleilError):
    """The booking could not be made."""


class ValidationFailed(BookingError, ValueError):
    """The booking request is not valid (HTTP 422)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        details = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
        super().__init__(f"invalid booking request: {details}")


class RoomUnavailable(BookingError):
    """The room is already booked for some of these dates (HTTP 409)."""

    def __init__(self, room_id: int) -> None:
        self.room_id = room_id
        super().__init__(f"room {room_id} is already booked for some of these dates")


class DeadlockRetriesExceeded(BookingError):
    """The booking kept deadlocking with concurrent bookings (HTTP 202 through a queued job)."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"the booking deadlocked {attempts} times in a row with concurrent bookings")
