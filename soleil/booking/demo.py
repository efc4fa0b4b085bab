"""The booking demo (`soleil-runner demo`): concurrent booking requests against
a few rooms, a worker draining the queues, and a summary that checks the result.

Runs on the database the URL names, creating it when missing. Idempotent: the
demo's rooms are emptied before each run, so a second run behaves like the first.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import ConnectionPool

from soleil.booking import QUEUES, schema
from soleil.booking import sql as booking_sql
from soleil.booking.controller import BookingController
from soleil.booking.load import Outcome, fire, overlapping_requests, seed, with_fast_deadlock_detection
from soleil.booking.mailbox import LocalMailbox
from soleil.booking.service import CreateBookingService
from soleil.runner import DatabaseUnavailable, Runner, WorkerOptions

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/soleil_demo"
ROOMS = ["Demo room 1", "Demo room 2", "Demo room 3"]
USERS = 8
DRAIN_TIMEOUT_SECONDS = 60.0
SPREAD_DAYS = 12  # stays start within this many days: most requests overlap another


@dataclass
class Summary:
    database: str
    requests: int
    statuses: collections.Counter[int]
    deadlocks: int
    bookings: int
    booked_via_job: int
    jobs_failed: int
    notifications: int
    mail: str
    overlapping_pairs: int
    unaccounted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.overlapping_pairs == 0 and not self.unaccounted

    def lines(self) -> list[str]:
        status = self.statuses
        verdict = "OK" if self.overlapping_pairs == 0 else "FAILED"
        lines = [
            f"Soleil booking demo on {self.database}",
            f"  {self.requests} concurrent requests for {len(ROOMS)} rooms",
            f"  201 booked at once:            {status[201]:>4}",
            f"  202 queued after deadlocks:    {status[202]:>4}",
            f"  409 room taken:                {status[409]:>4}",
            f"  422 invalid:                   {status[422]:>4}",
            f"  deadlocks met:                 {self.deadlocks:>4}",
            f"  bookings made:                 {self.bookings:>4}"
            f"  ({self.booked_via_job} of them by CreateBookingJob)",
            f"  jobs failed:                   {self.jobs_failed:>4}",
            f"  guests notified of a failure:  {self.notifications:>4}  ({self.mail})",
            f"  overlapping bookings:          {self.overlapping_pairs:>4}  {verdict}",
        ]
        if self.unaccounted:
            lines.append(f"  queued requests unaccounted for: {', '.join(self.unaccounted)}  FAILED")
        else:
            lines.append("  every 202 ended as one booking or one failed job with its notification  OK")
        lines.append(f"Done in {self.seconds:.1f} s.")
        return lines


def run(
    database_url: str | None = None,
    *,
    requests: int = 32,
    echo: Callable[[str], None] = print,
) -> Summary:
    started = time.monotonic()
    url = database_url or os.environ.get("SOLEIL_DATABASE_URL") or DEFAULT_DATABASE_URL
    ensure_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        Runner(url).migrate()
        schema.migrate(conn)
        room_ids, user_ids = seed(conn, ROOMS, USERS)
        conn.execute(booking_sql.get("booking_delete_for_rooms"), {"room_ids": room_ids})
        for room_id in room_ids:
            conn.execute(booking_sql.get("availability_invalidate"), {"room_id": room_id})
        failed_before = int(_scalar(conn, "demo_failed_jobs_high_mark"))
        fast_url = with_fast_deadlock_detection(url, conn)
    # One connection per request thread, opened up front: the requests really
    # reach PostgreSQL at the same moment.
    pool = ConnectionPool(
        fast_url, min_size=requests + 2, max_size=requests + 4, kwargs={"autocommit": True}, open=False
    )
    pool.open(wait=True, timeout=30)
    try:
        with _mail() as (mailbox, mail), Runner(fast_url, pool=pool) as runner:
            service = CreateBookingService(runner)
            controller = BookingController(runner, service)
            first_day = date.today() + timedelta(days=30)
            echo(f"Firing {requests} concurrent booking requests at {len(ROOMS)} rooms...")
            stays = overlapping_requests(room_ids, user_ids, requests, first_day, spread_days=SPREAD_DAYS)
            outcomes = fire(controller, stays)
            echo("Running a worker until the bookings, cache and mail queues drain...")
            _drain(runner)
            with runner.connection() as conn:
                summary = _summarise(conn, url, outcomes, room_ids, failed_before, mailbox, mail)
            summary.deadlocks = service.transient_errors
    finally:
        pool.close()
    summary.seconds = time.monotonic() - started
    return summary


def main(database_url: str | None = None, *, requests: int = 32) -> int:
    summary = run(database_url, requests=requests)
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


def ensure_database(url: str) -> None:
    """Create the database the URL names when it does not exist (and only that one),
    connecting to the maintenance database `postgres` of the same server."""
    try:
        psycopg.connect(url, connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise DatabaseUnavailable(f"cannot reach the demo database: {str(exc).strip()}") from None
    name = conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        raise DatabaseUnavailable("the demo database URL names no database")
    maintenance = conninfo.make_conninfo(url, dbname="postgres")
    with (
        psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as admin,
        contextlib.suppress(psycopg.errors.DuplicateDatabase),  # created meanwhile by another run
    ):
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))


@contextmanager
def _mail() -> Iterator[tuple[LocalMailbox | None, str]]:
    """Where notifications go: the configured SMTP server; else a local SMTP
    server started for the demo (so mail really travels through SMTP); else,
    without aiosmtpd installed, the log (the notification job's `log` mailer)."""
    if os.environ.get("SOLEIL_SMTP_HOST"):
        yield None, f"SMTP {os.environ['SOLEIL_SMTP_HOST']}"
        return
    try:
        mailbox = LocalMailbox().start()
    except ImportError:
        yield None, "written to the log: no SMTP server configured"
        return
    saved = {key: os.environ.get(key) for key in mailbox.env()}
    os.environ.update(mailbox.env())  # read by the notification job in the in-process worker
    try:
        yield mailbox, f"SMTP, local demo server on {mailbox.host}:{mailbox.port}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mailbox.stop()


def _drain(runner: Runner) -> None:
    worker = runner.worker(QUEUES, WorkerOptions(concurrency=4, sleep=0.2, heartbeat_interval=2.0))
    worker.start()
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with runner.connection() as conn:
                waiting = _scalar(conn, "demo_jobs_waiting", {"queues": QUEUES.split(",")})
            if waiting == 0:
                return
            time.sleep(0.05)
    finally:
        worker.stop(timeout=30)


def _summarise(
    conn: psycopg.Connection[Any],
    database_url: str,
    outcomes: list[Outcome],
    room_ids: list[int],
    failed_before: int,
    mailbox: LocalMailbox | None,
    mail: str,
) -> Summary:
    queued = [o.request["request_id"] for o in outcomes if o.status == 202]
    booked_queued = {
        row[0] for row in conn.execute(booking_sql.get("demo_booked_requests"), {"request_ids": queued})
    }
    failed_queued = {
        row[0]
        for row in conn.execute(booking_sql.get("demo_failed_booking_requests"), {"after_id": failed_before})
    }
    notified = (
        {str(m["X-Soleil-Request-Id"]) for m in mailbox.messages} if mailbox is not None else failed_queued
    )
    unaccounted = [
        rid
        for rid in queued
        if (rid in booked_queued) == (rid in failed_queued) or (rid in failed_queued and rid not in notified)
    ]
    return Summary(
        database=describe(database_url),
        requests=len(outcomes),
        statuses=collections.Counter(o.status for o in outcomes),
        deadlocks=0,
        bookings=int(_scalar(conn, "demo_bookings_in_rooms", {"room_ids": room_ids})),
        booked_via_job=len(booked_queued),
        jobs_failed=int(_scalar(conn, "demo_failed_jobs_count", {"after_id": failed_before})),
        notifications=len(notified & failed_queued) if mailbox is not None else len(failed_queued),
        mail=mail,
        overlapping_pairs=int(_scalar(conn, "booking_overlapping_pairs")),
        unaccounted=unaccounted,
    )


def describe(url: str) -> str:
    parts = conninfo.conninfo_to_dict(url)
    return f"{parts.get('host') or 'local socket'}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


def _scalar(conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(booking_sql.get(name), params).fetchone()
    return None if row is None else row[0]
