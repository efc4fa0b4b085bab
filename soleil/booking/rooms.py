"""Room availability, read through a cache table in PostgreSQL.

A month's booked days are cached per room (booking.availability_cache,
UNLOGGED) under the room's cache generation; a miss, or a row of an older
generation, recomputes from the bookings. InvalidateCacheOnBookingChange bumps
the generation after every booking change, so once it has run the next read
recomputes: availability is never stale after the listener ran.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from soleil.booking import sql
from soleil.runner import Runner


@dataclass(frozen=True, slots=True)
class Availability:
    room_id: int
    month: date  # first day of the month
    booked_days: tuple[date, ...]
    cached: bool  # served from the cache without recomputing

    @property
    def free_days(self) -> tuple[date, ...]:
        days = calendar.monthrange(self.month.year, self.month.month)[1]
        booked = set(self.booked_days)
        every_day = (self.month + timedelta(days=n) for n in range(days))
        return tuple(day for day in every_day if day not in booked)


class RoomService:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def availability(self, room_id: int, month: date) -> Availability:
        """The room's booked days in the month of `month`."""
        first = month.replace(day=1)
        params = {"room_id": room_id, "month": first}
        with self.runner.connection() as conn:
            row = conn.execute(sql.get("availability_cached"), params).fetchone()
            if row is not None:
                return Availability(room_id, first, tuple(row[0]), cached=True)
            row = conn.execute(sql.get("availability_compute"), params).fetchone()
            if row is None:
                # A newer generation was cached meanwhile; answer from the bookings.
                row = conn.execute(sql.get("availability_booked_days"), params).fetchone()
            assert row is not None
            return Availability(room_id, first, tuple(row[0]), cached=False)

    def booked_days_uncached(self, room_id: int, month: date) -> tuple[date, ...]:
        """The truth the cache must agree with (used by checks and tests)."""
        with self.runner.connection() as conn:
            row = conn.execute(
                sql.get("availability_booked_days"), {"room_id": room_id, "month": month.replace(day=1)}
            ).fetchone()
        assert row is not None
        return tuple(row[0])

    def invalidate(self, room_id: int) -> None:
        with self.runner.connection() as conn:
            conn.execute(sql.get("availability_invalidate"), {"room_id": room_id})
