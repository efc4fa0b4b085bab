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
