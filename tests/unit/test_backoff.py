"""Backoff rules: seconds, a list whose last value repeats, or exponential with jitter."""

from __future__ import annotations

import random

import pytest

from soleil.runner import backoff


def test_an_int_waits_the_same_after_every_attempt() -> None:
    assert [backoff.delay_seconds(7, attempt) for attempt in (1, 2, 10)] == [7.0, 7.0, 7.0]


def test_a_list_is_indexed_by_attempt_and_its_last_value_repeats() -> None:
    spec = [1, 5, 10]
    assert [backoff.delay_seconds(spec, attempt) for attempt in range(1, 7)] == [1, 5, 10, 10, 10, 10]


def test_exponential_doubles_from_one_second_with_at_most_a_quarter_of_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        base = 2.0 ** (attempt - 1)
        for _ in range(50):
            delay = backoff.delay_seconds("exponential", attempt, rng)
            assert base <= delay <= base * 1.25


def test_exponential_jitter_spreads_jobs_that_failed_together() -> None:
    delays = {backoff.delay_seconds("exponential", 3) for _ in range(20)}
    assert len(delays) > 1


def test_exponential_is_capped_at_an_hour_plus_jitter() -> None:
    delay = backoff.delay_seconds("exponential", 60)
    assert backoff.EXPONENTIAL_CAP_SECONDS <= delay <= backoff.EXPONENTIAL_CAP_SECONDS * 1.25


@pytest.mark.parametrize(
    ("text", "spec"),
    [("10", 10.0), (" 2.5 ", 2.5), ("1,5,10", [1.0, 5.0, 10.0]), ("exponential", "exponential")],
)
def test_cli_forms_parse(text: str, spec: object) -> None:
    assert backoff.parse(text) == spec


@pytest.mark.parametrize("text", ["", "soon", "1,,2", "1,x", "-1", "1,-5", "Exponential"])
def test_bad_cli_forms_name_the_problem(text: str) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff.parse(text)


@pytest.mark.parametrize("spec", [True, -1, "linear", [], [1, -2], [1, "2"], None, {"a": 1}])
def test_validate_rejects_what_is_not_a_backoff(spec: object) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff.validate(spec)


@pytest.mark.parametrize("spec", [0, 3, 1.5, [0], (1, 2), "exponential"])
def test_validate_accepts_every_documented_form(spec: object) -> None:
    backoff.validate(spec)
