"""Job classes for the integration tests of the core runner (retries, hooks,
timeouts, transactions). Each records what it did in the test tables, so a test
can count runs, hook calls and effects."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from soleil.runner import Job, JobContext, PermanentFailure
from tests.apps.basic import record


def record_hook(ctx: JobContext, exc: BaseException) -> None:
    assert ctx.connection is not None, "failed() runs in the move's transaction"
    ctx.connection.execute(
        "INSERT INTO public.hooks (job_id, error) VALUES (%s, %s)",
        (ctx.job_id, f"{type(exc).__name__}: {exc}"),
    )


class AlwaysFails(Job):
    """Fails every attempt; tries and backoff come from the worker."""

    name = "tests.always_fails"

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "always_fails")
        raise ValueError(f"broken on attempt {ctx.attempt}")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


class FailsWithOwnSettings(Job):
    """Fails every attempt; its own tries and backoff override the worker's."""

    name = "tests.fails_with_own_settings"
    tries = 2
    backoff: ClassVar[list[float]] = [0.3]

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "own_settings")
        raise ValueError("still broken")


class GivesUp(Job):
    """Raises a PermanentFailure subclass on its first attempt."""

    name = "tests.gives_up"
    tries = 4

    class NotWorthIt(PermanentFailure):
        pass

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "gives_up")
        raise GivesUp.NotWorthIt("card declined")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


class HookRaises(Job):
    """Fails for good; its failed() hook writes a row and then raises."""

    name = "tests.hook_raises"

    def handle(self, ctx: JobContext) -> None:
        raise PermanentFailure("first problem")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)
        raise RuntimeError("the hook broke too")


class Versioned(Job):
    """A payload that old rows may no longer match (see the unknown/invalid payload tests)."""

    name = "tests.versioned"
    count: int

    def handle(self, ctx: JobContext) -> None:
        record(ctx, f"versioned:{self.count}")


class Spin(Job):
    """Loops in Python (so a JobTimeout can be raised in it) for `seconds`."""

    name = "tests.spin"
    timeout = 0.3
    tries = 2
    backoff = 0
    seconds: float = 30.0

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "spin")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            pass


class Blocked(Job):
    """Blocks in time.sleep (C code: a JobTimeout cannot reach it until it returns)."""

    name = "tests.blocked"
    timeout = 0.3
    seconds: float = 5.0

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "blocked")
        time.sleep(self.seconds)


class InsertThenFail(Job):
    """Transactional: inserts an effect, then fails; the effect must roll back."""

    name = "tests.insert_then_fail"
    transactional = True
    tries = 2
    backoff = 0
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        raise RuntimeError("after the insert")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


class Countdown(Job):
    """Fails its first `failures` attempts, then succeeds; transactional or not
    (two classes below). Records every run; effects only on success."""

    name = "tests.countdown"
    tries = 3
    backoff = 0
    key: str
    failures: int = 0

    def handle(self, ctx: JobContext) -> None:
        record(ctx, self.key)
        if ctx.attempt <= self.failures:
            raise RuntimeError(f"planned failure {ctx.attempt} of {self.failures}")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


class TransactionalCountdown(Job):
    name = "tests.transactional_countdown"
    transactional = True
    tries = 3
    backoff = 0
    key: str
    failures: int = 0

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        if ctx.attempt <= self.failures:
            raise RuntimeError(f"planned failure {ctx.attempt} of {self.failures}")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


class OneShotCountdown(Countdown):
    """A Countdown with a single try: any failure is the last one."""

    name = "tests.one_shot_countdown"
    tries = 1


class OneShotTransactionalCountdown(TransactionalCountdown):
    name = "tests.one_shot_transactional_countdown"
    tries = 1


class SlowQuery(Job):
    """Transactional: writes an effect, then blocks in the database past its timeout."""

    name = "tests.slow_query"
    transactional = True
    timeout = 0.5
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        ctx.connection.execute("SELECT pg_sleep(30)")


class DispatchThenFail(Job):
    """Transactional: dispatches a follow-up through ctx.dispatch, then fails its
    first attempt; the follow-up of the failed attempt must vanish with it."""

    name = "tests.dispatch_then_fail"
    transactional = True
    tries = 2
    backoff = 0

    def handle(self, ctx: JobContext) -> None:
        from tests.apps.basic import Record

        ctx.dispatch(Record(tag=f"follow-up of attempt {ctx.attempt}"))
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails after dispatching")


class SwallowsDatabaseError(Job):
    """Transactional: catches a database error and returns as if all went well.
    Its transaction is aborted, so it cannot have succeeded."""

    name = "tests.swallows_database_error"
    transactional = True
    tries = 2
    backoff = 0
    key: str

    def handle(self, ctx: JobContext) -> None:
        import contextlib

        import psycopg

        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        with contextlib.suppress(psycopg.errors.DivisionByZero):  # "handled", it believes
            ctx.connection.execute("SELECT 1 / 0")


class HookSwallowsDatabaseError(Job):
    """Fails for good; its failed() hook writes, then catches a database error."""

    name = "tests.hook_swallows_database_error"

    def handle(self, ctx: JobContext) -> None:
        raise PermanentFailure("handle failed")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        import contextlib

        import psycopg

        record_hook(ctx, exc)
        assert ctx.connection is not None
        with contextlib.suppress(psycopg.errors.DivisionByZero):  # "handled", it believes
            ctx.connection.execute("SELECT 1 / 0")


