"""Loads the named SQL statements from `sql/queries/*.sql`, once.

Each statement starts with a header `-- name: <name> :<cardinality>`; comment lines
right after it document the statement. The files ship inside the wheel as
`soleil/sql`; in a checkout they are read from the repository's `sql/` folder.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, LiteralString, cast

Cardinality = Literal["one", "many", "none", "rowcount"]
_HEADER = re.compile(r"^-- name: ([a-z][a-z0-9_]*) :(one|many|none|rowcount)\s*$", re.M)


@dataclass(frozen=True)
class Query:
    name: str
    cardinality: Cardinality
    sql: LiteralString


def sql_root() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "sql"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "sql"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"Soleil's SQL files are missing (looked in {packaged} and {checkout})")


def parse(text: str, source: str = "<sql>") -> dict[str, Query]:
    """Split one file into its named statements."""
    found: dict[str, Query] = {}
    headers = list(_HEADER.finditer(text))
    if not headers:
        raise ValueError(f"{source}: no '-- name: <name> :<cardinality>' header")
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        # Comment lines document the file; the server gets the code alone (they
        # would crowd pg_stat_activity's 1 kB of query text and every unprepared send).
        body = _strip_comments(text[header.end() : end]).strip()
        if not body:
            raise ValueError(f"{source}: statement {header.group(1)!r} is empty")
        name = header.group(1)
        if name in found:
            raise ValueError(f"{source}: statement {name!r} is defined twice")
        # The files are part of the package, never user input: safe to treat as literal SQL.
        found[name] = Query(name, cast(Cardinality, header.group(2)), body)
    return found


def _strip_comments(body: str) -> str:
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))


class SqlStatements:
    """Named statements read once from SQL files, on first use. Soleil's own live
    in sql/queries/*.sql; an application can keep its statements the same way."""

    def __init__(self, paths: Callable[[], list[Path]]) -> None:
        self._paths = paths
        self._loaded: dict[str, Query] | None = None
        self._lock = threading.Lock()

    def all(self) -> dict[str, Query]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> dict[str, Query]:
        loaded: dict[str, Query] = {}
        for path in self._paths():
            for name, query in parse(path.read_text(encoding="utf-8"), str(path)).items():
                if name in loaded:
                    raise ValueError(f"{path}: statement {name!r} is also defined in another file")
                loaded[name] = query
        return loaded

    def get(self, name: str) -> LiteralString:
        """The SQL text of a named statement."""
        try:
            return self.all()[name].sql
        except KeyError:
            places = ", ".join(str(path) for path in self._paths())
            raise KeyError(f"no SQL statement named {name!r} in {places}") from None


RUNNER_STATEMENTS = SqlStatements(lambda: sorted((sql_root() / "queries").glob("*.sql")))


def load_all() -> dict[str, Query]:
    return RUNNER_STATEMENTS.all()


def get(name: str) -> LiteralString:
    """The SQL text of one of the runner's named statements."""
    return RUNNER_STATEMENTS.get(name)


def migrations(directory: Path | None = None) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file NNNN_name.sql in `directory`
    (default: the runner's sql/migrations), in order."""
    found: list[tuple[int, str, str]] = []
    for path in sorted((directory or sql_root() / "migrations").glob("[0-9]*.sql")):
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_name.sql")
        found.append((int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return found
