"""Limits are enforced before any SQL: these runners point at a port where nothing
listens, so a refusal that reached the database would be DatabaseUnavailable.
(dispatch_many checks payloads while it streams its COPY: tests/integration/test_dispatch.py.)"""

from __future__ import annotations

import pytest

from soleil.runner import InvalidName, InvalidPayload, PayloadTooLarge, Runner, Worker
from soleil.runner.dispatch import DEFAULT_MAX_PAYLOAD_BYTES, to_row
from tests.apps.basic import Record

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"
OVERHEAD = len('{"tag":""}')


def test_the_default_limit_is_one_megabyte() -> None:
    assert Runner(NOWHERE).max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES == 1_000_000


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    runner = Runner(NOWHERE, max_payload_bytes=1_000)
    with pytest.raises(PayloadTooLarge, match=r"is 1010 bytes, above the limit of 1000 bytes") as caught:
        runner.dispatch(Record(tag="é" * 500))  # 500 characters, 1,000 bytes
    assert (caught.value.size, caught.value.limit) == (1010, 1000)


def test_a_payload_at_the_limit_passes() -> None:
    row = to_row(Record(tag="x" * (100 - OVERHEAD)), max_payload_bytes=100)
    assert len(row.payload.encode()) == 100


@pytest.mark.parametrize(
    "queue",
    ["x" * 64, "bad name", "a;b", "default'; DROP TABLE soleil.jobs; --", "queue\x00", "é", "-lead"],
)
def test_queue_names_are_validated_before_sql(queue: str) -> None:
    runner = Runner(NOWHERE)
    with pytest.raises(InvalidName, match="invalid queue name"):
        runner.dispatch(Record(), queue=queue)
    with pytest.raises(InvalidName, match="invalid queue name"):
        Worker(runner, [queue])


@pytest.mark.parametrize("tag", ["nul \x00 byte", "lone \udc80 surrogate"])
def test_unstorable_strings_are_refused_before_sql(tag: str) -> None:
    with pytest.raises(InvalidPayload, match=r"invalid payload for job 'tests\.record'"):
        Runner(NOWHERE).dispatch(Record(tag=tag))
