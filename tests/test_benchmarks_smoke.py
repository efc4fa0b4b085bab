"""The benchmark suite in smoke mode: it runs end to end on tiny sizes and writes
well-formed JSON and markdown. Never asserts on speed (CI machines are noisy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

suite = pytest.importorskip(
    "benchmarks.suite", reason="the peer harness ../shared/bench/common.py is not on this machine"
)


def test_the_suite_completes_and_writes_json_and_markdown(empty_database_url: str, tmp_path: Path) -> None:
    suite.main(["--smoke", "--database-url", empty_database_url, "--out-dir", str(tmp_path)])

    result = json.loads((tmp_path / "soleil-suite.json").read_text())
    processing = [
        "process_conc1",
        "process_concN",
        "process_conc1_no_prefetch",
        "process_concN_no_prefetch",
        "transactional_concN",
        "transactional_few",
        "transactional_few_grouped",
        "deep_empty",
        "deep_backlog",
        "deep_delayed_in_front",
    ]
    for key in processing:
        assert result[key]["done"] == result[key]["jobs"], key
        assert not result[key]["timed_out"], key
        assert result[key]["jobs_per_s"] > 0, key
    for key in ("enqueue_single", "enqueue_bulk"):
        assert result[key]["in_db"] == result[key]["jobs"], key
    for key in ("transactional_concN", "transactional_few", "transactional_few_grouped"):
        assert result[key]["rows_written"] == result[key]["jobs"], key
    latency = result["latency"]
    assert latency["received"] == latency["jobs"]
    assert all(math.isfinite(latency[p]) for p in ("p50_ms", "p95_ms", "p99_ms"))

    table = (tmp_path / "soleil-suite.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| case")]
    assert len(rows) == 12
    assert all(line.count("|") == 4 for line in rows)
    assert any(line.startswith("Pickup latency") for line in table)
