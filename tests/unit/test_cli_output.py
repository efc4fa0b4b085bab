"""How operations commands print: tables, ages and counts (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from soleil.runner.cli.output import plural, seconds, table


def test_table_aligns_columns_and_shows_missing_values_as_dashes() -> None:
    text = table(
        ["QUEUE", "READY", "PAUSED", "AT"],
        [("default", 12, False, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)), ("mail", None, True, None)],
    )
    assert text.splitlines() == [
        "QUEUE    READY  PAUSED  AT",
        "default  12     no      2026-01-02 03:04:05+0000",
        "mail     -      yes     -",
    ]


def test_lists_floats_and_empty_lists() -> None:
    assert table(["Q", "AVG"], [(["a", "b"], 1.25), ([], 0.0)]).splitlines()[1:] == ["a,b  1.2", "-    0.0"]


def test_ages_read_naturally() -> None:
    assert [seconds(v) for v in (None, 1.44, 42.9, 185, 7800)] == ["-", "1.4s", "42s", "3m05s", "2h10m"]


def test_plural() -> None:
    assert (plural(1, "job"), plural(0, "job"), plural(2, "failed job")) == (
        "1 job",
        "0 jobs",
        "2 failed jobs",
    )
