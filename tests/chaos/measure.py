"""Measurements shared by the chaos tests: pickup latency and drain progress."""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from soleil.runner import Runner
from tests.apps.chaos import Stamp
from tests.helpers import scalar, wait_for


def pickup_latency(runner: Runner, conn: psycopg.Connection[Any], timeout: float = 10.0) -> float:
    """Dispatch one Stamp job to an idle worker; seconds from dispatch to the job's start."""
    sent_at = time.time()
    job_id = runner.dispatch(Stamp(sent_at=sent_at))
    started = wait_for(
        lambda: scalar(conn, "SELECT extract(epoch FROM at) FROM public.runs WHERE job_id = %s", (job_id,)),
        timeout=timeout,
        interval=0.005,
        what=f"job {job_id} to start",
    )
    return float(started) - sent_at


def pickup_latencies(
    runner: Runner, conn: psycopg.Connection[Any], count: int, *, warmup: int = 0, gap: float = 0.0
) -> list[float]:
    """`count` pickups, one job at a time. The `warmup` pickups before them are not kept
    (the first jobs after a (re)connect pay for new connections and plan caching). Before
    each job: the previous one has completed, then `gap` seconds, so the workers are idle
    (waiting for a notification) when it is dispatched."""
    latencies = []
    for _ in range(warmup + count):
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM soleil.jobs") == 0,
            interval=0.005,
            what="the previous job to complete",
        )
        time.sleep(gap)  # pacing between samples, not a wait for a condition
        latencies.append(pickup_latency(runner, conn))
    return latencies[warmup:]


def describe_ms(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms over {len(ms)} jobs"
