"""systemd instance names to queue lists (`soleil-runner work-instance`)."""

from __future__ import annotations

import pytest

from soleil.runner.cli.units import queues_for_instance


@pytest.mark.parametrize(
    ("instance", "queues"),
    [
        ("bookings", ["bookings"]),
        ("bookings-1", ["bookings"]),
        ("bookings-12", ["bookings"]),
        ("high-priority", ["high-priority"]),
        ("high-priority-2", ["high-priority"]),
        ("mail.v2", ["mail.v2"]),
        (r"bookings\x2cdefault", ["bookings", "default"]),
        (r"bookings\x2cdefault-3", ["bookings", "default"]),
        (r"v\x2d2", ["v-2"]),  # `systemd-escape v-2`: the queue named v-2, not process 2 of v
        (r"v\x2d2-1", ["v-2"]),
        ("bookings,default-2", ["bookings", "default"]),  # if systemd already unescaped the comma
    ],
)
def test_instance_names_map_to_queues(instance: str, queues: list[str]) -> None:
    assert queues_for_instance(instance) == queues


@pytest.mark.parametrize("instance", ["-1", "bad!", r"a\x2c"])
def test_invalid_instance_names_are_refused(instance: str) -> None:
    with pytest.raises(ValueError, match="invalid queue name"):
        queues_for_instance(instance)
