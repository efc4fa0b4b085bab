"""Parameters and placeholders of the statements sent straight through libpq."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import pytest

from soleil.runner import prepared, queries


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        (True, b"t"),
        (False, b"f"),
        (42, b"42"),
        (0.25, b"0.25"),
        ("été", "été".encode()),
        (datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC), b"2030-01-02T03:04:05.000006+00:00"),
        (["a", "NULL", "b.c:d-e"], b'{"a","NULL","b.c:d-e"}'),
    ],
)
def test_parameters_are_sent_in_postgresqls_text_format(value: object, text: bytes | None) -> None:
    assert prepared._text(value, "utf-8") == text


def test_a_parameter_without_a_text_form_is_refused() -> None:
    with pytest.raises(TypeError, match="dict"):
        prepared._text({"a": 1}, "utf-8")


def test_placeholders_are_numbered_in_order_of_first_appearance() -> None:
    sql = prepared.Statement("job_insert_one").sql.decode()
    assert "%(" not in sql
    assert sorted({int(n) for n in re.findall(r"\$(\d+)", sql)}) == list(range(1, 10))


def test_a_statements_name_carries_a_digest_of_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # A server session can outlive a worker (a pooler's), and a statement already
    # prepared under its name is used as it is: a statement whose text changed
    # between two versions (job_fence's columns) must not meet the other's.
    fence = prepared.Statement("job_fence")
    digest = hashlib.sha256(fence.sql).hexdigest()[:8]
    assert fence.name == f"soleil_job_fence_{digest}".encode()
    assert prepared.Statement("job_fence").name == fence.name
    monkeypatch.setattr(queries, "get", lambda name: "SELECT 1 AS changed")
    changed = prepared.Statement("job_fence")
    assert changed.name.startswith(b"soleil_job_fence_") and changed.name != fence.name
