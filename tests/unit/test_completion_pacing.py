"""When the completion buffer is written: pure timing, against a stand-in pool whose
statement takes as long as a struggling database's. What reaches a real database is
in tests/integration/test_worker_stop.py."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from soleil.runner.claim import ClaimedJob
from soleil.runner.complete import Completer
from tests.helpers import wait_for

INTERVAL = 0.05


class SlowDatabase:
    """A pool whose every statement takes `seconds`; it notes when each ran."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spans: list[tuple[float, float]] = []

    @contextmanager
    def connection(self) -> Iterator[Any]:
        yield self

    def execute(self, sql: str, params: object) -> None:
        start = time.monotonic()
        time.sleep(self.seconds)
        self.spans.append((start, time.monotonic()))


def finished(job_id: int) -> ClaimedJob:
    return ClaimedJob(job_id, "default", "Record", "{}", 0, 1, 3, 0.0, 0.0)


def test_a_flush_slower_than_the_interval_leaves_the_database_an_interval_of_rest() -> None:
    database = SlowDatabase(seconds=2 * INTERVAL)
    completer = Completer(database, 1, interval=INTERVAL)  # type: ignore[arg-type]
    completer.start()
    job_id = 0
    try:
        while len(database.spans) < 4:  # a job finishing every 2 ms meanwhile
            job_id += 1
            completer.completed(finished(job_id), 1.0, delete=True)
            time.sleep(0.002)
    finally:
        assert completer.stop(timeout=5)
    spans = database.spans
    rests = [later[0] - earlier[1] for earlier, later in itertools.pairwise(spans)]
    # The last flush is stop()'s own, which does not wait.
    assert min(rests[:-1]) >= INTERVAL, f"rests between flushes: {rests}"


def test_the_first_completion_after_a_quiet_spell_is_written_at_once() -> None:
    database = SlowDatabase(seconds=0.0)
    completer = Completer(database, 1, interval=60.0)  # type: ignore[arg-type]
    completer.start()
    try:
        completer.completed(finished(1), 1.0, delete=True)
        wait_for(lambda: database.spans, what="the lone completion's flush", timeout=5)
        completer.completed(finished(2), 1.0, delete=True)
        assert completer.pending == 1, "a completion right behind another waits for the interval"
    finally:
        assert completer.stop(timeout=5)
    assert len(database.spans) == 2
