"""The systemd deployment: the unit files as systemd reads them, and the worker's
side of the notify protocol, seen through a real NOTIFY_SOCKET the way systemd
binds it. The worker runs as a subprocess with the unit's own ExecStart."""

from __future__ import annotations

import configparser
import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from soleil.runner import Runner, Worker, WorkerOptions
from soleil.runner import worker as worker_module
from soleil.runner.sdnotify import Notifier
from soleil.runner.worker import MAIN_LOOP_POOL_WAIT_SECONDS
from tests.apps.basic import Record
from tests.conftest import ADMIN_URL, ROOT, Processes, url_for
from tests.helpers import scalar, wait_for

UNITS = ROOT / "systemd"
INSTALLED_RUNNER = "/opt/soleil/venv/bin/soleil-runner"
WATCHDOG_USEC = 500_000  # systemd's WatchdogSec=0.5s: the worker pings every 0.25 s


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def exec_start_args(instance: str, work_options: str = "") -> list[str]:
    """The worker unit's ExecStart for an instance, without the program, expanded as
    systemd does: %i is the raw instance, an unbraced $VAR splits into words (none if empty)."""
    command = unit("soleil-worker@.service")["Service"]["ExecStart"]
    program, *args = shlex.split(command)
    assert program == INSTALLED_RUNNER
    expanded: list[str] = []
    for arg in args:
        if arg == "$SOLEIL_WORK_OPTIONS":
            expanded += work_options.split()
        else:
            assert "$" not in arg, f"unexpected variable in ExecStart: {arg}"
            expanded.append(arg.replace("%i", instance))
    return expanded


def expand_braced(word: str, env: dict[str, str]) -> str:
    """systemd's ${VAR} in an ExecStart word."""
    return re.sub(r"\$\{(\w+)\}", lambda match: env[match[1]], word)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


