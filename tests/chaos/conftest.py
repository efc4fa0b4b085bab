"""Fixtures of the chaos tier: one throwaway cluster for the session (tests restart
and starve it, so it must not be the shared server), a fresh database per test
cloned from a migrated template, and worker subprocesses."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from soleil.runner import Runner
from tests.conftest import TEST_TABLES, Processes
from tests.pgcluster import Cluster

APPS = "tests.apps.basic,tests.apps.chaos"

# Fast leases so a killed worker's jobs come back within a few seconds; --tries
# high enough that no job runs out of tries however often its worker is killed.
WORKER_ARGS = ("--heartbeat", "1", "--sleep", "0.5", "--tries", "25", "--stop-grace", "10")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    server = Cluster()
    try:
        server.init().start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chaos_template(cluster: Cluster) -> str:
    name = "soleil_chaos_template"
    url = cluster.create_database(name)
    with Runner(url) as runner:
        runner.migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TEST_TABLES)
    return name


@pytest.fixture
def chaos_url(cluster: Cluster, chaos_template: str) -> Iterator[str]:
    name = f"soleil_t_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name, template=chaos_template)
    try:
        yield url
    finally:
        cluster.drop_database(name)


@pytest.fixture
def chaos_runner(chaos_url: str) -> Iterator[Runner]:
    with Runner(chaos_url) as runner:
        yield runner


@pytest.fixture
def chaos_conn(chaos_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(chaos_url, autocommit=True) as conn:
        yield conn


WorkerStarter = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn_worker(processes: Processes, chaos_url: str) -> WorkerStarter:
    """Start `soleil-runner work QUEUES --app tests.apps...` as a subprocess (killed at teardown)."""

    def spawn(*extra: str, queues: str = "default", url: str | None = None) -> subprocess.Popen[str]:
        return processes.soleil(
            "work", queues, "--app", APPS, *WORKER_ARGS, *extra, database_url=url or chaos_url
        )

    return spawn
