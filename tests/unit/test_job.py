"""Job classes: option validation at definition, registration by name, payload loading."""

from __future__ import annotations

import re
from typing import ClassVar

import pydantic
import pytest

from soleil.runner import ConfigurationError, InvalidPayload, Job, JobContext, UnknownJob
from soleil.runner.job import REGISTRY, Registry, load_payload


class Plain(Job):
    amount: int

    def handle(self, ctx: JobContext) -> None:
        pass


class Renamed(Job):
    name = "unit.renamed"

    def handle(self, ctx: JobContext) -> None:
        pass


class Abstract(Job):
    """No handle(): a base class for other jobs, not registered."""

    queue = "abstract"


def test_the_default_name_is_module_colon_class() -> None:
    assert Plain.name == "tests.unit.test_job:Plain"
    assert REGISTRY.lookup("tests.unit.test_job:Plain") is Plain


def test_a_name_override_registers_under_that_name() -> None:
    assert REGISTRY.lookup("unit.renamed") is Renamed
    assert "tests.unit.test_job:Renamed" not in REGISTRY.names()


def test_classes_without_handle_are_not_registered() -> None:
    assert Abstract.name not in REGISTRY.names()


def test_two_classes_with_one_name_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("job name 'unit.renamed' is used by both")):

        class Impostor(Job):
            name = "unit.renamed"

            def handle(self, ctx: JobContext) -> None:
                pass


def test_redefining_the_same_class_replaces_it_instead_of_failing() -> None:
    registry = Registry()
    registry.register(Plain)
    registry.register(Plain)  # a module reloaded, or imported twice
    assert registry.names() == ["tests.unit.test_job:Plain"]


def test_an_unknown_name_says_how_to_fix_it() -> None:
    with pytest.raises(UnknownJob, match=r"unknown job 'nope'.*--app") as caught:
        REGISTRY.lookup("nope")
    assert caught.value.name == "nope"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tries": 0}, "tries must be an integer >= 1, got 0"),
        ({"tries": 1.5}, "tries must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be > 0 seconds, got 0"),
        ({"timeout": -1.0}, "timeout must be > 0 seconds"),
        ({"backoff": "linear"}, "backoff must be seconds, a list of seconds or 'exponential'"),
        ({"backoff": [1, -1]}, "backoff list items must be seconds >= 0"),
        ({"queue": "bad queue"}, "invalid queue name 'bad queue'"),
        ({"name": "bad name"}, "invalid job name 'bad name'"),
    ],
)
def test_bad_options_fail_at_class_definition_naming_the_class(
    options: dict[str, object], message: str
) -> None:
    namespace: dict[str, object] = {
        "__module__": __name__,
        "__annotations__": {key: ClassVar[object] for key in options if key != "name"},
        "handle": lambda self, ctx: None,
        **options,
    }
    with pytest.raises(ConfigurationError) as caught:
        type("BadOptions", (Job,), namespace)
    text = str(caught.value)
    assert text.startswith(f"job class {__name__}.BadOptions: ")
    assert message in text


def test_good_options_are_accepted() -> None:
    class Tuned(Job):
        name = "unit.tuned"
        queue = "emails"
        tries = 4
        backoff: ClassVar[list[int]] = [1, 5]
        timeout = 2.5
        transactional = True

        def handle(self, ctx: JobContext) -> None:
            pass

    assert REGISTRY.lookup("unit.tuned") is Tuned


def test_construction_validates_the_payload_with_pydantics_message() -> None:
    with pytest.raises(pydantic.ValidationError, match="amount"):
        Plain(amount="many")


def test_load_payload_round_trips_and_reports_what_no_longer_validates() -> None:
    assert load_payload(Plain, Plain(amount=3).model_dump_json()) == Plain(amount=3)
    with pytest.raises(
        InvalidPayload, match=re.escape("invalid payload for job 'tests.unit.test_job:Plain': amount")
    ):
        load_payload(Plain, '{"amount": "lots"}')
    with pytest.raises(InvalidPayload, match="amount: Field required"):
        load_payload(Plain, "{}")
