"""Job classes used by the tests, importable by worker subprocesses (--app tests.apps.basic).

Non-transactional jobs record each run in public.runs through their own pooled
connection, so a test can count how many times a job ran."""

from __future__ import annotations

import os
import time
from typing import ClassVar

from soleil.runner import Job, JobContext, PermanentFailure


def record(ctx: JobContext, tag: str) -> None:
    with ctx.runner.connection() as conn:
        conn.execute(
            "INSERT INTO public.runs (job_id, attempt, tag, pid) VALUES (%s, %s, %s, %s)",
            (ctx.job_id, ctx.attempt, tag, os.getpid()),
        )


class Record(Job):
    """Records its run."""

    name = "tests.record"
    tag: str = ""

    def handle(self, ctx: JobContext) -> None:
        record(ctx, self.tag)


class LogsFromHandler(Job):
    """Logs an event of its own through ctx.log."""

    name = "tests.logs_from_handler"

    def handle(self, ctx: JobContext) -> None:
        ctx.log.info("rooms.checked", free=2)


class Sleep(Job):
    """Records its start, sleeps, records its end."""

    name = "tests.sleep"
    seconds: float
    tag: str = ""

    def handle(self, ctx: JobContext) -> None:
        record(ctx, f"start:{self.tag}")
        time.sleep(self.seconds)
        record(ctx, f"end:{self.tag}")


class Flaky(Job):
    """Fails until attempt `succeed_on`."""

    name = "tests.flaky"
    tries = 3
    backoff: ClassVar[list[float]] = [0, 0]
    succeed_on: int = 99

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "flaky")
        if ctx.attempt < self.succeed_on:
            raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")


class Doomed(Job):
    """Raises PermanentFailure; its failed() hook writes inside the move's transaction."""

    name = "tests.doomed"
    tries = 5

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "doomed")
        raise PermanentFailure("no point trying again")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        assert ctx.connection is not None
        ctx.connection.execute(
            "INSERT INTO public.hooks (job_id, error) VALUES (%s, %s)", (ctx.job_id, str(exc))
        )


class InsertRow(Job):
    """Transactional: inserts one row that commits together with the job's deletion."""

    name = "tests.insert_row"
    transactional = True
    key: str
    sleep: float = 0.0

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        if self.sleep:
            time.sleep(self.sleep)


class InsertTxid(Job):
    """Transactional: writes `key:<transaction id>`; jobs that share a COMMIT share
    the id (txid_current() names the top-level transaction, even in a savepoint)."""

    name = "tests.insert_txid"
    transactional = True
    key: str

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute(
            "INSERT INTO public.effects (key) VALUES (%s || ':' || txid_current())", (self.key,)
        )


class InsertTxidAlone(InsertTxid):
    """An InsertTxid that never shares its transaction."""

    name = "tests.insert_txid_alone"
    share_transaction = False


class RecordStatementTimeout(Job):
    """Transactional, timeout 7 s: records the statement_timeout its transaction runs under."""

    name = "tests.record_statement_timeout"
    transactional = True
    timeout = 7

    def handle(self, ctx: JobContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) SELECT current_setting('statement_timeout')")
