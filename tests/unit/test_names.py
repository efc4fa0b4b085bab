"""Queue and job names reach SQL and LISTEN channels: only safe names pass."""

from __future__ import annotations

import pytest

from soleil.runner import InvalidName
from soleil.runner.names import channel, parse_queue_list, validate_job_name, validate_queue


@pytest.mark.parametrize("name", ["default", "a", "emails.high", "tenant:42", "x-y_z", "9", "q" * 56])
def test_valid_queue_names_pass(name: str) -> None:
    assert validate_queue(name) == name


@pytest.mark.parametrize(
    "name", ["", " default", "-lead", "_lead", "a b", "a;drop", 'q"', "é", "q" * 64, None, 3, "q" * 57]
)
def test_invalid_queue_names_are_rejected_with_the_rule(name: object) -> None:
    with pytest.raises(InvalidName, match=r"invalid queue name .*1 to 56"):
        validate_queue(name)


@pytest.mark.parametrize("name", ["tests.record", "app.jobs:Send", "_private", "Generic<int>", "a" * 200])
def test_valid_job_names_pass(name: str) -> None:
    assert validate_job_name(name) == name


@pytest.mark.parametrize("name", ["", "1starts_with_digit", "has space", "semi;colon", "a" * 201, None])
def test_invalid_job_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidName, match="invalid job name"):
        validate_job_name(name)


def test_queue_lists_keep_priority_order_and_drop_repeats() -> None:
    assert parse_queue_list("high, default,low,high") == ["high", "default", "low"]


def test_a_queue_list_with_a_bad_name_is_rejected() -> None:
    with pytest.raises(InvalidName):
        parse_queue_list("high,,low")


def test_invalid_name_is_a_value_error_for_callers_that_catch_those() -> None:
    with pytest.raises(ValueError):
        validate_queue("a b")


def test_channels_are_prefixed() -> None:
    assert channel("emails") == "soleil:emails"
