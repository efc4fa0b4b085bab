"""Events and listeners without a database: registration and the queued listener's job."""

from __future__ import annotations

import pytest

from soleil.runner import ConfigurationError, Event, EventContext, Listener
from soleil.runner.events import LISTENERS, QueuedListenerJob
from soleil.runner.job import REGISTRY


class Shipped(Event):
    order_id: int


class Returned(Event):
    order_id: int
    reason: str = ""


class SpecialShipped(Shipped):
    pass


class AuditTrail(Listener[Shipped | Returned]):
    queued = True
    queue = "audit"
    tries = 4

    def handle(self, event: Shipped | Returned, ctx: EventContext) -> None:
        pass


class Inline(Listener[Shipped]):
    def handle(self, event: Shipped, ctx: EventContext) -> None:
        pass


def test_a_listener_registers_for_each_event_of_its_type_parameter() -> None:
    assert AuditTrail.events == (Shipped, Returned)
    assert AuditTrail in LISTENERS.listeners_for(Returned)
    assert LISTENERS.listeners_for(Shipped) == [AuditTrail, Inline]


def test_listeners_of_a_base_event_hear_its_subclasses() -> None:
    assert LISTENERS.listeners_for(SpecialShipped) == [AuditTrail, Inline]


def test_a_queued_listener_runs_as_its_own_job_class_with_its_options() -> None:
    job_class = AuditTrail.job_class
    assert job_class is not None and issubclass(job_class, QueuedListenerJob)
    assert job_class.name == f"listener:{AuditTrail.name}"
    assert (job_class.queue, job_class.tries) == ("audit", 4)
    assert REGISTRY.lookup(job_class.name) is job_class
    assert Inline.job_class is None


def test_the_job_payload_rebuilds_the_event() -> None:
    assert AuditTrail.job_class is not None
    job = AuditTrail.job_class(event=Returned.name, data=Returned(order_id=3, reason="late").model_dump())
    assert job.load_event() == Returned(order_id=3, reason="late")


def test_a_listener_of_something_that_is_not_an_event_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not an Event class"):

        class Wrong(Listener[int]):  # type: ignore[type-var]
            def handle(self, event: int, ctx: EventContext) -> None:
                pass
