"""Job classes of the chaos tier (--app tests.apps.chaos, next to tests.apps.basic)."""

from __future__ import annotations

import time

from soleil.runner import Job, JobContext
from tests.apps.basic import record


class Noop(Job):
    """Does nothing: the flow of the held-back-vacuum test measures the runner alone."""

    name = "chaos.noop"

    def handle(self, ctx: JobContext) -> None:
        pass


class Stamp(Job):
    """Records when it started; `sent_at` is the dispatcher's clock (same machine), so
    `runs.at - sent_at` is the dispatch-to-start latency."""

    name = "chaos.stamp"
    sent_at: float

    def handle(self, ctx: JobContext) -> None:
        record(ctx, repr(self.sent_at))


class LockedSleep(Job):
    """Transactional and slow: records its start outside the transaction (so every
    start is visible, even one rolled back), then writes its effect and sleeps
    while holding the job row."""

    name = "chaos.locked_sleep"
    transactional = True
    key: str
    seconds: float

    def handle(self, ctx: JobContext) -> None:
        record(ctx, f"start:{self.key}")
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.effects (key) VALUES (%s)", (self.key,))
        time.sleep(self.seconds)
