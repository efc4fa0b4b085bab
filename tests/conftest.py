"""Fixtures: every test gets its own database, cloned from a migrated template.

Only databases this suite creates (names starting with `soleil_t`) are ever
touched or dropped. The server is $SOLEIL_TEST_ADMIN_URL, by default the local
PostgreSQL on 127.0.0.1:5432 as `postgres`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from soleil.runner import Runner, Worker, WorkerOptions

# A suite started in the background by a non-interactive shell (`cmd &`) has
# SIGINT ignored, and so would every CLI process it starts: their Ctrl-C tests
# would hang. Given a handler here, the children start with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ADMIN_URL = os.environ.get("SOLEIL_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent

TEST_TABLES = """
CREATE TABLE public.runs (
    id serial PRIMARY KEY, job_id bigint, attempt int, tag text, pid int,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE public.hooks (job_id bigint, error text);
CREATE TABLE public.effects (id serial PRIMARY KEY, key text NOT NULL);
"""


def url_for(dbname: str) -> str:
    return conninfo.make_conninfo(ADMIN_URL, dbname=dbname)


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(ADMIN_URL, autocommit=True)


def create_database(name: str, template: str | None = None) -> str:
    with _admin() as admin:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        admin.execute(query)
    return url_for(name)


def drop_database(name: str) -> None:
    assert name.startswith("soleil_t"), name
    with _admin() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = f"soleil_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    try:
        with Runner(url) as runner:
            runner.migrate()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TEST_TABLES)
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def database_url(template_db: str) -> Iterator[str]:
    name = f"soleil_t_{uuid.uuid4().hex[:12]}"
    url = create_database(name, template=template_db)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database without the Soleil schema."""
    name = f"soleil_t_{uuid.uuid4().hex[:12]}"
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def runner(database_url: str) -> Iterator[Runner]:
    with Runner(database_url) as r:
        yield r


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


FAST = {"heartbeat_interval": 0.3, "sleep": 0.5, "stop_grace": 10.0, "timeout_grace": 0.5}


@pytest.fixture
def start_worker(runner: Runner) -> Iterator[Any]:
    """Start in-process workers with fast test settings; all are stopped at teardown."""
    started: list[Worker] = []

    def start(queues: str = "default", **options: Any) -> Worker:
        worker = runner.worker(queues, WorkerOptions(**{**FAST, **options}))
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=30)


class Processes:
    """Subprocesses started by a test; all are killed at teardown, even on failure.

    Long-running processes write to files (a pipe nobody reads would block a
    chatty worker); `output(proc)` reads them back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[subprocess.Popen[str]] = []
        self._files: dict[int, tuple[Path, Path]] = {}

    def env(self, database_url: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "SOLEIL_LOG_FORMAT": "json", **(extra or {})}
        if database_url:
            full_env["SOLEIL_DATABASE_URL"] = database_url
        return full_env

    def soleil(
        self, *args: str, database_url: str | None = None, env: dict[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[str]:
        """Start `soleil-runner ARGS` in the background."""
        number = len(self.started)
        out, err = self.directory / f"proc{number}.out", self.directory / f"proc{number}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "soleil.runner", *args],
                cwd=ROOT,
                env=self.env(database_url, env),
                text=True,
                stdout=stdout,
                stderr=stderr,
                **popen,
            )
        self.started.append(proc)
        self._files[proc.pid] = (out, err)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        out, err = self._files[proc.pid]
        return out.read_text(), err.read_text()

    def run(
        self,
        *args: str,
        database_url: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `soleil-runner ARGS` to completion."""
        return subprocess.run(
            [sys.executable, "-m", "soleil.runner", *args],
            cwd=ROOT,
            env=self.env(database_url, env),
            text=True,
            capture_output=True,
            timeout=timeout,
            input=input,
        )

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()
