"""Failed attempts: retries with backoff, failed_jobs, PermanentFailure, the
failed() hook, jobs a worker cannot even load, and worker vs job settings."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from structlog.testing import capture_logs

from soleil.runner import Runner
from tests.apps.basic import Record
from tests.apps.lifecycle import (
    AlwaysFails,
    FailsWithOwnSettings,
    GivesUp,
    HookBreaksDeferred,
    HookRaises,
    HookSwallowsDatabaseError,
    RaisesNul,
    RaisesSurrogate,
    Versioned,
)
from tests.helpers import count_failed, count_jobs, scalar, wait_for


def failed_row(conn: psycopg.Connection[Any], job_id: int | None) -> dict[str, Any]:
    cursor = conn.execute(
        "SELECT uuid::text, queue, job, payload, exception, attempts, failed_at FROM soleil.failed_jobs"
        " WHERE job_id = %s",
        (job_id,),
    )
    row = cursor.fetchone()
    assert row is not None, f"job {job_id} is not in failed_jobs"
    return dict(zip([c.name for c in cursor.description or []], row, strict=True))


def run_times(conn: psycopg.Connection[Any], job_id: int | None) -> list[Any]:
    return [r[0] for r in conn.execute("SELECT at FROM public.runs WHERE job_id = %s ORDER BY id", (job_id,))]


def fail_first_move(conn: psycopg.Connection[Any], message: str, errcode: str) -> None:
    """A trigger makes the first move to failed_jobs raise `message` with `errcode`;
    public.move_attempts counts the moves tried (sequences ignore rollbacks)."""
    conn.execute(
        f"""
        CREATE SEQUENCE public.move_attempts;
        CREATE FUNCTION public.fail_first_move() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('public.move_attempts') = 1 THEN
                RAISE EXCEPTION '{message}' USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_first_move BEFORE INSERT ON soleil.failed_jobs
            FOR EACH ROW EXECUTE FUNCTION public.fail_first_move();
        """
    )


def test_a_failing_job_is_retried_with_backoff_then_moved_to_failed_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(AlwaysFails(), queue="emails", priority=3)
    start_worker("emails", tries=3, backoff=[0.2, 0.4])
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    times = run_times(conn, job_id)
    assert len(times) == 3
    assert (times[1] - times[0]).total_seconds() >= 0.2
    assert (times[2] - times[1]).total_seconds() >= 0.4
    row = failed_row(conn, job_id)
    assert row["queue"] == "emails" and row["job"] == "tests.always_fails" and row["payload"] == {}
    assert row["attempts"] == 3
    assert len(row["uuid"]) == 36
    exception = row["exception"]
    assert exception.startswith("ValueError: broken on attempt 3")
    assert "Traceback (most recent call last)" in exception
    assert "in handle" in exception and "tests/apps/lifecycle.py" in exception
    assert count_jobs(conn) == 0
    hooks = conn.execute("SELECT job_id, error FROM public.hooks").fetchall()
    assert hooks == [(job_id, "ValueError: broken on attempt 3")], "failed() runs exactly once"
    # The operator's query works and keeps what is needed to retry the job as it was.
    latest = conn.execute("SELECT * FROM soleil.failed_jobs ORDER BY failed_at DESC").fetchone()
    assert latest is not None and 3 in latest


def test_permanent_failure_skips_the_remaining_tries(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(GivesUp())
    start_worker(tries=10)
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    assert len(run_times(conn, job_id)) == 1
    row = failed_row(conn, job_id)
    assert row["attempts"] == 1
    assert row["exception"].startswith("NotWorthIt: card declined")
    assert scalar(conn, "SELECT error FROM public.hooks WHERE job_id = %s", (job_id,)) == (
        "NotWorthIt: card declined"
    )


def test_a_hook_that_raises_still_moves_the_job_and_its_error_is_appended(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(HookRaises())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    exception = failed_row(conn, job_id)["exception"]
    assert exception.startswith("PermanentFailure: first problem")
    assert "The failed() hook raised too: RuntimeError: the hook broke too" in exception
    # The hook's own writes ran in a savepoint that its exception rolled back.
    assert scalar(conn, "SELECT count(*) FROM public.hooks") == 0
    assert count_jobs(conn) == 0


def test_the_hooks_writes_commit_only_with_the_move_to_failed_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # A trigger makes the move itself fail once: the hook's write must vanish with it,
    # and the retried move must run the hook again and commit both.
    fail_first_move(conn, "simulated connection loss", "08006")
    job_id = runner.dispatch(GivesUp())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to fail")
    assert scalar(conn, "SELECT last_value FROM public.move_attempts") == 2, "the first move did fail"
    assert scalar(conn, "SELECT count(*) FROM public.hooks WHERE job_id = %s", (job_id,)) == 1


def test_unknown_jobs_and_stale_payloads_fail_at_once_and_the_worker_keeps_going(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    unknown = scalar(
        conn,
        "INSERT INTO soleil.jobs (queue, job, payload) VALUES ('default', 'app.removed:OldJob', '{}')"
        " RETURNING id",
    )
    stale = scalar(
        conn,
        "INSERT INTO soleil.jobs (queue, job, payload) VALUES ('default', 'tests.versioned', %s)"
        " RETURNING id",
        (json.dumps({"count": "not a number"}),),
    )
    good = runner.dispatch_many([Record(tag="good"), Versioned(count=2)])
    start_worker(tries=5)
    wait_for(lambda: count_jobs(conn) == 0, what="the queue to drain")
    unknown_row = failed_row(conn, unknown)
    assert unknown_row["attempts"] == 1
    assert unknown_row["exception"].startswith("UnknownJob: unknown job 'app.removed:OldJob'")
    stale_row = failed_row(conn, stale)
    assert stale_row["attempts"] == 1
    assert stale_row["exception"].startswith(
        "InvalidPayload: invalid payload for job 'tests.versioned': count"
    )
    assert stale_row["payload"] == {"count": "not a number"}, "the payload is kept as it was"
    ran = {r[0] for r in conn.execute("SELECT job_id FROM public.runs")}
    assert ran == set(good)
    # Still working after those.
    later = runner.dispatch(Record(tag="later"))
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE job_id = %s", (later,)))


def test_a_jobs_own_tries_and_backoff_override_the_workers(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    own = runner.dispatch(FailsWithOwnSettings())  # tries 2, backoff 0.3
    default = runner.dispatch(AlwaysFails())  # the worker's: tries 4, backoff 0
    start_worker(tries=4, backoff=0, concurrency=2)
    wait_for(lambda: count_failed(conn) == 2, what="both jobs to fail")
    assert failed_row(conn, own)["attempts"] == 2
    assert failed_row(conn, default)["attempts"] == 4
    own_times = run_times(conn, own)
    assert len(own_times) == 2 and (own_times[1] - own_times[0]).total_seconds() >= 0.3
    assert len(run_times(conn, default)) == 4


def test_queue_stats_count_completed_failed_and_retried_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.dispatch_many([Record(tag=str(i)) for i in range(5)])
    runner.dispatch(AlwaysFails())  # 3 tries: 2 retries, 1 failure
    runner.dispatch(AlwaysFails(), queue="other")  # 1 try: 1 failure
    start_worker("default,other", tries=3, backoff=0)
    wait_for(lambda: count_jobs(conn) == 0, what="the queues to drain")

    def totals() -> dict[str, tuple[int, int, int]]:
        rows = conn.execute(
            "SELECT queue, sum(completed)::int, sum(failed)::int, sum(retried)::int"
            " FROM soleil.queue_stats GROUP BY queue"
        ).fetchall()
        return {queue: (completed, failed, retried) for queue, completed, failed, retried in rows}

    expected = {"default": (5, 1, 2), "other": (0, 1, 2)}
    wait_for(lambda: totals() == expected, what=f"queue_stats to reach {expected}")
    runtime = scalar(conn, "SELECT sum(runtime_ms) FROM soleil.queue_stats WHERE queue = 'default'")
    assert runtime > 0


def test_a_retry_runs_when_its_backoff_ends_not_at_the_next_poll(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(FailsWithOwnSettings())  # 2 tries, backoff 0.3 s
    start_worker(sleep=30.0)
    wait_for(lambda: count_failed(conn) == 1, timeout=5.0, what="both attempts")
    first, second = run_times(conn, job_id)
    gap = (second - first).total_seconds()
    assert 0.3 <= gap < 1.5, f"second attempt {gap:.2f} s after the first"


def test_a_hook_that_swallows_a_database_error_does_not_block_the_move(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(HookSwallowsDatabaseError())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
    exception = failed_row(conn, job_id)["exception"]
    assert exception.startswith("PermanentFailure: handle failed")
    assert "The failed() hook raised too" in exception
    assert scalar(conn, "SELECT count(*) FROM public.hooks") == 0, "the hook's aborted writes roll back"
    assert count_jobs(conn) == 0


def test_an_exception_message_with_a_nul_character_still_reaches_failed_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(RaisesNul())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
    assert failed_row(conn, job_id)["exception"].startswith("PermanentFailure: bad byte \\x00 in the input")


def test_an_exception_message_with_a_lone_surrogate_still_reaches_failed_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    job_id = runner.dispatch(RaisesSurrogate())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
    exception = failed_row(conn, job_id)["exception"]
    assert exception.startswith("PermanentFailure: cannot import report-\\udcff.csv")
    assert "Traceback (most recent call last)" in exception
    assert conn.execute("SELECT job_id, error FROM public.hooks").fetchall() == [(job_id, "hook ran")]
    assert count_jobs(conn) == 0


def test_an_outcome_that_cannot_be_written_still_moves_the_job_with_its_error(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # The move fails once with an error that is not the database being away (a
    # trigger stands for whatever refuses it): retrying the same write would
    # fail the same way, and the job must not stay reserved by a live worker.
    fail_first_move(conn, "refused by a trigger", "check_violation")
    job_id = runner.dispatch(GivesUp())
    with capture_logs() as logs:
        start_worker()
        wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
    exception = failed_row(conn, job_id)["exception"]
    assert exception.startswith("NotWorthIt: card declined")
    assert "Soleil could not store this failure as usual (CheckViolation: refused by a trigger" in exception
    assert count_jobs(conn) == 0
    # The hook ran once, in the move that was refused: its writes went with it.
    assert scalar(conn, "SELECT count(*) FROM public.hooks") == 0
    events = [entry["event"] for entry in logs if entry.get("job_id") == job_id]
    assert "job.outcome_error" in events and "job.failed" in events


def test_a_hook_whose_writes_fail_the_moves_commit_still_leaves_the_job_in_failed_jobs(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    conn.execute("CREATE TABLE public.deferred (key text UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    job_id = runner.dispatch(HookBreaksDeferred())
    start_worker()
    wait_for(lambda: count_failed(conn) == 1, what="the job to move to failed_jobs")
    exception = failed_row(conn, job_id)["exception"]
    assert exception.startswith("PermanentFailure: payment refused")
    assert "Soleil could not store this failure as usual (UniqueViolation:" in exception
    assert scalar(conn, "SELECT count(*) FROM public.deferred") == 0, "the hook's writes are not committed"
    assert count_jobs(conn) == 0


def test_a_claim_that_fails_on_a_bad_row_ends_the_worker_at_once_and_loses_nothing(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # A row edited by hand so that the claim's attempts + 1 overflows: not a
    # connection problem to wait out, so the worker stops and says why.
    job_id = runner.dispatch(Record(tag="poisoned"))
    conn.execute("UPDATE soleil.jobs SET attempts = 2147483647 WHERE id = %s", (job_id,))
    worker = start_worker(stop_grace=60.0)
    assert worker.join(10), "the worker waited for slots no job held"
    assert worker.stop_reason.startswith("claim failed: integer out of range"), worker.stop_reason
    assert scalar(conn, "SELECT reserved_by IS NULL FROM soleil.jobs WHERE id = %s", (job_id,))
    assert scalar(conn, "SELECT count(*) FROM soleil.workers") == 0, "the worker unregistered"
