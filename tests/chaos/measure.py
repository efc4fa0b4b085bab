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


def pickup_latencies(runner: Runner, conn: psycopg.Connection[Any], count: int) -> list[float]:
    return [pickup_latency(runner, conn) for _ in range(count)]


def describe_ms(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms over {len(ms)} jobs"
