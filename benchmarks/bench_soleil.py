"""Soleil adapter for the peer benchmark in ../shared/bench (see its common.py).

API used (Soleil's public Python API only):
  - schema:       Runner(dsn).migrate()
  - enqueue one:  Runner.dispatch(Noop(...))            -> 1 INSERT + NOTIFY, autocommit
  - enqueue bulk: Runner.dispatch_many([...]) per chunk -> 1 COPY + 1 NOTIFY per chunk
  - worker:       Runner.worker("bench", WorkerOptions(concurrency=N)).start(), stopped
                  with Worker.stop(): an in-process worker in a background thread with
                  N executor threads (the harness's asyncio loop only polls).

Soleil's API is synchronous. Dispatch calls are short (one round trip) and are made
directly from the harness's event loop, which has nothing else to run meanwhile;
worker start and stop (they wait on threads) go through asyncio.to_thread.

Run through the peer driver:
    ADAPTER_PATH=benchmarks EXTRA_PIP="-e ." PEERS="soleil" /work/shared/bench/run_peers.sh
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

from soleil.runner import Job, JobContext, Runner, Worker, WorkerOptions
from soleil.runner import logging as soleil_logging


def _find_common() -> None:
    """Make ../shared/bench's common.py importable (run_peers.sh puts it on PYTHONPATH already)."""
    try:
        import common  # noqa: F401
    except ImportError:
        for candidate in bench_common_dirs():
            if (candidate / "common.py").is_file():
                sys.path.insert(0, str(candidate))
                return


def bench_common_dirs() -> list[Path]:
    """Where the shared harness may live: $SOLEIL_BENCH_COMMON, ../shared/bench, /work/shared/bench."""
    found = [Path(p) for p in os.environ.get("SOLEIL_BENCH_COMMON", "").split(os.pathsep) if p]
    root = Path(__file__).resolve().parent.parent
    return [*found, root.parent / "shared" / "bench", Path("/work/shared/bench")]


_find_common()

import common  # noqa: E402
from common import STATS, Config, QueueAdapter  # noqa: E402

__all__ = ["QUEUE", "STATS", "Noop", "SoleilAdapter", "TransactionalWrite", "common", "worker_options"]

QUEUE = "bench"
# JobStats.record is not thread-safe (count += 1) and Soleil's executors are threads.
_STATS_LOCK = threading.Lock()


class Noop(Job):
    """The benchmark's no-op job: it only reports its start time."""

    name = "bench.noop"
    queue = QUEUE
    enq_ts: float = 0.0

    def handle(self, ctx: JobContext) -> None:
        with _STATS_LOCK:
            STATS.record(self.enq_ts)


class TransactionalWrite(Job):
    """Writes one row in the transaction that also deletes the job (Soleil's suite only)."""

    name = "bench.transactional_write"
    queue = QUEUE
    transactional = True
    enq_ts: float = 0.0

    def handle(self, ctx: JobContext) -> None:
        with _STATS_LOCK:
            STATS.record(self.enq_ts)
        assert ctx.connection is not None
        ctx.connection.execute("INSERT INTO public.bench_effects (job_id) VALUES (%s)", (ctx.job_id,))


EFFECTS_TABLE_SQL = "CREATE TABLE IF NOT EXISTS public.bench_effects (job_id bigint NOT NULL)"


def prefetch_for(concurrency: int) -> int:
    """SOLEIL_PREFETCH: jobs claimed ahead of free executors; "auto" (default): as many as
    the concurrency, so each claim takes at least a full batch (see docs/performance.md)."""
    setting = os.environ.get("SOLEIL_PREFETCH", "auto")
    return concurrency if setting == "auto" else int(setting)


def worker_options(concurrency: int) -> WorkerOptions:
    """The worker settings of the benchmark runs: defaults except concurrency and prefetch."""
    return WorkerOptions(concurrency=concurrency, prefetch=prefetch_for(concurrency))


class SoleilAdapter(QueueAdapter):  # type: ignore[misc]
    name = "soleil"
    label = "soleil"
    remaining_sql = "SELECT count(*) FROM soleil.jobs"
    truncate_sql = "TRUNCATE soleil.jobs, soleil.queue_stats, soleil.failed_jobs"
    job_class: type[Job] = Noop

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.runner: Runner | None = None
        defaults = WorkerOptions()
        self.settings = {
            "driver": "psycopg 3 (sync), psycopg_pool ConnectionPool; autocommit connections",
            "worker": (
                "Runner.worker(queue, WorkerOptions(concurrency=N)).start(): worker thread + N executor "
                "threads in this process; LISTEN/NOTIFY wake-up, polling fallback"
            ),
            "conc=N": f"WorkerOptions(concurrency=N, prefetch={os.environ.get('SOLEIL_PREFETCH', 'N')}), "
            f"other options at their defaults (completion batch {defaults.completion_batch} jobs or "
            f"{defaults.completion_interval * 1000:g} ms)",
            "bulk API": "Runner.dispatch_many(list) (one COPY + one NOTIFY per chunk)",
            "asyncio": "dispatch calls run directly on the event loop (blocking, short); "
            "worker start/stop via asyncio.to_thread",
            "logging": "structlog via soleil.runner.logging.configure(level='warning')",
            "durability": "durable (default; all tables logged)",
        }

    async def setup(self, dsn: str) -> None:
        soleil_logging.configure(level="warning")
        self.runner = Runner(dsn)
        self.runner.migrate()
        with self.runner.connection() as conn:
            conn.execute(EFFECTS_TABLE_SQL)

    async def enqueue_one(self, enq_ts: float) -> None:
        assert self.runner is not None
        self.runner.dispatch(self.job_class(enq_ts=enq_ts))

    async def enqueue_bulk(self, n: int, chunk: int) -> None:
        assert self.runner is not None
        job = self.job_class()
        for start in range(0, n, chunk):
            self.runner.dispatch_many([job] * min(chunk, n - start))

    def options_for(self, concurrency: int) -> WorkerOptions:
        return worker_options(concurrency)

    def concurrency_label(self, concurrency: int) -> str:
        options = self.options_for(concurrency)
        group = f", transaction_group={options.transaction_group}" if options.transaction_group > 1 else ""
        return f"concurrency={concurrency}, prefetch={options.prefetch}{group}"

    async def start_worker(self, concurrency: int) -> Worker:
        assert self.runner is not None
        worker = self.runner.worker(QUEUE, self.options_for(concurrency))
        return await asyncio.to_thread(worker.start)

    async def stop_worker(self, handle: Any) -> None:
        await asyncio.to_thread(handle.stop, 60.0)

    async def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


if __name__ == "__main__":
    common.main(SoleilAdapter)