# -- the unit files -------------------------------------------------------------


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/setup.sh installs it (Debian package systemd)")
    installed = Path(sys.executable).parent / "soleil-runner"
    assert os.access(installed, os.X_OK), f"{installed} missing: pip install -e . first"
    names = sorted(p.name for p in UNITS.iterdir() if p.suffix in {".service", ".target", ".timer"})
    assert {"soleil-worker@.service", "soleil-monitor.timer", "soleil-prune.timer"} <= set(names)
    for name in names:  # systemd checks that ExecStart's program exists: point it at this venv's
        text = (UNITS / name).read_text().replace(INSTALLED_RUNNER, str(installed))
        (tmp_path / name).write_text(text)
    (tmp_path / "soleil-worker@bookings-1.service").write_text(
        (tmp_path / "soleil-worker@.service").read_text()
    )
    checked = [n for n in names if "@." not in n] + ["soleil-worker@bookings-1.service"]
    result = subprocess.run(
        [analyze, "verify", *checked], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", "systemd-analyze warned:\n" + result.stderr


def test_worker_unit_timeouts_are_consistent() -> None:
    service = unit("soleil-worker@.service")["Service"]
    args = exec_start_args("bookings")
    stop_grace = float(args[args.index("--stop-grace") + 1])
    job_timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 60.0
    # A job that starts just before SIGTERM may run its whole timeout (plus the
    # 5 s --timeout-grace) while the worker drains...
    assert stop_grace >= job_timeout + 5
    # ...and systemd must not SIGKILL the drain: after the grace the worker still
    # hands back unstarted jobs, flushes completions and disconnects (about 30 s at most).
    assert seconds(service["TimeoutStopSec"]) >= stop_grace + 30
    # The main loop pings; its longest legitimate wait must stay well inside WatchdogSec.
    assert seconds(service["WatchdogSec"]) >= 4 * MAIN_LOOP_POOL_WAIT_SECONDS
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "always" and service["KillMode"] == "mixed"
    assert service["EnvironmentFile"] == "/etc/soleil/soleil.env"


def test_timer_services_run_their_commands(processes: Processes, database_url: str) -> None:
    """The oneshot units' ExecStart, with their default Environment=, is a command that works."""
    for service in ("soleil-monitor.service", "soleil-prune.service"):
        section = unit(service)["Service"]
        defaults = dict(item.split("=", 1) for item in section["Environment"].split())
        program, *args = shlex.split(section["ExecStart"])
        assert program == INSTALLED_RUNNER
        expanded = [expand_braced(arg, defaults) for arg in args]
        result = processes.run(*expanded, database_url=database_url, timeout=30)
        assert result.returncode == 0, (service, result.stdout + result.stderr)


# -- the notify protocol, end to end --------------------------------------------


class NotifySocket:
    """A unix datagram socket bound where systemd would bind NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value: a path or '@name'
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, value: str | None = None, timeout: float = 15.0) -> dict[str, str]:
        """The next message carrying `key` (with `value`), failing at the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self.receive(left)
            if fields is not None and key in fields and value in (None, fields[key]):
                return fields
        seen = [m for _, m in self.messages[-10:]]
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; last messages: {seen}")

    def drain(self) -> None:
        while self.receive(0.001) is not None:
            pass

    def times_of(self, key: str) -> list[float]:
        return [at for at, fields in self.messages if key in fields]


@contextlib.contextmanager
def bound_notify_socket(kind: str, directory: Path) -> Iterator[NotifySocket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if kind == "path":
            address = str(directory / "notify.sock")
            sock.bind(address)
        else:
            address = f"@soleil-test-{uuid.uuid4().hex}"
            sock.bind("\0" + address[1:])
        yield NotifySocket(sock, address)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    """Both kinds systemd uses: a path (/run/systemd/notify) and an abstract socket ('@...')."""
    with bound_notify_socket(request.param, tmp_path) as notify:
        yield notify


@pytest.fixture
def path_notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    with bound_notify_socket("path", tmp_path) as notify:
        yield notify


def start_unit_worker(
    processes: Processes,
    database_url: str,
    notify: NotifySocket,
    work_options: str,
    instance: str = "default-1",
) -> subprocess.Popen[str]:
    """`soleil-runner` as soleil-worker@INSTANCE.service runs it, under a fake systemd."""
    env = {
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "SOLEIL_APP": "tests.apps.basic",
    }
    args = exec_start_args(instance, work_options)
    return processes.soleil(*args, database_url=database_url, env=env)


def listen_backends(conn: psycopg.Connection[Any]) -> list[tuple[int, str | None]]:
    """(pid, client address) of the listener sessions in this database that have subscribed:
    the first statement a listener sends is LISTEN (then it claims and looks up)."""
    rows = conn.execute(
        "SELECT pid, host(client_addr) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'soleil-listener' AND query <> ''"
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def test_ready_after_listen_then_watchdog_status_and_stopping(
    processes: Processes,
    database_url: str,
    runner: Runner,
    conn: psycopg.Connection[Any],
    notify_socket: NotifySocket,
) -> None:
    # --sleep 30: a job picked up at once after READY was woken by NOTIFY, not by a poll.
    proc = start_unit_worker(processes, database_url, notify_socket, "--sleep 30")
    ready = notify_socket.wait_for("READY", "1")
    assert listen_backends(conn), "READY=1 arrived before the worker was LISTENing"
    assert ready["MAINPID"] == str(proc.pid)
    assert ready["STATUS"] == "idle; 0 done"

    dispatched = time.monotonic()
    job_id = runner.dispatch(Record(tag="after-ready"))
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE job_id = %s", (job_id,)), timeout=10
    )
    assert time.monotonic() - dispatched < 2.0

    notify_socket.wait_for("STATUS", "idle; 1 done", timeout=10)
    while len(notify_socket.times_of("WATCHDOG")) < 5:
        notify_socket.wait_for("WATCHDOG", "1", timeout=5)
    pings = notify_socket.times_of("WATCHDOG")
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert statistics.median(gaps) < WATCHDOG_USEC / 1e6, gaps  # systemd would not have fired

    proc.send_signal(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING", "1")
    assert stopping["STATUS"].startswith("draining: 0 running (SIGTERM)")
    assert proc.wait(timeout=20) == 0
    _, err = processes.output(proc)
    started = [json.loads(line) for line in err.splitlines() if '"worker.started"' in line]
    assert started and started[0]["queues"] == ["default"]  # instance default-1 works queue default


def test_watchdog_pings_stop_while_the_main_loop_is_blocked(
    processes: Processes, database_url: str, conn: psycopg.Connection[Any], path_notify_socket: NotifySocket
) -> None:
    notify = path_notify_socket
    proc = start_unit_worker(processes, database_url, notify, "--sleep 0.1")
    notify.wait_for("READY", "1")
    notify.wait_for("WATCHDOG", "1")
    with psycopg.connect(database_url, autocommit=True) as locker, locker.transaction():
        # The worker's next claim now waits for this lock inside its main loop,
        # exactly like a statement hung on a dead connection would.
        locker.execute("LOCK TABLE soleil.jobs IN ACCESS EXCLUSIVE MODE")
        # Found by whom it waits for, not by its text: pg_stat_activity.query keeps only the first
        # track_activity_query_size (1 kB) of a statement, and the claim's comments alone fill that.
        wait_for(
            lambda: scalar(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND %s = ANY(pg_blocking_pids(pid))",
                (locker.info.backend_pid,),
            ),
            what="the worker's claim to block on the lock",
        )
        notify.drain()
        blocked_for = 4 * WATCHDOG_USEC / 1e6  # two whole WatchdogSec: systemd would restart it
        late = notify.receive(blocked_for)
        while late is not None and "WATCHDOG" not in late:  # STATUS lines are not pings
            late = notify.receive(blocked_for)
        assert late is None, f"a watchdog ping from a blocked main loop: {late}"
    notify.wait_for("WATCHDOG", "1", timeout=5)  # the loop runs again: so do the pings
    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING", "1")
    assert proc.wait(timeout=20) == 0


def test_listener_uses_the_direct_listen_url(
    start_worker: Any, database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Behind PgBouncer the pool's URL goes through the bouncer; LISTEN must not."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    socket_dir = "/var/run/postgresql"
    if not Path(socket_dir, ".s.PGSQL.5432").exists():
        pytest.skip("no local PostgreSQL socket to stand for a second route to the server")
    direct = f"host={socket_dir} port=5432 user=postgres dbname={dbname}"
    start_worker(listen_database_url=direct)
    # The pool connects over TCP (127.0.0.1), the listener over the unix socket (no client address).
    backends = wait_for(lambda: listen_backends(conn), what="a LISTEN session")
    assert [addr for _, addr in backends] == [None]
    assert scalar(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND host(client_addr) = '127.0.0.1' AND application_name <> 'soleil-listener'"
        " AND pid <> pg_backend_pid()",
    )


@pytest.fixture
def listen_role() -> Iterator[str]:
    """A role that may not log in yet: a listener using it cannot connect until the test allows it."""
    role = f"soleil_t_listen_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_no_ready_until_the_listener_listens(
    listen_role: str,
    runner: Runner,
    conn: psycopg.Connection[Any],
    path_notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notify = path_notify_socket
    monkeypatch.setattr(worker_module, "LISTENER_READY_WAIT_SECONDS", 0.3)  # 10 s in production
    listen_url = conninfo.make_conninfo(runner.database_url, user=listen_role)
    options = WorkerOptions(
        sleep=0.2, heartbeat_interval=0.3, stop_grace=10.0, listen_database_url=listen_url
    )
    worker = Worker(runner, "default", options, notifier=Notifier(notify.address)).start()
    try:
        # The worker gives up waiting for its listener and works by polling...
        job_id = runner.dispatch(Record(tag="polled"))
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM public.runs WHERE job_id = %s", (job_id,)),
            what="the job to run by polling",
        )
        notify.drain()
        assert not [m for _, m in notify.messages if "READY" in m], "READY=1 without a LISTEN session"
        assert not listen_backends(conn)
        # ...and says READY=1 only once the listener gets through.
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(listen_role)))
        ready = notify.wait_for("READY", "1", timeout=15)
        assert listen_backends(conn), "READY=1 before the listener was LISTENing"
        assert ready["STATUS"] == "idle; 1 done"
    finally:
        worker.stop(timeout=30)


def test_an_invalid_listen_url_is_a_one_line_configuration_error(processes: Processes) -> None:
    # Refused before any connection is made: the main URL need not even exist.
    main_url = url_for("soleil_t_never_created")
    expected = [
        'error: invalid database URL \'host=db port\': missing "=" after "port" in connection info string'
    ]
    as_option = processes.run(
        "work", "default", "--listen-database-url", "host=db port", database_url=main_url
    )
    from_env = processes.run(
        "work-instance",
        "default-1",
        database_url=main_url,
        env={"SOLEIL_LISTEN_DATABASE_URL": "host=db port"},
    )
    for result in (as_option, from_env):
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == expected
