"""A throwaway PostgreSQL cluster for tests that stop, restart or starve the server.

initdb runs as the OS user `postgres` (PostgreSQL refuses to run as root) into a
fresh temporary directory, on a free port, with fsync on so durability is the
real thing. `stop()` removes the directory; callers put it in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

PG_BIN = Path(os.environ.get("SOLEIL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"

# Small and fast to start; fsync stays on. Logs of connections help when a test fails.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "100",
    "shared_buffers": "'64MB'",
    "fsync": "on",
    "synchronous_commit": "on",
    "log_min_messages": "warning",
    "autovacuum_naptime": "'1s'",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One postmaster in its own data directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="soleil-pgcluster-"))
        self.data = self.root / "data"
        self.log_file = self.root / "server.log"
        self.port = _free_port()
        self.running = False

    # -- lifecycle ---------------------------------------------------------------

    def _as_postgres(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # As root (CI, this machine) switch to `postgres`; as any other user, run as that user.
        prefix = ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def init(self) -> Cluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER, OS_USER)
        self.root.chmod(0o700)
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", OS_USER, "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.root}'\n")
            for key, value in SETTINGS.items():
                conf.write(f"{key} = {value}\n")
        return self

    def start(self) -> Cluster:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60", "start"
        )
        self.running = True
        return self

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m MODE`: every connection is cut, the server comes back."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
            "-m", mode, "restart",
        )  # fmt: skip

    def shut_down(self) -> None:
        """`pg_ctl stop -m fast`, files kept: an outage that start() ends."""
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")
        self.running = False

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is worth keeping) and remove its files."""
        try:
            if self.running:
                with contextlib.suppress(subprocess.SubprocessError):
                    self._as_postgres(
                        str(PG_BIN / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-w",
                        "-t",
                        "30",
                        "-m",
                        "immediate",
                        "stop",
                    )
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"postgresql://{OS_USER}@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str, **params: Any) -> str:
        return conninfo.make_conninfo(self.admin_url, dbname=dbname, **params)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with self.admin() as admin:
            admin.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def server_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""
