"""The booking application under kill -9: hundreds of queued booking requests,
many competing for the same rooms and nights, while workers are SIGKILLed at
random. Every request ends exactly once, booked or failed; no room is double
booked; the room counters and the guests' failure notifications match."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from soleil.booking import CreateBookingJob, migrate
from soleil.booking.load import seed, with_fast_deadlock_detection
from soleil.runner import Runner
from tests.chaos.conftest import WorkerStarter
from tests.chaos.monkey import Monkey
from tests.helpers import scalar

REQUESTS = 300
DAYS = 150  # about half the requests find their nights taken
ROOMS = ["Chaos 1", "Chaos 2", "Chaos 3"]
FIRST_NIGHT = date(2031, 3, 1)
BOOKINGS_QUEUE = "SELECT count(*) FROM soleil.jobs WHERE queue = 'bookings'"


@pytest.fixture
def booking_url(chaos_url: str) -> Iterator[str]:
    with psycopg.connect(chaos_url, autocommit=True) as conn:
        migrate(conn)
        yield with_fast_deadlock_detection(chaos_url, conn)


def requests(room_ids: list[int], user_ids: list[int]) -> list[CreateBookingJob]:
    rng = random.Random(11)
    jobs = []
    for n in range(REQUESTS):
        check_in = FIRST_NIGHT + timedelta(days=rng.randrange(DAYS))
        jobs.append(
            CreateBookingJob(
                request_id=f"chaos-{n}-{uuid.uuid4().hex[:6]}",
                room_id=rng.choice(room_ids),
                user_id=rng.choice(user_ids),
                check_in=check_in,
                check_out=check_in + timedelta(days=rng.randint(1, 4)),
                guest_name=f"Guest {n}",
                guest_email=f"guest{n}@example.com",
            )
        )
    return jobs


@pytest.mark.chaos
@pytest.mark.timeout(150)
def test_kill9_books_each_request_exactly_once_and_never_double_books(
    booking_url: str, spawn_worker: WorkerStarter
) -> None:
    with psycopg.connect(booking_url, autocommit=True) as conn:
        room_ids, user_ids = seed(conn, ROOMS, 8)
        jobs = requests(room_ids, user_ids)
        with Runner(booking_url) as runner:
            runner.dispatch_many(jobs)

        def spawn() -> Any:
            return spawn_worker(
                "--concurrency", "4", "--app", "soleil.booking", queues="bookings,cache", url=booking_url
            )

        monkey = Monkey(spawn, [spawn() for _ in range(3)])
        took = monkey.run_until(lambda: scalar(conn, BOOKINGS_QUEUE) == 0, timeout=110)

        booked = {row[0] for row in conn.execute("SELECT request_id FROM booking.bookings")}
        failed: dict[str, str] = dict(
            conn.execute(
                "SELECT payload->>'request_id', exception FROM soleil.failed_jobs"
                " WHERE job = 'booking.create'"
            ).fetchall()
        )
        overlaps = scalar(
            conn,
            """SELECT count(*) FROM booking.bookings a JOIN booking.bookings b
               ON a.room_id = b.room_id AND a.id < b.id AND a.status = 'confirmed' AND b.status = 'confirmed'
              AND daterange(a.check_in, a.check_out) && daterange(b.check_in, b.check_out)""",
        )
        counters_off = scalar(
            conn,
            """SELECT count(*) FROM booking.rooms r WHERE r.id = ANY(%s) AND r.booked_nights <> (
                 SELECT coalesce(sum(b.check_out - b.check_in), 0) FROM booking.bookings b
                 WHERE b.room_id = r.id AND b.status = 'confirmed')""",
            (room_ids,),
        )
        notifications = [
            row[0]
            for row in conn.execute(
                "SELECT payload->>'request_id' FROM soleil.jobs WHERE job = 'booking.failed_notification'"
            )
        ]

    reasons: dict[str, int] = {}
    for text in failed.values():
        head = text.split(":", 1)[0]
        reasons[head] = reasons.get(head, 0) + 1
    print(
        f"\nbooking kill -9: {REQUESTS} queued requests in {took:.1f} s, {len(monkey.killed_pids)} workers "
        f"killed; {len(booked)} booked, {len(failed)} failed {reasons}"
    )
    assert len(monkey.killed_pids) >= 1, "the run was too short to inflict any fault"
    assert booked.isdisjoint(failed), "a request both booked and failed"
    assert booked | set(failed) == {job.request_id for job in jobs}, "every request ended"
    assert overlaps == 0
    assert counters_off == 0, "booked_nights counted a booking twice or missed one"
    assert sorted(notifications) == sorted(failed), "one failure notification per failed request"
