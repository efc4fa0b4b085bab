"""`soleil-runner work --transaction-group`: transactional jobs waiting in the
worker share a COMMIT; an out-of-range group is a usage error."""

from __future__ import annotations

import collections
from typing import Any

import psycopg

from soleil.runner import Runner
from tests.acceptance.support import APPS, FAST
from tests.apps.basic import InsertTxid
from tests.conftest import Processes
from tests.helpers import count_jobs, effects


def test_jobs_claimed_together_commit_in_groups(
    processes: Processes, runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.dispatch_many([InsertTxid(key=str(i)) for i in range(12)])
    result = processes.run(
        "work", "default", "--app", APPS, "--prefetch", "20", "--transaction-group", "5",
        "--stop-when-empty", *FAST,
        database_url=runner.database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert count_jobs(conn) == 0
    per_transaction = collections.Counter(key.split(":")[1] for key in effects(conn))
    assert sum(per_transaction.values()) == 12
    assert max(per_transaction.values()) <= 5
    assert len(per_transaction) < 12, "some jobs must have shared a commit"


def test_a_group_past_64_is_a_usage_error(processes: Processes, database_url: str) -> None:
    result = processes.run("work", "default", "--transaction-group", "65", database_url=database_url)
    assert result.returncode == 2
    assert "--transaction-group" in result.stderr
