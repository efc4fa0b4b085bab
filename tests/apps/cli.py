"""Job classes for the acceptance tests (worker subprocesses import them with
--app tests.apps.cli, usually next to tests.apps.basic)."""

from __future__ import annotations

import time

from soleil.runner import Job, JobContext
from tests.apps.basic import record


class SlowFirstAttempt(Job):
    """Records its start, sleeps `first` seconds on attempt 1 and `then` seconds
    afterwards, records its end: a job to kill a worker in the middle of."""

    name = "tests.slow_first_attempt"
    tries = 3
    first: float
    then: float = 0.0

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "start")
        time.sleep(self.first if ctx.attempt == 1 else self.then)
        record(ctx, "end")


class Typed(Job):
    """A payload with constraints, for `soleil-runner dispatch` validation."""

    name = "tests.typed"
    queue = "typed"
    count: int
    label: str = "x"

    def handle(self, ctx: JobContext) -> None:
        record(ctx, f"{self.label}:{self.count}")


class SlowTransactionalFirstAttempt(Job):
    """Transactional: records its start (committed at once, on a connection of its
    own), writes `key` in the job's transaction, then sleeps `first` seconds on
    attempt 1 and not at all afterwards."""

    name = "tests.slow_transactional_first_attempt"
    transactional = True
    tries = 3
    key: str
    first: float

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "start")
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (f"{self.key}:{ctx.attempt}",))
        time.sleep(self.first if ctx.attempt == 1 else 0.0)
