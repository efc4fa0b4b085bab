"""`soleil-runner demo`, the README's main command, as a user runs it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Processes, drop_database, url_for


@pytest.fixture
def demo_database() -> Iterator[str]:
    """A database name the demo must create itself (it does not exist yet)."""
    name = f"soleil_t_demo_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        drop_database(name)


def counts(output: str) -> dict[str, int]:
    found = {}
    for label in (
        "201 booked at once",
        "202 queued after deadlocks",
        "409 room taken",
        "422 invalid",
        "bookings made",
        "jobs failed",
        "guests notified of a failure",
        "overlapping bookings",
    ):
        match = re.search(rf"^\s+{label}:\s+(\d+)", output, re.M)
        assert match, f"no {label!r} line in:\n{output}"
        found[label] = int(match.group(1))
    return found


def test_the_demo_creates_its_database_runs_twice_and_checks_itself(
    processes: Processes, demo_database: str
) -> None:
    env = {"SOLEIL_SMTP_HOST": ""}  # the demo starts its own local SMTP server
    for run in (1, 2):
        result = processes.run("demo", database_url=url_for(demo_database), timeout=60, env=env)
        assert result.returncode == 0, (run, result.stdout, result.stderr[-3000:])
        summary = counts(result.stdout)
        assert (
            summary["201 booked at once"] + summary["202 queued after deadlocks"] + summary["409 room taken"]
            == 32
        )
        assert summary["422 invalid"] == 0
        assert summary["overlapping bookings"] == 0
        assert summary["bookings made"] >= 3  # each room's first request
        assert summary["guests notified of a failure"] == summary["jobs failed"]
        assert "every 202 ended as one booking or one failed job with its notification  OK" in result.stdout
        assert "SMTP, local demo server" in result.stdout
        if summary["jobs failed"]:
            assert "Booking job failed" in result.stderr
        assert re.search(r"^Done in \d+\.\d s\.$", result.stdout, re.M)


def test_an_unreachable_server_is_one_clear_error(processes: Processes) -> None:
    result = processes.run("demo", database_url="postgresql://postgres@127.0.0.1:1/soleil_demo", timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the demo database")
