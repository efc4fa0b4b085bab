"""Dispatch against real PostgreSQL: ids, the caller's transaction, unique keys,
delays, and every way a dispatch is refused without writing anything."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pydantic
import pytest

from soleil.runner import InvalidName, InvalidPayload, InvalidSchedule, PayloadTooLarge, Runner
from tests.apps.basic import Record, Sleep
from tests.apps.lifecycle import Versioned
from tests.helpers import count_jobs, scalar, wait_for


def other_connection_sees(url: str, job_ids: list[int]) -> int:
    with psycopg.connect(url, autocommit=True) as other:
        return int(scalar(other, "SELECT count(*) FROM soleil.jobs WHERE id = ANY(%s)", (job_ids,)))


def test_dispatch_returns_the_new_rows_id_with_the_payload_and_options(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(Versioned(count=3), priority=5)
    row = conn.execute(
        "SELECT queue, job, payload, priority, attempts, max_attempts, reserved_by"
        " FROM soleil.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("default", "tests.versioned", {"count": 3}, 5, 0, None, None)


def test_a_job_dispatched_alone_is_named_in_its_notification(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Idle workers claim such a job by its key; dispatches inside a caller's
    transaction keep the bare due time, so that they collapse into one notification."""
    conn.execute('LISTEN "soleil:default"')
    alone = runner.dispatch(Record(tag="alone"))
    with psycopg.connect(database_url) as caller:
        for tag in ("a", "b", "c"):
            runner.dispatch(Record(tag=tag), connection=caller)
        caller.commit()
    payloads = [note.payload for note in conn.notifies(timeout=2.0, stop_after=2)]
    assert len(payloads) == 2, payloads
    due, _, named = payloads[0].partition(":")
    assert named == str(alone) and float(due) > 0
    assert ":" not in payloads[1] and float(payloads[1]) > 0


def test_dispatch_many_returns_ids_in_order(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    ids = runner.dispatch_many([Versioned(count=i) for i in range(50)])
    assert len(ids) == 50 and len(set(ids)) == 50
    rows = conn.execute("SELECT id, (payload->>'count')::int FROM soleil.jobs ORDER BY id").fetchall()
    assert {job_id: count for job_id, count in rows} == {job_id: i for i, job_id in enumerate(ids)}
    assert runner.dispatch_many([]) == []


@pytest.mark.parametrize("many", [False, True], ids=["dispatch", "dispatch_many"])
def test_a_dispatch_in_the_callers_transaction_appears_only_at_commit(
    runner: Runner, database_url: str, many: bool
) -> None:
    with psycopg.connect(database_url) as caller:  # not autocommit: an open transaction
        caller.execute("INSERT INTO public.effects (key) VALUES ('app write')")
        if many:
            ids = runner.dispatch_many([Record(tag="a"), Record(tag="b")], connection=caller)
        else:
            job_id = runner.dispatch(Record(tag="a"), connection=caller)
            assert job_id is not None
            ids = [job_id]
        assert other_connection_sees(database_url, ids) == 0
        caller.commit()
    assert other_connection_sees(database_url, ids) == len(ids)


@pytest.mark.parametrize("many", [False, True], ids=["dispatch", "dispatch_many"])
def test_a_dispatch_in_a_rolled_back_transaction_leaves_nothing(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any], many: bool
) -> None:
    with psycopg.connect(database_url) as caller:
        caller.execute("INSERT INTO public.effects (key) VALUES ('app write')")
        if many:
            runner.dispatch_many([Record(tag="a"), Record(tag="b")], connection=caller)
        else:
            runner.dispatch(Record(tag="a"), connection=caller)
        caller.rollback()
    assert count_jobs(conn) == 0
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 0


@pytest.mark.parametrize("many", [False, True], ids=["dispatch", "dispatch_many"])
def test_a_delay_in_the_callers_transaction_counts_from_the_dispatch_not_the_transactions_start(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any], many: bool
) -> None:
    conn.execute('LISTEN "soleil:default"')
    with psycopg.connect(database_url) as caller:  # not autocommit: an open transaction
        caller.execute("INSERT INTO public.effects (key) VALUES ('app write')")
        # The caller's transaction has been open a while (its requests, its queries).
        wait_for(
            lambda: scalar(caller, "SELECT clock_timestamp() - now() > interval '300 ms'"),
            what="the caller's transaction to be 300 ms old",
        )
        before = scalar(caller, "SELECT clock_timestamp()")
        job_id: int | None
        if many:
            [job_id] = runner.dispatch_many([Record(tag="later")], delay=2.0, connection=caller)
        else:
            job_id = runner.dispatch(Record(tag="later"), delay=2.0, connection=caller)
        caller.commit()
    due = scalar(conn, "SELECT available_at FROM soleil.jobs WHERE id = %s", (job_id,))
    early = f"due {(due - before).total_seconds():.3f} s after the dispatch"
    assert due >= before + timedelta(seconds=2), early
    # Idle workers schedule their wake-up by the notification: it names the same
    # time, rounded down to a tenth of a second for a single dispatch (so that many
    # in one transaction collapse into one notification).
    [note] = conn.notifies(timeout=2.0, stop_after=1)
    rounding = 0.0 if many else 0.1
    assert due.timestamp() - rounding - 1e-6 <= float(note.payload) <= due.timestamp() + 1e-6


