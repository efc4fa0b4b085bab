"""Transactional jobs chained on one connection (soleil/runner/transaction.py):
a job's COMMIT travels with the next job's BEGIN and fence, and each still
commits, fails or rolls back on its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner, lease, transaction
from soleil.runner.claim import claim
from tests.apps.basic import InsertRow
from tests.apps.lifecycle import Deallocates, EndsOwnTransaction, InsertDeferred
from tests.helpers import count_failed, count_jobs, effects, scalar, wait_for

DEFERRED_TABLE = "CREATE TABLE public.deferred (key text UNIQUE DEFERRABLE INITIALLY DEFERRED)"


@pytest.fixture
def deferred(conn: psycopg.Connection[Any]) -> None:
    conn.execute(DEFERRED_TABLE)


@pytest.fixture(params=[True, False], ids=["pipeline", "one-by-one"])
def pipeline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Both ways of sending: libpq's pipeline, and the fallback for libpq < 14."""
    monkeypatch.setattr(transaction, "PIPELINE", request.param)
    yield request.param


def fences(conn: psycopg.Connection[Any], keys: list[str]) -> list[transaction.Fence]:
    """Claim one InsertDeferred job per key, as a worker would; their fences."""
    for key in keys:
        conn.execute(
            "INSERT INTO soleil.jobs (queue, job, payload) VALUES ('default', 'tests.insert_deferred', %s)",
            (f'{{"key": "{key}"}}',),
        )
    worker_id = lease.register(conn, ["default"], 1)
    claimed = claim(conn, queues=["default"], limit=len(keys), worker_id=worker_id, default_tries=1)
    return [transaction.Fence(((job.id, job.attempt),), worker_id, 5000, 10000) for job in claimed]


def held(opened: transaction.Opened | None) -> bool:
    """The transaction opened without error and holds its one job."""
    return opened is not None and opened.error is None and opened.held == set(opened.attempts)


def test_a_failed_commit_does_not_abort_the_next_jobs_opening(
    database_url: str, conn: psycopg.Connection[Any], deferred: None, pipeline: bool
) -> None:
    first, second = fences(conn, ["first", "second"])
    with psycopg.connect(database_url, autocommit=True) as chain:
        _, opened = transaction.open_next(chain, first)
        assert held(opened)
        chain.execute("INSERT INTO public.deferred (key) VALUES ('dup'), ('dup')")  # fails at COMMIT

        commit_error, opened = transaction.open_next(chain, second, commit=opened)

        assert isinstance(commit_error, psycopg.errors.UniqueViolation)
        assert held(opened)
        chain.execute("INSERT INTO public.effects (key) VALUES ('second')")
        chain.commit()
    assert sorted(effects(conn)) == ["second"]
    # The first job's deletion rolled back with its commit; the second's committed.
    assert [row[0] for row in conn.execute("SELECT id FROM soleil.jobs")] == [first.jobs[0][0]]


def test_the_fence_refuses_an_attempt_that_is_no_longer_this_workers(
    database_url: str, conn: psycopg.Connection[Any], pipeline: bool
) -> None:
    [fence] = fences(conn, ["lost"])
    ((job_id, attempt),) = fence.jobs
    earlier_attempt = dataclasses.replace(fence, jobs=((job_id, attempt - 1),))
    with psycopg.connect(database_url, autocommit=True) as chain:
        _, opened = transaction.open_next(chain, earlier_attempt)
        assert opened is not None and not opened.held and opened.error is None
        chain.rollback()
    assert count_jobs(conn) == 1


def test_the_fence_is_prepared_again_after_deallocate_all(
    database_url: str, conn: psycopg.Connection[Any], pipeline: bool
) -> None:
    first, second = fences(conn, ["first", "second"])
    with psycopg.connect(database_url, autocommit=True) as chain:
        _, opened = transaction.open_next(chain, first)
        assert held(opened)
        chain.execute("DEALLOCATE ALL")
        commit_error, opened = transaction.open_next(chain, second, commit=opened)
        assert commit_error is None
        assert held(opened)
        chain.commit()
    assert count_jobs(conn) == 0


def test_a_worker_runs_a_chain_where_each_job_commits_or_fails_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, deferred: None, pipeline: bool
) -> None:
    # Dispatched before the worker starts: one claim takes them all, and each
    # job's COMMIT goes out with the next one's BEGIN and fence.
    runner.dispatch(InsertDeferred(key="a"))
    clash = runner.dispatch(InsertDeferred(key="clash", twice=True))
    runner.dispatch(InsertDeferred(key="b"))
    runner.dispatch(InsertDeferred(key="c"))
    start_worker(concurrency=1, prefetch=8)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert sorted(effects(conn)) == ["a:1", "b:1", "c:1"], "each job after the failed commit ran once"
    exception = scalar(conn, "SELECT exception FROM soleil.failed_jobs WHERE job_id = %s", (clash,))
    assert exception.startswith("UniqueViolation"), exception
    assert count_failed(conn) == 1


