"""The database drops every connection of a busy worker: it reconnects (its
listener too) and every job still completes as it should."""

from __future__ import annotations

import functools
from typing import Any

import psycopg
from psycopg import sql
from structlog.testing import capture_logs

from soleil.runner import Runner
from soleil.runner import claim as claiming
from soleil.runner import worker as worker_module
from tests.apps.basic import InsertRow, Record, Sleep
from tests.helpers import count_failed, count_jobs, scalar, wait_for

TERMINATE_OTHERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def test_a_worker_survives_all_its_connections_being_terminated(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    plain = runner.dispatch_many([Sleep(seconds=0.01, tag=str(i)) for i in range(150)])
    transactional = runner.dispatch_many([InsertRow(key=str(i), sleep=0.01) for i in range(150)])
    # Tries to spare: a job whose own connection is cut mid-run fails that attempt.
    worker = start_worker(concurrency=4, tries=10, backoff=0)
    listener = worker.listener

    def ended() -> int:
        return int(scalar(conn, "SELECT count(*) FROM public.runs WHERE tag LIKE 'end:%'"))

    with capture_logs() as logs:
        for cut in (1, 2, 3):
            target = ended() + 10
            wait_for(functools.partial(lambda t: ended() > t, target), what=f"progress before cut {cut}")
            assert scalar(conn, TERMINATE_OTHERS) >= 2
            wait_for(
                functools.partial(lambda c: listener.connections > c, cut),
                what=f"the listener to reconnect ({cut})",
            )
    logged = {entry["event"] for entry in logs}
    assert {"listener.disconnected", "listener.reconnected"} <= logged, "an operator sees the outage"
    wait_for(lambda: count_jobs(conn) == 0, timeout=30, what="every job to complete")
    assert count_failed(conn) == 0
    finished = {r[0] for r in conn.execute("SELECT job_id FROM public.runs WHERE tag LIKE 'end:%'")}
    assert set(plain) <= finished
    effects = conn.execute("SELECT key, count(*) FROM public.effects GROUP BY key").fetchall()
    assert sorted(int(key) for key, _ in effects) == list(range(150))
    assert {count for _, count in effects} == {1}, "each transactional effect exactly once"
    assert len(transactional) == 150
    # Still listening: a new job is picked up by notification, well before the poll.
    later = runner.dispatch(InsertRow(key="after"))
    wait_for(lambda: count_jobs(conn) == 0, what=f"job {later} after the cuts")
    assert not worker.stopping


def lose_reply_of_claim(monkeypatch: Any, which: Any) -> list[int]:
    """Make the claim that reserves a job for which `which(job)` holds raise as if its
    connection broke after the COMMIT (once); returns the ids that claim reserved."""
    lost: list[int] = []

    def reply_lost(real: Any, *args: Any, **kwargs: Any) -> Any:
        jobs = real(*args, **kwargs)
        if not lost and any(which(job) for job in jobs):
            lost.extend(job.id for job in jobs)
            raise psycopg.OperationalError("server closed the connection unexpectedly (simulated)")
        return jobs

    monkeypatch.setattr(claiming, "claim", functools.partial(reply_lost, claiming.claim))
    monkeypatch.setattr(claiming, "claim_notified", functools.partial(reply_lost, claiming.claim_notified))
    return lost


def test_a_claim_whose_reply_is_lost_gives_its_jobs_back_once_the_worker_holds_nothing_else(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: Any
) -> None:
    # The rows are reserved by this worker, which never heard of them and keeps
    # heartbeating, so no rescue frees them (before, they waited for its stop).
    # The job it does hold meanwhile runs once and is not given back.
    lost = lose_reply_of_claim(monkeypatch, lambda job: job.name == "tests.record")
    # Reservation times then travel rounded to 10 µs: nothing may depend on them.
    rounded = sql.SQL("ALTER DATABASE {} SET extra_float_digits = 0")
    conn.execute(rounded.format(sql.Identifier(conn.info.dbname)))
    start_worker(concurrency=2)
    held = runner.dispatch(Sleep(seconds=1.0, tag="held"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs"), what="the held job to start")
    lost_id = runner.dispatch(Record(tag="lost reply"))
    wait_for(lambda: count_jobs(conn) == 0, what="both jobs to run")
    assert lost == [lost_id]
    runs = conn.execute("SELECT job_id, attempt, tag FROM public.runs ORDER BY id").fetchall()
    assert runs == [(held, 1, "start:held"), (held, 1, "end:held"), (lost_id, 1, "lost reply")]


def test_a_claim_whose_reply_is_lost_just_before_a_stop_gives_its_jobs_back_with_their_try(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: Any
) -> None:
    # With one try, a job given back with its try used would fail unrun.
    lost = lose_reply_of_claim(monkeypatch, lambda job: True)
    monkeypatch.setattr(worker_module.Worker, "_release_lost_claim", stop_instead)
    job_id = runner.dispatch(Record(tag="lost reply"))
    worker = start_worker(concurrency=1)
    wait_for(lambda: bool(lost) and worker.stopping, what="the lost claim and the stop")
    monkeypatch.undo()
    assert worker.join(20) and worker.exit_code == 0
    assert conn.execute("SELECT id, attempts, reserved_by FROM soleil.jobs").fetchall() == [(job_id, 0, None)]
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 0


def stop_instead(self: Any, conn: Any, taken: int) -> None:
    """The worker is told to stop before any claim can give the lost jobs back."""
    if taken:
        self.request_stop("test")
    else:
        RELEASE(self, conn, taken)


RELEASE = worker_module.Worker._release_lost_claim