def test_delayed_dispatches_in_one_transaction_send_one_notification(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute('LISTEN "soleil:default"')
    with psycopg.connect(database_url) as caller:
        for tag in range(50):
            runner.dispatch(Record(tag=str(tag)), delay=60.0, connection=caller)
    # Each is due at its own instant; their rounded due times fall in one or two
    # tenths. The transaction's notifications travel together, at its COMMIT.
    notes = list(conn.notifies(timeout=10.0, stop_after=1))
    notes += conn.notifies(timeout=0.5)
    assert 1 <= len(notes) <= 2, [note.payload for note in notes]


def test_a_unique_key_is_taken_while_queued_and_running_and_free_after_completion(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    first = runner.dispatch(Sleep(seconds=0.5, tag="u"), unique_key="receipt-7")
    assert first is not None
    assert runner.dispatch(Record(tag="dup"), unique_key="receipt-7") is None  # queued
    start_worker()
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'start:u'"), what="start")
    assert count_jobs(conn, "reserved_by IS NOT NULL") == 1
    assert runner.dispatch(Record(tag="dup"), unique_key="receipt-7") is None  # running
    assert runner.dispatch(Record(tag="other"), unique_key="receipt-8") is not None  # other keys unaffected
    wait_for(lambda: count_jobs(conn) == 0, what="both jobs to finish")
    again = runner.dispatch(Record(tag="again"), unique_key="receipt-7")
    assert again is not None and again != first
    wait_for(lambda: count_jobs(conn) == 0, what="the re-dispatched job to finish")
    tags = [row[0] for row in conn.execute("SELECT tag FROM public.runs ORDER BY id")]
    assert sorted(tags) == ["again", "end:u", "other", "start:u"]


def test_a_delayed_job_runs_when_due_even_when_the_worker_polls_rarely(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(sleep=30.0)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.workers"), what="worker registration")
    job_id = runner.dispatch(Record(tag="later"), delay=1.0)
    due = scalar(conn, "SELECT available_at FROM soleil.jobs WHERE id = %s", (job_id,))
    ran_at = wait_for(
        lambda: scalar(conn, "SELECT at FROM public.runs WHERE job_id = %s", (job_id,)),
        timeout=5.0,
        what="the delayed job to run",
    )
    assert ran_at >= due, "ran before it was due"
    assert ran_at - due < timedelta(seconds=1.0), f"picked up {ran_at - due} after it was due"


def test_available_at_holds_a_job_back_until_then(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(sleep=30.0)
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM soleil.workers"), what="worker registration")
    db_now = scalar(conn, "SELECT now()")
    at = db_now + timedelta(seconds=1.0)
    job_id = runner.dispatch(Record(tag="at"), available_at=at)
    ran_at = wait_for(
        lambda: scalar(conn, "SELECT at FROM public.runs WHERE job_id = %s", (job_id,)),
        timeout=5.0,
        what="the scheduled job to run",
    )
    assert at <= ran_at < at + timedelta(seconds=1.0)


def test_a_worker_does_not_run_a_job_before_its_delay(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    start_worker(sleep=0.1)
    runner.dispatch(Record(tag="far"), delay=3600)
    runner.dispatch_many([Record(tag="far-many")], available_at=datetime.now(UTC) + timedelta(hours=1))
    # Each due job makes the worker claim again; a claim that ignored the delay
    # would take the delayed jobs along (no fixed sleep needed).
    for tag in ("now-1", "now-2", "now-3"):
        runner.dispatch(Record(tag=tag))
        wait_for(lambda: count_jobs(conn) == 2, what=f"the due job {tag}")
    assert count_jobs(conn, "reserved_by IS NULL AND attempts = 0") == 2
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 3


def test_an_invalid_payload_fails_at_construction_and_writes_nothing(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(pydantic.ValidationError, match="count"):
        runner.dispatch(Versioned(count="several"))
    assert count_jobs(conn) == 0


def test_a_batch_with_a_payload_too_large_deep_in_it_writes_nothing(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """dispatch_many serialises while its COPY streams: a refusal in a later slice
    aborts the COPY, and the rows already sent are never committed."""
    with Runner(database_url, max_payload_bytes=1_000) as runner:
        batch = [Record(tag="ok")] * 1_200 + [Record(tag="x" * 1_000)] + [Record(tag="ok")] * 10
        with pytest.raises(PayloadTooLarge, match="above the limit of 1000 bytes"):
            runner.dispatch_many(batch)
        assert count_jobs(conn) == 0
        assert len(runner.dispatch_many([Record(tag="ok")] * 1_200)) == 1_200  # the connection is fine


def test_a_refused_batch_in_the_callers_transaction_leaves_that_transaction_usable(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The aborted COPY is rolled back to dispatch_many's savepoint: the caller's own
    writes survive, and so do jobs it dispatched before in the same transaction."""
    with Runner(database_url, max_payload_bytes=1_000) as runner, psycopg.connect(database_url) as caller:
        caller.execute("INSERT INTO public.runs (job_id, attempt, tag, pid) VALUES (0, 0, 'mine', 0)")
        kept = runner.dispatch_many([Record(tag="before")] * 3, connection=caller)
        with pytest.raises(PayloadTooLarge):
            runner.dispatch_many([Record(tag="ok")] * 600 + [Record(tag="x" * 1_000)], connection=caller)
        caller.commit()
    assert scalar(conn, "SELECT count(*) FROM public.runs WHERE tag = 'mine'") == 1
    assert sorted(r[0] for r in conn.execute("SELECT id FROM soleil.jobs")) == kept


def test_nul_in_a_payload_is_refused(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidPayload, match="NUL"):
        runner.dispatch(Record(tag="a\x00b"))
    with pytest.raises(InvalidPayload, match="NUL"):
        runner.dispatch_many([Record(tag="fine"), Record(tag="\x00")])
    assert count_jobs(conn) == 0


def test_text_that_only_looks_like_an_escaped_nul_is_stored_as_is(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    for text in ["\\u0000", "C:\\\\u0000", "ends with a backslash\\"]:
        job_id = runner.dispatch(Record(tag=text))
        assert scalar(conn, "SELECT payload->>'tag' FROM soleil.jobs WHERE id = %s", (job_id,)) == text
    with pytest.raises(InvalidPayload, match="NUL"):
        runner.dispatch(Record(tag="\\\x00"))  # a backslash, then a real NUL


def test_a_payload_above_the_limit_is_refused(database_url: str, conn: psycopg.Connection[Any]) -> None:
    with Runner(database_url, max_payload_bytes=1000) as small:
        small.dispatch(Record(tag="x" * 900))
        with pytest.raises(PayloadTooLarge, match="above the limit of 1000 bytes") as caught:
            small.dispatch(Record(tag="x" * 1000))
        assert caught.value.limit == 1000 and caught.value.size > 1000
        with pytest.raises(PayloadTooLarge):
            small.dispatch(Record(tag="é" * 600))  # counted in bytes, not characters
        with pytest.raises(PayloadTooLarge):
            small.dispatch_many([Record(tag="ok"), Record(tag="x" * 2000)])
    assert count_jobs(conn) == 1


@pytest.mark.parametrize("queue", ["no spaces", ""])
def test_a_bad_queue_name_is_refused(runner: Runner, conn: psycopg.Connection[Any], queue: str) -> None:
    # An empty name (an unset setting) is refused too, not taken for the class's queue.
    with pytest.raises(InvalidName, match=f"invalid queue name {queue!r}"):
        runner.dispatch(Record(), queue=queue)
    assert count_jobs(conn) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 2**40}, "invalid priority 1099511627776"),
        ({"priority": True}, "invalid priority True"),
        ({"delay": -100}, "invalid delay -100"),
        ({"delay": float("nan")}, "invalid delay nan"),
        ({"delay": 1e300}, "invalid delay 1e+300"),
        ({"delay": True}, "invalid delay True"),
        ({"delay": 10**400}, "invalid delay 1000"),
        ({"delay": "5"}, "invalid delay '5'"),
    ],
)
def test_a_priority_or_delay_the_table_cannot_hold_is_refused_by_name(
    runner: Runner, conn: psycopg.Connection[Any], options: dict[str, Any], message: str
) -> None:
    # A negative delay would also put the job ahead of older jobs of its priority.
    with pytest.raises(InvalidSchedule, match=re.escape(message)):
        runner.dispatch(Record(), **options)
    with pytest.raises(InvalidSchedule, match=re.escape(message)):
        runner.dispatch_many([Record()], **options)
    assert count_jobs(conn) == 0


def test_dispatch_many_writes_all_or_nothing(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "ALTER TABLE soleil.jobs ADD CONSTRAINT no_poison CHECK (payload->>'tag' IS DISTINCT FROM 'poison')"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        runner.dispatch_many([Record(tag="fine")] * 10 + [Record(tag="poison")])
    assert count_jobs(conn) == 0
    assert len(runner.dispatch_many([Record(tag="fine")] * 10)) == 10


def test_a_runner_can_use_an_existing_pool_and_leaves_it_open(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(database_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        with Runner(pool=pool) as shared:
            assert shared.dispatch(Record(tag="pooled")) is not None
        assert not pool.closed
        with pool.connection() as own:
            assert scalar(own, "SELECT count(*) FROM soleil.jobs") == 1


def test_from_env_reads_the_database_url(
    database_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOLEIL_DATABASE_URL", database_url)
    with Runner.from_env() as from_env:
        from_env.dispatch(Record(tag="env"))
    assert count_jobs(conn) == 1


def test_an_unreachable_database_is_one_clear_error() -> None:
    from soleil.runner import DatabaseUnavailable

    # Fails on the first attempt with libpq's reason, not after the pool's open timeout.
    nowhere = Runner("postgresql://app:secret-pw@127.0.0.1:1/app")
    with pytest.raises(DatabaseUnavailable) as caught:
        nowhere.dispatch(Record())
    message = str(caught.value)
    assert message.startswith("cannot reach the database at app@127.0.0.1:1/app")
    assert "\n" not in message and "secret-pw" not in message


def test_a_dispatch_whose_connection_dies_mid_statement_is_one_clear_error_and_writes_nothing(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from soleil.runner import DatabaseUnavailable

    with psycopg.connect(database_url) as first, ThreadPoolExecutor(1) as pool:
        runner.dispatch(Record(tag="first"), unique_key="held", connection=first)
        second = pool.submit(runner.dispatch, Record(tag="second"), unique_key="held")
        waiting = wait_for(
            lambda: scalar(
                conn,
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ),
            what="the second dispatch to wait for the first transaction",
        )
        conn.execute("SELECT pg_terminate_backend(%s)", (waiting,))
        with pytest.raises(DatabaseUnavailable) as caught:
            second.result(timeout=10)
        first.rollback()
    assert str(caught.value).startswith("cannot reach the database at ")
    assert count_jobs(conn) == 0
    assert runner.dispatch(Record(tag="after")) is not None, "the pool replaces the dead connection"


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_concurrent_dispatches_of_one_unique_key_enqueue_it_once(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any], first_commits: bool
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with psycopg.connect(database_url) as first, ThreadPoolExecutor(1) as pool:
        first_id = runner.dispatch(Record(tag="first"), unique_key="once", connection=first)
        assert first_id is not None
        second = pool.submit(runner.dispatch, Record(tag="second"), unique_key="once")
        wait_for(
            lambda: scalar(
                conn,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ),
            what="the second dispatch to wait for the first transaction",
        )
        if first_commits:
            first.commit()
        else:
            first.rollback()
        second_id = second.result(timeout=10)
    if first_commits:
        assert second_id is None
        assert conn.execute("SELECT payload->>'tag' FROM soleil.jobs").fetchall() == [("first",)]
    else:
        assert second_id is not None
        assert conn.execute("SELECT payload->>'tag' FROM soleil.jobs").fetchall() == [("second",)]


def test_dispatching_to_a_database_never_migrated_says_to_migrate(empty_database_url: str) -> None:
    from soleil.runner import SchemaNotReady

    with Runner(empty_database_url) as bare:
        with pytest.raises(SchemaNotReady, match="run `soleil-runner migrate`"):
            bare.dispatch(Record())
        with pytest.raises(SchemaNotReady, match="run `soleil-runner migrate`"):
            bare.dispatch_many([Record(), Record()])


def test_a_delay_may_be_any_real_number_type(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    from decimal import Decimal
    from fractions import Fraction

    # psycopg reads `extract(epoch ...)` as a Decimal: such a value must still do as a delay.
    for delay in (Decimal("0"), Fraction(0), 0, 0.0, None):
        assert runner.dispatch(Record(tag=str(delay)), delay=delay) is not None  # type: ignore[arg-type]
    assert count_jobs(conn) == 5
