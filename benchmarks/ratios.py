"""Soleil against the best peer, from run_peers.sh output: the ratio table of docs/performance.md.

    .venv/bin/python -m benchmarks.ratios /tmp/peer-bench-results/<run-id> [<run-id> ...]

With several runs, each library's figure is the median over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (label, how to read it from a library's JSON, higher is better, target as text)
Metric = tuple[str, Callable[[dict[str, Any]], float | None], bool, str]


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value)

    return read


METRICS: list[Metric] = [
    ("enqueue, 1 job per transaction (jobs/s)", _get("enqueue_single", "jobs_per_s"), True, ""),
    ("bulk enqueue (jobs/s)", _get("enqueue_bulk", "jobs_per_s"), True, ">= 1.5x"),
    ("process no-op, concurrency 1 (jobs/s)", _get("process_conc1", "jobs_per_s"), True, ""),
    ("process no-op, concurrency N (jobs/s)", _get("process_concN", "jobs_per_s"), True, ">= 2x"),
    ("pickup latency p50 (ms)", _get("latency", "p50_ms"), False, "< 2 ms"),
    ("pickup latency p95 (ms)", _get("latency", "p95_ms"), False, ""),
    ("pickup latency p99 (ms)", _get("latency", "p99_ms"), False, "<= best peer"),
]


def load(run_dirs: list[Path]) -> dict[str, list[dict[str, Any]]]:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run_dir in run_dirs:
        for path in sorted(run_dir.glob("*.json")):
            if path.name == "env.json":
                continue
            result = json.loads(path.read_text())
            by_label[result.get("label") or result["library"]].append(result)
    return by_label


def median_of(results: list[dict[str, Any]], read: Callable[[dict[str, Any]], float | None]) -> float | None:
    values = [v for v in (read(r) for r in results) if v is not None]
    return statistics.median(values) if values else None


def table(by_label: dict[str, list[dict[str, Any]]], ours: str = "soleil") -> str:
    peers = sorted(label for label in by_label if label != ours)
    head = ["metric", ours, *peers, "best peer", "ratio", "target"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 2) + "---|"]
    for label, read, higher_is_better, target in METRICS:
        mine = median_of(by_label.get(ours, []), read)
        theirs = {peer: median_of(by_label[peer], read) for peer in peers}
        known = {peer: value for peer, value in theirs.items() if value is not None}
        best = (max if higher_is_better else min)(known.items(), key=lambda kv: kv[1]) if known else None
        ratio = ""
        if best and mine:
            ratio = f"{mine / best[1]:.2f}x" if higher_is_better else f"{best[1] / mine:.2f}x faster"
        cells = [label, _fmt(mine), *(_fmt(theirs[p]) for p in peers)]
        cells += [best[0] if best else "-", ratio, target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ratios", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories written by run_peers.sh")
    args = parser.parse_args(argv)
    print(table(load(args.runs)), end="")


if __name__ == "__main__":
    main()