class RaisesNul(Job):
    """Fails with a message holding a NUL character (text columns cannot store it)."""

    name = "tests.raises_nul"

    def handle(self, ctx: JobContext) -> None:
        raise PermanentFailure("bad byte \x00 in the input")


class RaisesSurrogate(Job):
    """Fails with a message holding a lone surrogate, as a file name read with
    os.listdir() from bytes that are not UTF-8 does (surrogateescape)."""

    name = "tests.raises_surrogate"

    def handle(self, ctx: JobContext) -> None:
        file_name = b"report-\xff.csv".decode("utf-8", "surrogateescape")
        raise PermanentFailure(f"cannot import {file_name}")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        assert ctx.connection is not None
        ctx.connection.execute(
            "INSERT INTO public.hooks (job_id, error) VALUES (%s, 'hook ran')", (ctx.job_id,)
        )


class EmailsOnFailure(Job):
    """Fails for good; its failed() hook stands for an email to the customer, an
    effect outside the database that no rollback takes back: it appends to `sent`."""

    name = "tests.emails_on_failure"
    tries = 1
    sent: ClassVar[list[tuple[int, int]]] = []

    def handle(self, ctx: JobContext) -> None:
        raise RuntimeError("card declined")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        EmailsOnFailure.sent.append((ctx.job_id, ctx.attempt))


class HookBreaksDeferred(Job):
    """Fails for good; its failed() hook writes the same key twice into
    public.deferred (created by the test, UNIQUE DEFERRABLE INITIALLY DEFERRED),
    so the move's COMMIT fails with a unique violation."""

    name = "tests.hook_breaks_deferred"

    def handle(self, ctx: JobContext) -> None:
        raise PermanentFailure("payment refused")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.deferred (key) VALUES ('dup'), ('dup')")


class InsertDeferred(Job):
    """Transactional, one try: records `key:attempt` in public.effects and `key` in
    public.deferred (created by the test, UNIQUE DEFERRABLE INITIALLY DEFERRED).
    With `twice`, the duplicate only fails at COMMIT."""

    name = "tests.insert_deferred"
    transactional = True
    tries = 1
    key: str
    twice: bool = False

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (f"{self.key}:{ctx.attempt}",))
        for _ in range(2 if self.twice else 1):
            ctx.connection.execute("INSERT INTO public.deferred (key) VALUES (%s)", (self.key,))


class EndsOwnTransaction(Job):
    """Transactional, two tries: attempt 1 writes, calls commit() or rollback() (`how`)
    on the job's connection, writes again and raises; it records what stopped it in
    public.hooks (through its own connection). Attempt 2 writes and succeeds."""

    name = "tests.ends_own_transaction"
    transactional = True
    tries = 2
    key: str
    how: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (f"{self.key}:{ctx.attempt}",))
        if ctx.attempt > 1:
            return
        try:
            getattr(ctx.connection, self.how)()
        except Exception as exc:
            with ctx.runner.connection() as own:
                own.execute(
                    "INSERT INTO public.hooks (job_id, error) VALUES (%s, %s)",
                    (ctx.job_id, f"{type(exc).__name__}: {str(exc).split(':')[0]}"),
                )
            raise
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES ('after the end')")
        raise RuntimeError(f"{self.how}() went through")


class Deallocates(Job):
    """Transactional: drops every prepared statement of its connection, then writes."""

    name = "tests.deallocates"
    transactional = True
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("DEALLOCATE ALL")
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))


class RollsBackItself(Job):
    """Transactional, one try: sends a ROLLBACK statement on the job's connection
    (past the guard on rollback()), which ends the job's transaction."""

    name = "tests.rolls_back_itself"
    transactional = True
    tries = 1

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("ROLLBACK")


class CommitsItself(Job):
    """Transactional, one try: writes `key:<transaction id>`, then sends a COMMIT
    statement on the job's connection (past the guard on commit()); with
    `deallocate`, first a DEALLOCATE ALL (unpreparing what Soleil prepared on it)."""

    name = "tests.commits_itself"
    transactional = True
    tries = 1
    key: str
    deallocate: bool = False

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        if self.deallocate:
            ctx.connection.execute("DEALLOCATE ALL")
        ctx.connection.execute(
            "INSERT INTO public.effects (key) VALUES (%s || ':' || txid_current())", (self.key,)
        )
        ctx.connection.execute("COMMIT")


class ClashesAtCommit(Job):
    """Transactional: writes its effect and a duplicate into public.clashes (created
    by the test, UNIQUE DEFERRABLE INITIALLY DEFERRED), so every COMMIT of its
    transaction fails, its group's too."""

    name = "tests.clashes_at_commit"
    transactional = True
    tries = 3
    backoff = 0
    key: str
    failures: int = 0  # unused: it always fails; the field keeps Countdown's payload

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        ctx.connection.execute("INSERT INTO public.clashes (key) VALUES ('clash'), ('clash')")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        record_hook(ctx, exc)


# Set by a test (and at its end, whatever happened) to let InsertThenHold return.
HOLD_RELEASED = threading.Event()


class InsertThenHold(Job):
    """Transactional: inserts `key`, then holds its transaction open until the
    test sets HOLD_RELEASED (a minute at most)."""

    name = "tests.insert_then_hold"
    transactional = True
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        HOLD_RELEASED.wait(60)
