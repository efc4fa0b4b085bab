"""Waiting on conditions with deadlines (never fixed sleeps), small SQL helpers,
and a stand-in for the pids PgBouncer gives its clients."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from soleil.runner import timeouts

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def scalar(conn: psycopg.Connection[Any], sql: Any, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def count_jobs(conn: psycopg.Connection[Any], where: str = "true") -> int:
    return int(scalar(conn, f"SELECT count(*) FROM soleil.jobs WHERE {where}"))


def count_failed(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, "SELECT count(*) FROM soleil.failed_jobs"))


def effects(conn: psycopg.Connection[Any]) -> list[str]:
    """The keys in public.effects, in the order they were written."""
    return [row[0] for row in conn.execute("SELECT key FROM public.effects ORDER BY id")]


@contextlib.contextmanager
def nested_plans(conn: psycopg.Connection[Any], *, analyze: bool = False) -> Iterator[list[dict[str, Any]]]:
    """The plans of the statements run inside functions (the claim lives in
    soleil.claim_jobs), as auto_explain reports them to this client: a list of
    {"Query Text": ..., "Plan": ...} filled while the block runs. Needs a superuser."""
    plans: list[dict[str, Any]] = []

    def on_notice(diagnostic: psycopg.errors.Diagnostic) -> None:
        text = diagnostic.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1]))

    conn.execute("LOAD 'auto_explain'")
    settings = {
        "auto_explain.log_min_duration": "0",
        "auto_explain.log_nested_statements": "on",
        "auto_explain.log_format": "json",
        "auto_explain.log_level": "notice",
        "auto_explain.log_analyze": "on" if analyze else "off",
        "auto_explain.log_buffers": "on" if analyze else "off",
    }
    for name, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.add_notice_handler(on_notice)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(on_notice)
        conn.execute("SELECT set_config('auto_explain.log_min_duration', '-1', false)")


# What a connection's backend_pid is behind PgBouncer: PgBouncer's cancel key,
# which no server session has (pid_max is at most 2^22).
NOT_A_SERVER_PID = 2_000_000_000


def pretend_behind_pgbouncer(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Give every connection a PgBouncer-like backend_pid; returns the pids each
    call of timeouts.terminate is then asked to end, as it is asked."""
    monkeypatch.setattr(psycopg.ConnectionInfo, "backend_pid", property(lambda self: NOT_A_SERVER_PID))
    terminate, asked = timeouts.terminate, []

    def recorded(worker: Any, backend_pids: list[int], deadline: float) -> str | None:
        asked.append(list(backend_pids))
        return terminate(worker, backend_pids, deadline)

    monkeypatch.setattr(timeouts, "terminate", recorded)
    return asked
