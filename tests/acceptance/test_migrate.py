"""`soleil-runner migrate`: applies the schema once, is idempotent, and two hosts
running it at the same moment both succeed."""

from __future__ import annotations

import signal

import psycopg

from soleil.runner.migrate import latest_version
from tests.acceptance.support import wait_exit
from tests.conftest import Processes
from tests.helpers import scalar, wait_for


def migrations(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM soleil.migrations ORDER BY version").fetchall()


def test_migrate_applies_then_is_up_to_date(processes: Processes, empty_database_url: str) -> None:
    first = processes.run("migrate", database_url=empty_database_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Applied migrations: 0001")
    again = processes.run("migrate", database_url=empty_database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"Schema is up to date (version {latest_version():04d})."
    assert [version for version, _ in migrations(empty_database_url)] == list(range(1, latest_version() + 1))


def test_two_migrations_at_once_apply_the_schema_once(processes: Processes, empty_database_url: str) -> None:
    both = [processes.soleil("migrate", database_url=empty_database_url) for _ in range(2)]
    assert [wait_exit(proc, timeout=30) for proc in both] == [0, 0]
    outputs = sorted(processes.output(proc)[0] for proc in both)
    assert any(out.startswith("Applied migrations: 0001") for out in outputs), outputs
    assert sum("Applied" in out for out in outputs) == 1, outputs  # the other one found it done
    for proc in both:
        assert "Traceback" not in processes.output(proc)[1]
    applied = migrations(empty_database_url)
    assert len(applied) == latest_version() == len({version for version, _ in applied})


def test_ctrl_c_while_waiting_for_another_migration(processes: Processes, empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('soleil.migrate'))")  # another host migrating
        proc = processes.soleil("migrate", database_url=empty_database_url)
        wait_for(
            lambda: scalar(
                holder,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%%pg_advisory_xact_lock%%'",
            ),
            what="migrate to wait for the lock",
        )
        proc.send_signal(signal.SIGINT)
        assert wait_exit(proc) == 130
    out, err = processes.output(proc)
    assert (out, err.strip()) == ("", "Aborted.")
    assert migrations_table_exists(empty_database_url) is False  # nothing half-applied


def migrations_table_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(scalar(conn, "SELECT to_regclass('soleil.migrations') IS NOT NULL"))
