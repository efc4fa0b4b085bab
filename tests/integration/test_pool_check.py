"""The pool's checkout check: no round trip on a quiet connection, and a
connection the server has closed is still replaced before anyone uses it."""

from __future__ import annotations

from typing import Any

import psycopg

from soleil.runner import Runner
from tests.apps.basic import Record
from tests.helpers import count_jobs, wait_for


def test_a_terminated_pooled_connection_is_replaced_before_use(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch(Record(tag="warm"))
    with runner.connection() as pooled:
        pid = pooled.info.backend_pid
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(
        lambda: (
            conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,)
        ),
        what="the backend to exit",
    )

    runner.dispatch(Record(tag="after"))

    assert count_jobs(conn) == 2
    with runner.connection() as pooled:
        assert pooled.info.backend_pid != pid


def test_a_quiet_checkout_sends_no_query(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    with runner.connection() as pooled:
        pid = pooled.info.backend_pid
    before = _calls_seen(conn, pid)
    for _ in range(20):
        with runner.connection():
            pass
    assert _calls_seen(conn, pid) == before


def _calls_seen(conn: psycopg.Connection[Any], pid: int) -> Any:
    # pg_stat_activity.query_start changes with every statement the backend runs.
    return conn.execute("SELECT query_start FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
