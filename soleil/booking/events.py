"""Booking events and their listeners (the booking app is the first user of
soleil.runner's events)."""

from __future__ import annotations

from datetime import date

import structlog

from soleil.booking.rooms import RoomService
from soleil.runner import Event, EventContext, Listener

log = structlog.get_logger("soleil.booking")


class BookingCreated(Event):
    name = "booking.created"
    booking_id: int
    room_id: int
    user_id: int
    check_in: date
    check_out: date


class BookingCancelled(Event):
    name = "booking.cancelled"
    booking_id: int
    room_id: int
    check_in: date
    check_out: date


class InvalidateCacheOnBookingChange(Listener[BookingCreated | BookingCancelled]):
    """Queued: runs on the `cache` queue once the booking's transaction commits
    (it is enqueued in that transaction, so a rolled-back booking fires nothing)."""

    name = "booking.invalidate_cache"
    queued = True
    queue = "cache"
    tries = 5
    backoff = [0.1, 1, 5]

    def handle(self, event: BookingCreated | BookingCancelled, ctx: EventContext) -> None:
        RoomService(ctx.runner).invalidate(event.room_id)
        log.info("availability.invalidated", room_id=event.room_id, booking_id=event.booking_id)
