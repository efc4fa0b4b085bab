"""Fixtures of the booking application's integration tests (see tests/booking_support.py)."""

from tests.booking_support import booking_db, booking_worker, mailbox

__all__ = ["booking_db", "booking_worker", "mailbox"]
