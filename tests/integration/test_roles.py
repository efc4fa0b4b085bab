"""Least privilege: a worker and a dispatcher running as the granted roles do
their work, and what they must not do is refused by PostgreSQL.

Roles are cluster-wide, so each test creates its own, with a unique prefix, and
drops them at teardown."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import pytest
from psycopg import conninfo, sql

from soleil.runner import Runner, WorkerOptions, control, failed, status
from soleil.runner.grants import RoleNames, grant
from tests.apps.basic import Doomed, Flaky, InsertRow, Record
from tests.conftest import ADMIN_URL, FAST, Processes
from tests.helpers import count_failed, count_jobs, scalar, wait_for

REFUSED = psycopg.errors.InsufficientPrivilege
FAST_OPTIONS = WorkerOptions(**cast(dict[str, Any], FAST))


@dataclass
class Logins:
    roles: RoleNames
    dispatcher_url: str
    worker_url: str
    operator_url: str


@pytest.fixture
def logins(database_url: str) -> Iterator[Logins]:
    prefix = f"soleil_t{uuid.uuid4().hex[:8]}_"
    roles = RoleNames.with_prefix(prefix)
    login_of = {
        roles.dispatcher: f"{prefix}app",
        roles.worker: f"{prefix}wrk",
        roles.operator: f"{prefix}ops",
    }
    with psycopg.connect(database_url, autocommit=True) as admin:
        try:
            assert grant(admin, roles) == list(roles.all())
            for group, login in login_of.items():
                admin.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(login), sql.Identifier(group)
                    )
                )
            # The application's own tables are the application's business.
            admin.execute(
                sql.SQL("GRANT SELECT, INSERT ON public.runs, public.hooks, public.effects TO {}").format(
                    sql.Identifier(roles.worker)
                )
            )
            admin.execute(
                sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                    sql.Identifier(roles.worker)
                )
            )
            yield Logins(
                roles,
                conninfo.make_conninfo(database_url, user=login_of[roles.dispatcher]),
                conninfo.make_conninfo(database_url, user=login_of[roles.worker]),
                conninfo.make_conninfo(database_url, user=login_of[roles.operator]),
            )
        finally:
            everyone = [*login_of.values(), *roles.all()]
            admin.execute(
                sql.SQL("DROP OWNED BY {}").format(sql.SQL(", ").join(map(sql.Identifier, everyone)))
            )
            with psycopg.connect(ADMIN_URL, autocommit=True) as cluster:
                for role in everyone:
                    cluster.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def refused(url: str, statement: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except REFUSED:
            return True
    return False


def test_a_dispatcher_may_only_insert_jobs(logins: Logins, conn: psycopg.Connection[Any]) -> None:
    with Runner(logins.dispatcher_url) as app:
        assert app.dispatch(Record(tag="one")) is not None
        assert app.dispatch(Record(tag="unique"), unique_key="k1") is not None
        assert app.dispatch(Record(tag="unique"), unique_key="k1") is None
        assert len(app.dispatch_many([Record(tag="bulk")] * 3, delay=5)) == 3
    assert count_jobs(conn) == 5

    url = logins.dispatcher_url
    assert refused(url, "SELECT payload FROM soleil.jobs")
    assert refused(url, "DELETE FROM soleil.jobs")
    assert refused(url, "UPDATE soleil.jobs SET priority = 9")
    assert refused(url, "TRUNCATE soleil.jobs")
    assert refused(url, "SELECT * FROM soleil.failed_jobs")
    assert refused(url, "SELECT * FROM soleil.workers")
    assert refused(url, "CREATE TABLE soleil.evil (id int)")
    assert count_jobs(conn) == 5


def test_a_worker_runs_jobs_but_cannot_change_the_schema_or_read_failed_payloads(
    logins: Logins, conn: psycopg.Connection[Any], runner: Runner
) -> None:
    runner.dispatch_many([Record(tag="a"), InsertRow(key="k"), Doomed(), Flaky(succeed_on=2)])
    runner.dispatch(Record(tag="later"), delay=0.3)
    with Runner(logins.worker_url) as as_worker:
        worker = as_worker.worker("default", FAST_OPTIONS).start()
        try:
            wait_for(lambda: count_jobs(conn) == 0, what="the jobs to run as the worker role")
        finally:
            worker.stop(timeout=30)
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 5, "Flaky retried once"
    assert scalar(conn, "SELECT count(*) FROM public.effects") == 1
    assert count_failed(conn) == 1
    assert scalar(conn, "SELECT count(*) FROM public.hooks") == 1, "the failed() hook ran in the move"
    assert scalar(conn, "SELECT sum(completed) FROM soleil.queue_stats") == 4
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0, "it unregistered"

    url = logins.worker_url
    assert refused(url, "CREATE TABLE soleil.evil (id int)")
    assert refused(url, "ALTER TABLE soleil.jobs ADD COLUMN evil int")
    assert refused(url, "DROP TABLE soleil.failed_jobs")
    assert refused(url, "TRUNCATE soleil.jobs")
    assert refused(url, "SELECT payload, exception FROM soleil.failed_jobs")
    assert refused(url, "DELETE FROM soleil.failed_jobs")
    assert refused(url, "UPDATE soleil.queue_control SET paused = true")


def test_a_worker_process_runs_as_the_worker_role(
    logins: Logins, conn: psycopg.Connection[Any], runner: Runner, processes: Processes
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(20)])
    proc = processes.soleil(
        "work", "default", "--app", "tests.apps.basic", "--stop-when-empty", database_url=logins.worker_url
    )
    assert proc.wait(timeout=60) == 0, processes.output(proc)[1]
    assert scalar(conn, "SELECT count(*) FROM public.runs") == 20
    assert count_jobs(conn) == 0


def test_an_operator_manages_failed_jobs_and_reads_status_but_has_no_ddl(
    logins: Logins, conn: psycopg.Connection[Any], runner: Runner
) -> None:
    runner.dispatch(Doomed())
    worker = runner.worker("default", FAST_OPTIONS).start()
    try:
        wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    finally:
        worker.stop(timeout=30)
    with Runner(logins.operator_url) as ops:
        listed = failed.list_failed(ops)
        assert [job.job for job in listed] == ["tests.doomed"]
        assert failed.retry(ops, [listed[0].uuid]).retried == [listed[0].uuid]
        assert count_jobs(conn) == 1 and count_failed(conn) == 0
        control.pause(ops, "default")
        control.restart(ops)
        assert status.job_count(ops, "default") == 1
        assert [q.queue for q in status.snapshot(ops).queues] == ["default"]
        control.clear(ops, "default")
    assert count_jobs(conn) == 0
    assert scalar(conn, "SELECT paused FROM soleil.queue_control WHERE queue = 'default'") is True

    url = logins.operator_url
    assert refused(url, "CREATE TABLE soleil.evil (id int)")
    assert refused(url, "ALTER TABLE soleil.jobs ADD COLUMN evil int")
    assert refused(url, "DROP TABLE soleil.jobs")


def test_grant_is_idempotent_and_the_command_reports_it(
    logins: Logins, database_url: str, processes: Processes
) -> None:
    prefix = logins.roles.dispatcher.removesuffix("dispatcher")
    result = processes.run("grant", "--prefix", prefix, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert f"{logins.roles.worker}: granted" in result.stdout
    bad = processes.run("grant", "--prefix", 'x"; DROP ROLE postgres; --', database_url=database_url)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: invalid role name")
    generic = "SELECT count(*) FROM pg_roles WHERE rolname IN ('dispatcher', 'worker', 'operator')"
    with psycopg.connect(database_url, autocommit=True) as admin:
        before = scalar(admin, generic)
        empty = processes.run("grant", "--prefix", "", database_url=database_url)
        assert empty.returncode == 2
        assert empty.stderr.startswith("error: invalid role prefix ''")
        assert scalar(admin, generic) == before, "no role named without a prefix"
