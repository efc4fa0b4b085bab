"""Named statements: header parsing, and every statement in sql/queries loads and parses."""

from __future__ import annotations

import pytest

from soleil.runner import queries


def test_headers_split_a_file_into_named_statements_with_cardinality() -> None:
    text = (
        "-- file comment\n\n"
        "-- name: first_one :one\n-- what it does\nSELECT 1;\n\n"
        "-- name: second_many :many\nSELECT 2\nFROM t;\n"
    )
    found = queries.parse(text)
    assert list(found) == ["first_one", "second_many"]
    assert found["first_one"].cardinality == "one"
    assert found["first_one"].sql == "SELECT 1;"  # comment lines stay in the file
    assert found["second_many"].cardinality == "many"
    assert found["second_many"].sql == "SELECT 2\nFROM t;"


def test_a_file_without_header_is_rejected() -> None:
    with pytest.raises(ValueError, match="no '-- name"):
        queries.parse("SELECT 1;", "x.sql")


def test_a_name_defined_twice_is_rejected() -> None:
    text = "-- name: twice :one\nSELECT 1;\n-- name: twice :many\nSELECT 2;\n"
    with pytest.raises(ValueError, match="'twice' is defined twice"):
        queries.parse(text, "x.sql")


def test_an_empty_statement_is_rejected_even_with_comments() -> None:
    text = "-- name: empty :none\n-- only a comment\n\n-- name: full :one\nSELECT 1;\n"
    with pytest.raises(ValueError, match="'empty' is empty"):
        queries.parse(text, "x.sql")


def test_a_malformed_header_is_not_taken_for_a_statement() -> None:
    # An unknown cardinality is not a header: the file then has no statement at all.
    with pytest.raises(ValueError, match="no '-- name"):
        queries.parse("-- name: odd :several\nSELECT 1;\n")


def test_every_statement_in_sql_queries_loads() -> None:
    loaded = queries.load_all()
    assert {"job_insert_one", "job_claim_available", "job_complete_many", "worker_heartbeat"} <= set(loaded)
    for name, query in loaded.items():
        assert query.name == name
        assert query.sql.strip()
        assert queries.get(name) == query.sql


def test_an_unknown_statement_name_says_where_it_looked() -> None:
    with pytest.raises(KeyError, match="no SQL statement named 'nope'"):
        queries.get("nope")


def test_migrations_are_numbered_in_order() -> None:
    versions = [version for version, _, _ in queries.migrations()]
    assert versions == sorted(versions)
    assert versions[0] == 1
