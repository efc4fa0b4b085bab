"""WorkerOptions: validated once, naming the field that is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from soleil.runner import ConfigurationError, WorkerOptions


def test_defaults_are_valid_and_follow_laravel() -> None:
    options = WorkerOptions().validated()
    assert (options.concurrency, options.sleep, options.tries, options.timeout) == (1, 3.0, 1, 60.0)
    assert options.lease_seconds == 2 * options.heartbeat_interval


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", 0),
        ("concurrency", 1.5),
        ("sleep", 0),
        ("tries", 0),
        ("timeout", -1),
        ("max_jobs", 0),
        ("max_time", 0),
        ("memory_mb", 0),
        ("heartbeat_interval", 0),
        ("timeout_grace", -0.1),
        ("stop_grace", -1),
        ("completion_interval", 0),
        ("completion_batch", 0),
        ("transaction_group", 0),
        ("transaction_group", 65),  # past PostgreSQL's 64 cached subtransactions
        ("transaction_group", True),
        # bool is an int to Python: True must not pass as a concurrency of 1.
        ("concurrency", True),
        ("tries", True),
        ("prefetch", False),
        ("max_jobs", True),
        ("timeout", True),
        ("sleep", "3"),
        ("heartbeat_interval", float("nan")),
        ("stop_when_empty", 1),
        # Past these a worker failed later and less clearly: no thread for each executor,
        # an interval PostgreSQL cannot hold, a wait Python refuses.
        ("concurrency", 100_000),
        ("prefetch", 10**11),
        ("heartbeat_interval", float("inf")),
        ("stop_grace", float("nan")),
        ("timeout", 1e12),
        ("completion_batch", 10**6),
    ],
)
def test_each_bad_option_is_named(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"invalid worker option {field}={value!r}"):
        WorkerOptions(**{field: value}).validated()


@pytest.mark.parametrize("backoff", ["linear", [-1], True])
def test_a_bad_backoff_is_named(backoff: Any) -> None:
    with pytest.raises(ConfigurationError, match="invalid worker option backoff: "):
        WorkerOptions(backoff=backoff).validated()


def test_a_worker_validates_its_options_and_queues_before_touching_the_database() -> None:
    from soleil.runner import InvalidName, Runner

    runner = Runner("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError, match="concurrency"):
        runner.worker("default", WorkerOptions(concurrency=0))
    with pytest.raises(InvalidName):
        runner.worker("good,bad queue")