@pytest.mark.parametrize("how", ["commit", "rollback"])
def test_a_handler_cannot_end_the_jobs_transaction_itself(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any, how: str
) -> None:
    # Attempt 1 writes, tries to end the transaction, writes again and fails; attempt 2 succeeds.
    job_id = runner.dispatch(EndsOwnTransaction(key="k", how=how))
    start_worker(concurrency=1, backoff=0)
    wait_for(lambda: count_jobs(conn) == 0, what="the job to succeed on its second attempt")
    assert sorted(effects(conn)) == ["k:2"], "nothing of the first attempt was committed"
    message = scalar(conn, "SELECT error FROM public.hooks WHERE job_id = %s", (job_id,))
    assert message == f"ProgrammingError: {how}() is not allowed in a transactional job's handle()", message
    assert count_failed(conn) == 0


def test_a_handler_that_deallocates_prepared_statements_does_not_break_the_chain(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many(
        [Deallocates(key="d1"), InsertRow(key="r1"), Deallocates(key="d2"), InsertRow(key="r2")]
    )
    start_worker(concurrency=1, prefetch=8)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    assert sorted(effects(conn)) == ["d1", "d2", "r1", "r2"]
    assert count_failed(conn) == 0


def test_jobs_joining_a_transaction_are_locked_and_its_commit_deletes_those_that_ran(
    database_url: str, conn: psycopg.Connection[Any], pipeline: bool
) -> None:
    first, second, third, fourth = fences(conn, ["a", "b", "c", "d"])
    (b, attempt_b), (c, attempt_c), (d, attempt_d) = second.jobs[0], third.jobs[0], fourth.jobs[0]
    # c's attempt is no longer this worker's: its fence leaves it alone.
    joining = ((b, attempt_b), (c, attempt_c - 1), (d, attempt_d))
    with psycopg.connect(database_url, autocommit=True) as chain:
        _, opened = transaction.open_next(chain, first)
        assert held(opened) and opened is not None
        joining_fence = transaction.Fence(joining, first.worker_id, 5000, 10000, joining=True)
        opened = transaction.join(chain, opened, joining_fence)
        assert opened.error is None
        assert opened.held == {first.jobs[0][0], b, d} and opened.joined == {b, d}
        for job_id, locked in ((b, True), (c, False), (d, True)):
            row = "SELECT id FROM soleil.jobs WHERE id = %s FOR UPDATE SKIP LOCKED"
            assert (conn.execute(row, (job_id,)).fetchone() is None) == locked
        chain.execute("DEALLOCATE ALL")  # as a handler might: the group's statements are not prepared
        # a and b have run when the group commits: d stays, still reserved, unlocked.
        commit_error, _ = transaction.open_next(chain, None, commit=opened, ran=(b,))
        assert commit_error is None
    assert [row[0] for row in conn.execute("SELECT id FROM soleil.jobs ORDER BY id")] == [c, d]
    assert scalar(conn, "SELECT reserved_by FROM soleil.jobs WHERE id = %s", (d,)) == first.worker_id


@pytest.mark.parametrize("joining", [False, True], ids=["first", "joining"])
def test_a_fenced_transaction_whose_client_goes_silent_ends_by_itself(
    database_url: str, conn: psycopg.Connection[Any], joining: bool
) -> None:
    # A worker whose host died without closing its connection: nobody sends the
    # COMMIT, ROLLBACK or FIN. Past the idle limit the server ends the transaction,
    # and the jobs' rows are back, unlocked, for the rescue (they would otherwise
    # stay locked until TCP gave up on the peer, two hours by default).
    first, second = fences(conn, ["a", "b"])
    silent = psycopg.connect(database_url, autocommit=True)
    try:
        if joining:  # the limit set by the last fence of a group's transaction applies
            _, opened = transaction.open_next(silent, first)
            assert held(opened) and opened is not None
            joined = dataclasses.replace(second, idle_timeout_ms=300, joining=True)
            assert transaction.join(silent, opened, joined).error is None
        else:
            _, opened = transaction.open_next(silent, dataclasses.replace(first, idle_timeout_ms=300))
            assert held(opened)
        unlocked = "SELECT count(*) FROM (SELECT id FROM soleil.jobs FOR UPDATE SKIP LOCKED) AS free"
        wait_for(lambda: scalar(conn, unlocked) == 2, what="the silent client's transaction to end")
        assert count_jobs(conn) == 2, "the first job's deletion rolled back"
    finally:
        silent.close()


@pytest.mark.timeout(60)
def test_the_fence_records_the_server_session_that_holds_the_transaction(
    database_url: str, conn: psycopg.Connection[Any], pipeline: bool
) -> None:
    # The pid a worker terminates to end the transaction of a job it gives up on:
    # read by the fence inside that transaction, as the server sees it (behind
    # PgBouncer the connection's own backend_pid is PgBouncer's cancel key).
    first, second = fences(conn, ["first", "second"])
    with psycopg.connect(database_url, autocommit=True) as chain:
        _, opened = transaction.open_next(chain, first)
        assert held(opened) and opened is not None
        server_pid = scalar(chain, "SELECT pg_backend_pid()")
        assert opened.backend_pid == server_pid
        # And a chained opening, which travels with the COMMIT before it.
        _, opened = transaction.open_next(chain, second, commit=opened)
        assert held(opened) and opened is not None
        assert opened.backend_pid == server_pid
        chain.rollback()
