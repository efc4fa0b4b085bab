"""CreateBookingJob: transactional, idempotent by request_id, permanent on 23P01,
and exactly one booking even when retried or when its worker is killed."""

from __future__ import annotations

import json
import signal
from datetime import date, timedelta
from typing import Any

import pytest

from soleil.booking import CreateBookingJob, CreateBookingService
from soleil.booking.mailbox import LocalMailbox
from soleil.runner import JobContext
from tests.booking_support import BookingDb, jobs_waiting
from tests.conftest import Processes
from tests.helpers import count_failed, scalar, wait_for

DAY = date.today() + timedelta(days=90)


def job(db: BookingDb, request_id: str = "queued-1", nights: int = 2) -> CreateBookingJob:
    return CreateBookingJob(
        request_id=request_id,
        room_id=db.room_ids[0],
        user_id=db.user_ids[0],
        check_in=DAY,
        check_out=DAY + timedelta(days=nights),
        guest_name="Grace",
        guest_email="grace@example.com",
    )


def booked(db: BookingDb, request_id: str = "queued-1") -> int:
    with db.runner.connection() as conn:
        return int(scalar(conn, "SELECT count(*) FROM booking.bookings WHERE request_id = %s", (request_id,)))


def drained(db: BookingDb) -> bool:
    with db.runner.connection() as conn:
        return jobs_waiting(conn) == 0


def test_a_job_retried_after_a_deadlock_books_once(
    booking_db: BookingDb, booking_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deadlock_on_first_attempt(ctx: JobContext) -> None:
        assert ctx.connection is not None
        if ctx.attempt == 1:
            ctx.connection.execute("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40P01'; END $$")

    monkeypatch.setattr(CreateBookingJob, "after_insert_hook", deadlock_on_first_attempt)
    booking_db.runner.dispatch(job(booking_db), unique_key="queued-1")
    booking_worker()
    wait_for(lambda: drained(booking_db), what="the job's retry")
    assert booked(booking_db) == 1
    with booking_db.runner.connection() as conn:
        assert count_failed(conn) == 0
        # The rolled-back first attempt queued no cache invalidation; the second did.
        assert scalar(conn, "SELECT generation FROM booking.availability_generations") == 1


def test_a_second_dispatch_for_the_same_request_is_a_no_op(
    booking_db: BookingDb, booking_worker: Any
) -> None:
    runner = booking_db.runner
    assert runner.dispatch(job(booking_db), unique_key="queued-1") is not None
    assert runner.dispatch(job(booking_db), unique_key="queued-1") is None  # still queued: refused
    booking_worker()
    wait_for(lambda: drained(booking_db), what="the job")
    assert runner.dispatch(job(booking_db), unique_key="queued-1") is not None  # done: runs, does nothing
    wait_for(lambda: drained(booking_db), what="the repeated job")
    assert booked(booking_db) == 1
    with runner.connection() as conn:
        assert count_failed(conn) == 0


def test_a_taken_room_fails_the_job_at_once_and_mails_the_guest(
    booking_db: BookingDb, booking_worker: Any, mailbox: LocalMailbox
) -> None:
    CreateBookingService(booking_db.runner).create(
        booking_db.room_ids[0], DAY, DAY + timedelta(days=1), "Ada", "ada@example.com", booking_db.user_ids[1]
    )
    booking_db.runner.dispatch(job(booking_db), unique_key="queued-1")
    booking_worker()
    wait_for(lambda: drained(booking_db) and len(mailbox.messages) == 1, what="the failure and its email")
    with booking_db.runner.connection() as conn:
        row = conn.execute("SELECT job, attempts, exception FROM soleil.failed_jobs").fetchone()
    assert row is not None
    assert row[:2] == ("booking.create", 1)  # PermanentFailure: no retry
    assert "already booked" in row[2]
    (message,) = mailbox.messages
    assert message["To"] == "grace@example.com"
    assert message["X-Soleil-Request-Id"] == "queued-1"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes) and b"already booked" in body
    assert booked(booking_db) == 0


@pytest.mark.chaos
def test_a_worker_killed_mid_job_leaves_no_booking_and_the_rescued_job_books_once(
    booking_db: BookingDb, processes: Processes
) -> None:
    booking_db.runner.dispatch(job(booking_db), unique_key="queued-1")
    args = (
        "work",
        "bookings,cache,mail",
        "--app",
        "tests.apps.slow_booking",
        "--heartbeat",
        "0.3",
        "--sleep",
        "0.2",
    )
    first = processes.soleil(*args, database_url=booking_db.url)
    with booking_db.runner.connection() as conn:
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'inserted'") == 1,
            timeout=30,
            what="the first attempt to insert the booking",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert booked(booking_db) == 0  # the insert died with the worker's transaction
        second = processes.soleil(*args, database_url=booking_db.url)
        wait_for(lambda: drained(booking_db) and booked(booking_db) == 1, timeout=30, what="the rescue")
        assert scalar(conn, "SELECT array_agg(attempt ORDER BY attempt) FROM public.runs") == [1, 2]
        assert count_failed(conn) == 0
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=20)
    _, err = processes.output(second)
    created = [json.loads(line) for line in err.splitlines() if "Booking created via job" in line]
    assert len(created) == 1
    assert created[0]["user_id"] == booking_db.user_ids[0] and created[0]["booking_id"] > 0
