"""The booking request (validated before any write) and the booking it becomes."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from soleil.booking.errors import ValidationFailed

# Deliberately simple: a real check is a confirmation email.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class BookingRequest(BaseModel):
    """What a client sends. `request_id` is its idempotency key."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    room_id: int = Field(gt=0)
    user_id: int = Field(gt=0)
    check_in: date
    check_out: date
    guest_name: str = Field(min_length=1, max_length=200)
    guest_email: str = Field(max_length=254)
    additional_data: dict[str, Any] = Field(default_factory=dict)
    request_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=200)

    @field_validator("guest_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.fullmatch(value):
            raise ValueError("is not a valid email address")
        return value

    @model_validator(mode="after")
    def _dates(self) -> BookingRequest:
        if self.check_out <= self.check_in:
            raise ValueError("check_out must be after check_in")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any], today: date | None = None) -> BookingRequest:
        """Validate, or raise ValidationFailed with messages per field."""
        try:
            request = cls.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(_field_errors(exc)) from None
        if request.check_in < (today or date.today()):
            raise ValidationFailed({"check_in": ["must not be in the past"]})
        return request


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "check_out"
        message = str(error["msg"]).removeprefix("Value error, ")
        errors.setdefault(field, []).append(message)
    return errors


class Booking(BaseModel):
    id: int
    user_id: int
    room_id: int
    check_in: date
    check_out: date
    guest_name: str
    guest_email: str
    status: str
    request_id: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Booking:
        return cls(**dict(zip(cls.model_fields, row, strict=True)))
