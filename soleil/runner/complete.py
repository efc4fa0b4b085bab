"""Batched completion: finished jobs are deleted, and per-minute statistics added,
by one statement per batch instead of one per job.

A crash between a job's run and the next flush re-runs that job: at-least-once.
Transactional jobs never pass through here; their row is deleted in their own
transaction. Only their statistics are batched.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from soleil.runner import queries
from soleil.runner.claim import ClaimedJob

log = structlog.get_logger("soleil.complete")

FLUSH_INTERVAL_SECONDS = 0.05
FLUSH_BATCH = 500


@dataclass(slots=True)
class _Stat:
    completed: int = 0
    failed: int = 0
    retried: int = 0
    runtime_ms: float = 0.0
    wait_ms: float = 0.0


class Completer:
    """A background thread that owns the completion buffer."""

    def __init__(
        self,
        pool: ConnectionPool,
        worker_id: int,
        *,
        interval: float = FLUSH_INTERVAL_SECONDS,
        batch: int = FLUSH_BATCH,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._interval = interval
        self._batch = batch
        self._cond = threading.Condition()
        self._ids: list[int] = []
        self._writing = 0  # jobs of the batch being written now
        self._attempts: list[int] = []
        self._stats: defaultdict[tuple[str, int], _Stat] = defaultdict(_Stat)
        self._stopping = False
        self._last_record = -math.inf  # a new worker has been quiet
        self._after_quiet = False
        self._thread = threading.Thread(target=self._run, name="soleil-completer", daemon=True)
        self.flushed_batches = 0

    # -- recording (called by executor threads) -----------------------------

    def completed(self, job: ClaimedJob, runtime_ms: float, *, delete: bool) -> None:
        with self._cond:
            stat = self._stat_of(job)
            if delete:
                self._ids.append(job.id)
                self._attempts.append(job.attempt)
            stat.completed += 1
            stat.runtime_ms += runtime_ms
            stat.wait_ms += job.wait_ms
            if len(self._ids) >= self._batch:
                self._cond.notify()

    def failed(self, job: ClaimedJob) -> None:
        with self._cond:
            self._stat_of(job).failed += 1

    def retried(self, job: ClaimedJob) -> None:
        with self._cond:
            self._stat_of(job).retried += 1

    def _stat_of(self, job: ClaimedJob) -> _Stat:
        """The job's statistics bucket (caller holds the lock). The thread sleeps
        while the buffer is empty: the first record wakes it, and says whether it
        follows a quiet spell, half an interval without any record."""
        now = time.monotonic()
        if not self._stats:
            self._after_quiet = now - self._last_record >= self._interval / 2
            self._cond.notify()
        self._last_record = now
        return self._stats[(job.queue, _minute())]

    @property
    def pending(self) -> int:
        """Completions not written yet, the batch being written included."""
        with self._cond:
            return len(self._ids) + self._writing

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Flush what is buffered (retrying while the database is away) and stop.
        True when nothing was left unflushed."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._has_work() and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(0.2)
        return not self._has_work()

    def _has_work(self) -> bool:
        with self._cond:
            return bool(self._ids or self._stats)

    def _run(self) -> None:
        backoff = 0.1
        # A busy worker writes its completions in batches, each flush starting
        # `interval` after the previous one ended (a slow database gets that rest).
        # After a quiet spell the first completion goes at once: an idle worker's
        # flush then follows its job by a millisecond instead of landing, up to
        # `interval` later, on the next job's pickup (docs/performance.md, finding 22).
        last_flush = time.monotonic()
        while True:
            with self._cond:
                while not self._stopping and not self._stats:
                    self._cond.wait()
                due = 0.0 if self._after_quiet else last_flush + self._interval
                while not self._stopping and len(self._ids) < self._batch:
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopping:
                    return
            flushed = self.flush()
            last_flush = time.monotonic()
            if flushed:
                backoff = 0.1
            else:
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def flush(self) -> bool:
        """Write the buffer in one statement; on failure it stays buffered."""
        with self._cond:
            if not self._ids and not self._stats:
                return True
            ids, attempts, stats = self._ids, self._attempts, self._stats
            self._ids, self._attempts, self._stats = [], [], defaultdict(_Stat)
            self._writing = len(ids)
        try:
            with self._pool.connection() as conn:
                conn.execute(queries.get("job_complete_many"), _params(self._worker_id, ids, attempts, stats))
        except (psycopg.Error, OSError) as exc:
            log.warning("completion.flush_failed", jobs=len(ids), error=str(exc).strip())
            with self._cond:
                self._ids[:0], self._attempts[:0] = ids, attempts
                for key, stat in stats.items():
                    _merge(self._stats[key], stat)
                self._writing = 0
            return False
        with self._cond:
            self._writing = 0
        self.flushed_batches += 1
        return True


def _minute() -> int:
    return int(time.time()) // 60 * 60


def _merge(into: _Stat, other: _Stat) -> None:
    into.completed += other.completed
    into.failed += other.failed
    into.retried += other.retried
    into.runtime_ms += other.runtime_ms
    into.wait_ms += other.wait_ms


def _params(
    worker_id: int, ids: list[int], attempts: list[int], stats: dict[tuple[str, int], _Stat]
) -> dict[str, Any]:
    keys = list(stats)
    return {
        "worker_id": worker_id,
        "ids": ids,
        "attempts": attempts,
        "stat_queues": [queue for queue, _ in keys],
        "stat_minutes": [datetime.fromtimestamp(minute, UTC) for _, minute in keys],
        "stat_completed": [stats[k].completed for k in keys],
        "stat_failed": [stats[k].failed for k in keys],
        "stat_retried": [stats[k].retried for k in keys],
        "stat_runtime_ms": [stats[k].runtime_ms for k in keys],
        "stat_wait_ms": [stats[k].wait_ms for k in keys],
    }
