"""The statements sent straight through libpq (soleil/runner/prepared.py): a job
dispatched alone and a notified job claimed by its key must come out exactly as
through psycopg's execute(), and survive a connection's DEALLOCATE ALL."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soleil.runner import Runner, claim, dispatch, lease, prepared
from tests.apps.basic import Record

ROW = (
    "SELECT queue, job, payload, priority, max_attempts, available_at, unique_key"
    " FROM soleil.jobs WHERE id = %s"
)
INDIA = timezone(timedelta(hours=5, minutes=30))
EXAMPLES = itertools.count()
# Quotes, backslashes, a NUL-free escape, accents and a character outside the BMP.
TAG = 'l\'été "chaud" \\ \\n 🌞 — ok'


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"priority": 7, "unique_key": "clé-🌞-1"},
        {
            "available_at": datetime(
                2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
            )
        },
        {"available_at": datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC).astimezone().replace(tzinfo=None)},
        {"available_at": date(2031, 5, 6)},
        {"queue": "NULL"},
    ],
    ids=["defaults", "priority-unique", "aware-time", "naive-time", "date", "queue-named-null"],
)
def test_a_job_dispatched_alone_is_the_row_a_callers_transaction_writes(
    runner: Runner, database_url: str, conn: psycopg.Connection[Any], options: dict[str, Any]
) -> None:
    alone = runner.dispatch(Record(tag=TAG), **options)
    with psycopg.connect(database_url) as caller:
        unique = {"unique_key": options["unique_key"] + "-b"} if "unique_key" in options else {}
        within = runner.dispatch(Record(tag=TAG), connection=caller, **{**options, **unique})
        caller.commit()
    first, second = (conn.execute(ROW, (job_id,)).fetchone() for job_id in (alone, within))
    assert first is not None and second is not None
    assert first[2] == {"tag": TAG}
    if "available_at" in options:
        assert first == (*second[:6], first[6])
    else:  # due "now": each its own transaction's now()
        assert first[:5] == second[:5] and abs(first[5] - second[5]) < timedelta(seconds=5)
    assert first[6] == options.get("unique_key")


def test_a_delay_is_counted_from_the_databases_clock_at_the_dispatch(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    # The delay counts from the dispatch's own clock reading (clock_timestamp()),
    # so it is bracketed by readings taken just before and after: any rounding of
    # the delay on its way (to whole seconds, through float4) would show.
    before = conn.execute("SELECT clock_timestamp()").fetchone()
    job_id = runner.dispatch(Record(tag="later"), delay=1234567.25)
    after = conn.execute("SELECT clock_timestamp()").fetchone()
    due = conn.execute("SELECT available_at FROM soleil.jobs WHERE id = %s", (job_id,)).fetchone()
    assert before is not None and after is not None and due is not None
    delay = timedelta(seconds=1234567.25)
    assert before[0] + delay <= due[0] <= after[0] + delay


def test_a_nul_in_a_unique_key_is_refused_and_nothing_is_written(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    """libpq would cut the key at the NUL: 'order:1\\x00a' and 'order:1\\x00b' would collide."""
    with pytest.raises(psycopg.DataError, match="NUL"):
        runner.dispatch(Record(tag="a"), unique_key="order:1\x00a")
    assert conn.execute("SELECT count(*) FROM soleil.jobs").fetchone() == (0,)


def test_strings_travel_in_the_connections_client_encoding(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as latin1:
        latin1.execute("SET client_encoding TO 'LATIN1'")
        row = dispatch.to_row(Record(tag="été"), 10_000)
        job_id = dispatch.insert_one(latin1, row, 0, 0.0, None, "clé", own_transaction=True)
        assert job_id is not None
        worker_id = lease.register(latin1, ["default"], 1)
        (claimed,) = claim.claim_notified(
            latin1, job_id=job_id, queues=["default"], worker_id=worker_id, default_tries=1
        )
    assert json.loads(claimed.payload) == {"tag": "été"}
    with psycopg.connect(database_url, autocommit=True) as utf8:
        stored = utf8.execute("SELECT payload->>'tag', unique_key FROM soleil.jobs WHERE id = %s", (job_id,))
        assert stored.fetchone() == ("été", "clé")


def test_a_statement_is_prepared_again_after_deallocate_all(conn: psycopg.Connection[Any]) -> None:
    statement = prepared.Statement("job_insert_one")
    values = {
        "queue": "default",
        "job": "tests.record",
        "payload": "{}",
        "priority": 0,
        "max_attempts": None,
        "available_at": None,
        "delay": 0.0,
        "unique_key": None,
        "name_job": True,
    }
    first = statement.execute(conn, values)
    conn.execute("DEALLOCATE ALL")
    second = statement.execute(conn, values)
    ids = [int(result.get_value(0, 0) or b"0") for result in (first, second)]
    assert ids[1] > ids[0] > 0
    names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    assert (statement.name.decode(),) in names


def test_a_statement_already_prepared_on_the_server_is_used_as_it_is(conn: psycopg.Connection[Any]) -> None:
    """Prepared by a call interrupted before it could note it: the next one carries on."""
    prepared.Statement("job_next_available_at").execute(conn, {"queues": ["default"]})
    untracked = prepared.Statement("job_next_available_at")
    result = untracked.execute(conn, {"queues": ["default"]})
    assert result.ntuples == 1 and untracked.is_prepared_on(conn)


def test_inside_a_transaction_an_unprepared_statement_is_an_error_not_a_retry(
    conn: psycopg.Connection[Any],
) -> None:
    statement = prepared.Statement("job_next_available_at")
    statement.execute(conn, {"queues": ["default"]})
    with pytest.raises(psycopg.errors.InvalidSqlStatementName), conn.transaction():
        conn.execute("DEALLOCATE ALL")
        statement.execute(conn, {"queues": ["default"]})


def test_a_value_out_of_range_raises_psycopgs_error_and_writes_nothing(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    # Runner.dispatch refuses such a priority before any SQL (InvalidSchedule); the
    # prepared statement itself must still report PostgreSQL's error as psycopg does.
    row = dispatch.to_row(Record(tag="x"), dispatch.DEFAULT_MAX_PAYLOAD_BYTES)
    with runner.connection() as pooled, pytest.raises(psycopg.errors.NumericValueOutOfRange):
        dispatch.insert_one(pooled, row, 2**40, 0.0, None, None, own_transaction=True)
    assert conn.execute("SELECT count(*) FROM soleil.jobs").fetchone() == (0,)


def test_a_notified_job_claimed_by_its_key_comes_back_whole(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    job_id = runner.dispatch(Record(tag=TAG), queue="NULL", priority=3)
    assert job_id is not None
    worker_id = lease.register(conn, ["NULL"], 1)
    (claimed,) = claim.claim_notified(
        conn, job_id=job_id, queues=["NULL"], worker_id=worker_id, default_tries=4
    )
    assert (claimed.id, claimed.queue, claimed.name, claimed.priority) == (job_id, "NULL", "tests.record", 3)
    assert json.loads(claimed.payload) == {"tag": TAG}
    assert (claimed.attempt, claimed.max_attempts) == (1, 4)
    assert claimed.reserved_epoch >= claimed.available_epoch > 0
    # Claimed once: a second claim by key finds nothing to take.
    assert (
        claim.claim_notified(conn, job_id=job_id, queues=["NULL"], worker_id=worker_id, default_tries=4) == []
    )
    row = conn.execute("SELECT reserved_by, attempts FROM soleil.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (worker_id, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tag=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
    key=st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40
    ),
    priority=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    when=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
    ),
)
def test_any_job_dispatched_alone_is_the_row_a_callers_transaction_writes(
    runner: Runner,
    database_url: str,
    conn: psycopg.Connection[Any],
    tag: str,
    key: str,
    priority: int,
    when: datetime,
) -> None:
    key += f"#{next(EXAMPLES)}"  # rows of earlier examples stay: keep each key new
    with psycopg.connect(database_url) as caller:
        within = runner.dispatch(
            Record(tag=tag),
            priority=priority,
            available_at=when,
            unique_key="caller:" + key,
            connection=caller,
        )
        caller.commit()
    alone = runner.dispatch(Record(tag=tag), priority=priority, available_at=when, unique_key="alone:" + key)
    first, second = (conn.execute(ROW, (job_id,)).fetchone() for job_id in (alone, within))
    assert first is not None and second is not None
    assert first[:6] == second[:6]
    assert (first[6], second[6]) == ("alone:" + key, "caller:" + key)
