"""Soleil's own benchmark suite: the peer harness's measurements plus Soleil's cases.

    .venv/bin/python -m benchmarks.suite                # against ../shared/bench's cluster
    .venv/bin/python -m benchmarks.suite --smoke        # tiny sizes, a few seconds

It reuses ../shared/bench/common.py (enqueue, processing and latency are measured
by its own functions, so the numbers sit next to the peer table) and adds:
  - processing without the prefetch the runs use (claims only for idle executors);
  - transactional jobs: each handler inserts one row in the transaction that also
    deletes its job, at concurrency N;
  - deep queues: the time to process N_PROCESS jobs at the head of a queue that holds
    a backlog of 1,000,000 more, and with 100,000 delayed jobs of a higher priority
    in front of the ready ones (first in the claim index, not due for an hour).
Every processing figure is "jobs whose completion is committed per second", timed
from the first job start, as in common.measure_processing.

Writes <out-dir>/soleil-suite.json and <out-dir>/soleil-suite.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import bench_soleil
from benchmarks.bench_soleil import Noop, SoleilAdapter, TransactionalWrite, common
from soleil.runner import Job, WorkerOptions

ROOT = Path(__file__).resolve().parent
BACKLOG = 1_000_000
DELAYED = 100_000
BACKLOG_CHUNK = 10_000

SMOKE_CONFIG = {
    "n_enqueue": 60,
    "bulk_chunk": 25,
    "n_process_1": 60,
    "n_process": 120,
    "conc_n": 4,
    "proc_timeout_s": 20.0,
    "lat_n": 10,
    "lat_interval_ms": 10.0,
    "lat_warmup_s": 0.3,
}
SMOKE_BACKLOG = 400
SMOKE_DELAYED = 200


class VariantAdapter(SoleilAdapter):
    """The adapter with another job class or other worker options."""

    def __init__(
        self,
        cfg: common.Config,
        *,
        job_class: type[Job] = Noop,
        options: Callable[[int], WorkerOptions] = bench_soleil.worker_options,
        remaining_sql: str | None = None,
        label: str = "soleil",
    ) -> None:
        super().__init__(cfg)
        self.job_class = job_class
        self._options = options
        self.label = label
        if remaining_sql is not None:
            self.remaining_sql = remaining_sql

    def options_for(self, concurrency: int) -> WorkerOptions:
        return self._options(concurrency)


def without_prefetch(concurrency: int) -> WorkerOptions:
    return dataclasses.replace(bench_soleil.worker_options(concurrency), prefetch=0)


# Transactional jobs measured a second time with fewer executors and a deep
# prefetch (what suits them on 2 cores), with and without transaction groups.
FEW_EXECUTORS = 4
DEEP_PREFETCH = 100
TRANSACTION_GROUP = 20


def deep_prefetch(concurrency: int) -> WorkerOptions:
    return WorkerOptions(concurrency=concurrency, prefetch=DEEP_PREFETCH)


def grouped(concurrency: int) -> WorkerOptions:
    return dataclasses.replace(deep_prefetch(concurrency), transaction_group=TRANSACTION_GROUP)


async def measure_backlog(
    base: SoleilAdapter, admin: Any, cfg: common.Config, *, backlog: int, delayed: int
) -> dict[str, Any]:
    """Process the first cfg.n_process ready jobs of a queue holding `backlog` ready
    jobs in all, behind `delayed` higher-priority jobs that are not due yet."""
    runner = base.runner
    assert runner is not None
    n = min(cfg.n_process, backlog)
    await admin.reset_jobs(base)
    t0 = time.perf_counter()
    for start in range(0, delayed, BACKLOG_CHUNK):
        count = min(BACKLOG_CHUNK, delayed - start)
        runner.dispatch_many([Noop()] * count, delay=3600, priority=1)
    first: int | None = None
    last = 0
    for start in range(0, backlog, BACKLOG_CHUNK):
        ids = runner.dispatch_many([Noop()] * min(BACKLOG_CHUNK, backlog - start))
        first = ids[0] if first is None else first
        if start < n:
            last = ids[min(n - start, len(ids)) - 1]
    fill_s = time.perf_counter() - t0
    await admin.maintenance()
    assert first is not None
    # The head of the queue is the first n ids (same priority, dispatched first);
    # counting them is a primary-key range scan, cheap to poll even with 1M rows.
    head = VariantAdapter(
        cfg, remaining_sql=f"SELECT count(*) FROM soleil.jobs WHERE id BETWEEN {first} AND {last}"
    )
    head.runner = runner
    head.cfg = dataclasses.replace(cfg, n_process=n)
    admin_n = await admin.scalar(head.remaining_sql)
    assert admin_n == n, (admin_n, n)
    result: dict[str, Any] = await _process_head(head, admin, head.cfg)
    result.update({"backlog": backlog, "delayed_in_front": delayed, "fill_s": fill_s})
    return result


async def _process_head(adapter: VariantAdapter, admin: Any, cfg: common.Config) -> dict[str, Any]:
    """common.measure_processing without its truncate-and-enqueue prologue."""
    n = cfg.n_process
    common.STATS.reset()
    t_launch = time.time()
    handle = await adapter.start_worker(cfg.conc_n)
    deadline = t_launch + cfg.proc_timeout_s
    while common.STATS.count < n and time.time() < deadline:
        await asyncio.sleep(0.02)
    remaining = await admin.scalar(adapter.remaining_sql)
    while remaining > 0 and time.time() < deadline:
        await asyncio.sleep(0.02)
        remaining = await admin.scalar(adapter.remaining_sql)
    t_end = time.time()
    await adapter.stop_worker(handle)
    t_first = common.STATS.first_start or t_launch
    secs = t_end - t_first
    done = n - remaining
    res = {
        "concurrency": cfg.conc_n,
        "jobs": n,
        "done": done,
        "timed_out": remaining > 0,
        "seconds": secs,
        "startup_s": t_first - t_launch,
        "jobs_per_s": done / secs if secs > 0 else float("nan"),
    }
    common.log(
        f"soleil: head of a deep queue: {done}/{n} jobs in {secs:.2f}s = {res['jobs_per_s']:.0f} jobs/s"
    )
    return res


async def run(cfg: common.Config, dsn: str, phases: set[str], backlog: int, delayed: int) -> dict[str, Any]:
    adapter = SoleilAdapter(cfg)
    await adapter.setup(dsn)
    admin = common.Admin(dsn)
    await admin.open()
    result: dict[str, Any] = {
        "library": "soleil",
        "version": metadata.version("soleil"),
        "python": platform.python_version(),
        "psycopg": metadata.version("psycopg"),
        "settings": adapter.settings,
        "config": dataclasses.asdict(cfg),
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        if "enqueue" in phases:
            result.update(await common.measure_enqueue(adapter, admin, cfg))
        if "process" in phases:
            result["process_conc1"] = await common.measure_processing(adapter, admin, cfg, 1)
            result["process_concN"] = await common.measure_processing(adapter, admin, cfg, cfg.conc_n)
            plain = VariantAdapter(cfg, options=without_prefetch)
            plain.runner = adapter.runner
            result["process_conc1_no_prefetch"] = await common.measure_processing(plain, admin, cfg, 1)
            result["process_concN_no_prefetch"] = await common.measure_processing(
                plain, admin, cfg, cfg.conc_n
            )
        if "latency" in phases:
            result["latency"] = await common.measure_latency(adapter, admin, cfg, cfg.conc_n)
        if "transactional" in phases:
            few = min(FEW_EXECUTORS, cfg.conc_n)
            for key, options, concurrency in [
                ("transactional_concN", bench_soleil.worker_options, cfg.conc_n),
                ("transactional_few", deep_prefetch, few),
                ("transactional_few_grouped", grouped, few),
            ]:
                transactional = VariantAdapter(
                    cfg, job_class=TransactionalWrite, options=options, label="soleil (transactional)"
                )
                transactional.runner = adapter.runner
                await admin.execute("TRUNCATE public.bench_effects")
                res = await common.measure_processing(transactional, admin, cfg, concurrency)
                res["rows_written"] = await admin.scalar("SELECT count(*) FROM public.bench_effects")
                result[key] = res
        if "deep" in phases:
            # The same measurement on a queue holding only the jobs processed: the
            # deep cases' reference, taken right before them.
            result["deep_empty"] = await measure_backlog(
                adapter, admin, cfg, backlog=cfg.n_process, delayed=0
            )
            result["deep_backlog"] = await measure_backlog(adapter, admin, cfg, backlog=backlog, delayed=0)
            result["deep_delayed_in_front"] = await measure_backlog(
                adapter, admin, cfg, backlog=cfg.n_process, delayed=delayed
            )
    finally:
        await admin.close()
        await adapter.close()
    result["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return result


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release()}


# -- report -------------------------------------------------------------------------


def _rate(res: dict[str, Any] | None) -> str:
    if not res:
        return "-"
    flag = " (timed out)" if res.get("timed_out") else ""
    return f"{res['jobs_per_s']:,.0f}{flag}"


def _setting(res: dict[str, Any] | None, default: str) -> str:
    return str(res["setting"]) if res else default


def _ratio(res: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if not res or not base or not base.get("jobs_per_s"):
        return ""
    return f"{res['jobs_per_s'] / base['jobs_per_s']:.2f}x"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    empty = result.get("process_concN")
    conc = cfg["conc_n"]
    rows = [
        ("enqueue, 1 job per transaction", _rate(result.get("enqueue_single")), ""),
        (f"enqueue bulk, {cfg['bulk_chunk']} per dispatch_many", _rate(result.get("enqueue_bulk")), ""),
        (
            f"process no-op, {_setting(result.get('process_conc1'), 'concurrency=1')}",
            _rate(result.get("process_conc1")),
            "",
        ),
        (f"process no-op, {_setting(empty, f'concurrency={conc}')}", _rate(empty), "1.00x" if empty else ""),
        ("process no-op, concurrency=1, prefetch=0", _rate(result.get("process_conc1_no_prefetch")), ""),
        (
            f"process no-op, concurrency={conc}, prefetch=0",
            _rate(result.get("process_concN_no_prefetch")),
            _ratio(result.get("process_concN_no_prefetch"), empty),
        ),
        *(
            (
                f"transactional (1 row written per job), {_setting(result.get(key), key)}",
                _rate(result.get(key)),
                _ratio(result.get(key), empty),
            )
            for key in ("transactional_concN", "transactional_few", "transactional_few_grouped")
        ),
    ]
    deep_empty = result.get("deep_empty")
    for key, label in (
        ("deep_empty", "{jobs:,} jobs, nothing else queued (deep-queue reference)"),
        ("deep_backlog", "head of a queue of {backlog:,} ready jobs"),
        ("deep_delayed_in_front", "behind {delayed_in_front:,} delayed higher-priority jobs"),
    ):
        res = result.get(key)
        if res:
            ratio = _ratio(res, deep_empty) + " of reference" if key != "deep_empty" else ""
            rows.append((f"{label.format(**res)}, concurrency {conc}", _rate(res), ratio))
    lines = [
        f"## Soleil {result['version']} benchmark suite ({result['started_at']})",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['nproc']} CPUs; Python {result['python']},"
        f" psycopg {result['psycopg']}.",
        "",
        f"| case | jobs/s | vs no-op at concurrency {conc} |",
        "|---|--:|--:|",
        *(f"| {name} | {rate} | {ratio} |" for name, rate, ratio in rows),
    ]
    lat = result.get("latency")
    if lat:
        lines += [
            "",
            f"Pickup latency of an idle worker ({lat['setting']}, {lat['received']}/{lat['jobs']} jobs,"
            f" one every {lat['interval_ms']:g} ms): p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms,"
            f" p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms.",
        ]
    return "\n".join(lines) + "\n"


# -- command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument(
        "--database-url",
        help="use this (empty or Soleil-migrated) database as is; default: recreate bench_soleil_suite "
        "on $PGHOST:$PGPORT (../shared/bench/pg.sh's cluster, 127.0.0.1:55432)",
    )
    parser.add_argument(
        "--phases",
        default="enqueue,process,latency,transactional,deep",
        help="comma-separated subset of enqueue,process,latency,transactional,deep",
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="default: benchmarks/results/<time>")
    args = parser.parse_args(argv)
    cfg = common.Config(**SMOKE_CONFIG) if args.smoke else common.Config()
    backlog = SMOKE_BACKLOG if args.smoke else int(os.environ.get("BACKLOG", BACKLOG))
    delayed = SMOKE_DELAYED if args.smoke else int(os.environ.get("DELAYED", DELAYED))
    out_dir = args.out_dir or ROOT / "results" / time.strftime("%Y%m%d-%H%M%S")

    async def amain() -> dict[str, Any]:
        dsn = args.database_url or await common.recreate_database(cfg, "bench_soleil_suite")
        return await run(cfg, dsn, set(args.phases.split(",")), backlog, delayed)

    result = asyncio.run(amain())
    result["smoke"] = args.smoke
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soleil-suite.json").write_text(json.dumps(result, indent=2))
    report = markdown(result)
    (out_dir / "soleil-suite.md").write_text(report)
    print(report)
    common.log(f"wrote {out_dir / 'soleil-suite.json'} and {out_dir / 'soleil-suite.md'}")
    return result


if __name__ == "__main__":
    main()
