"""Every named data statement in sql/queries plans against the migrated schema:
a typo or a renamed column fails here, not in a worker at 3 a.m."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from soleil.runner import queries

# EXPLAIN only takes data statements; DDL, GRANT and COPY are covered by the tests
# that run them (migrations, roles, dispatch_many).
_EXPLAINABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


def first_keyword(sql_text: str) -> str:
    code = [line for line in sql_text.splitlines() if line.strip() and not line.lstrip().startswith("--")]
    return code[0].split()[0].upper() if code else ""


def explainable() -> list[str]:
    return sorted(name for name, q in queries.load_all().items() if first_keyword(q.sql) in _EXPLAINABLE)


def test_the_core_statements_are_all_checked() -> None:
    core = {"job_insert_one", "job_claim_available", "job_complete_many", "job_move_to_failed"}
    assert core | {"job_rescue_orphans", "worker_heartbeat", "worker_remove_dead"} <= set(explainable())


def test_every_named_statement_plans_against_the_schema(conn: psycopg.Connection[Any]) -> None:
    failures: list[str] = []
    for name in explainable():
        # Parameters become NULL: planning needs their types only where the SQL casts them.
        text = re.sub(r"%\(\w+\)s|\$\d+", "NULL", queries.get(name)).replace("%%", "%")
        text = text.replace("{schema}", "soleil")  # the migrator's statements serve any schema
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("EXPLAIN " + text, prepare=False)
        except psycopg.Error as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)
