"""Who may declare a worker dead: every worker is judged by its own lease, and
not while the database may have been out of everyone's reach (a server up for
less than that lease, or a rescuer not yet back in unbroken contact for it)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from soleil.runner import Job, JobContext, Runner, Worker, WorkerOptions, control, lease
from tests.apps.basic import Record, record
from tests.conftest import FAST
from tests.helpers import count_failed, count_jobs, scalar, wait_for

RELEASED = threading.Event()


class Held(Job):
    """Records its start, runs until the test releases it, records its end."""

    name = "tests.held_by_lease_test"
    tries = 3  # a job taken from its live worker would visibly run again

    def handle(self, ctx: JobContext) -> None:
        record(ctx, "start")
        RELEASED.wait(60)
        record(ctx, "end")


@pytest.fixture(autouse=True)
def released_at_the_end() -> Iterator[None]:
    RELEASED.clear()
    try:
        yield
    finally:
        RELEASED.set()  # no held job outlives its test, whatever failed


def runs(conn: psycopg.Connection[Any]) -> list[tuple[int, int, str]]:
    return [
        (r[0], r[1], r[2]) for r in conn.execute("SELECT job_id, attempt, tag FROM public.runs ORDER BY id")
    ]


def silent_worker(conn: psycopg.Connection[Any], *, lease_seconds: float, silent_for: float) -> int:
    return int(
        scalar(
            conn,
            "INSERT INTO soleil.workers (host, pid, queues, concurrency, lease_seconds, heartbeat_at)"
            " VALUES ('silent-host', 999999, '{default}', 1, %s, now() - make_interval(secs => %s))"
            " RETURNING id",
            (lease_seconds, silent_for),
        )
    )


def hold(conn: psycopg.Connection[Any], job_id: int | None, worker_id: int) -> None:
    conn.execute(
        "UPDATE soleil.jobs SET reserved_by = %s, reserved_at = now(), attempts = 1, max_attempts = 3,"
        " available_at = now() WHERE id = %s",
        (worker_id, job_id),
    )


def workers_left(conn: psycopg.Connection[Any]) -> set[int]:
    return {int(row[0]) for row in conn.execute("SELECT id FROM soleil.workers")}


def test_each_worker_is_judged_by_its_own_lease(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    short = silent_worker(conn, lease_seconds=1.0, silent_for=5.0)
    long = silent_worker(conn, lease_seconds=60.0, silent_for=5.0)
    short_job, long_job = runner.dispatch_many([Record(tag="short"), Record(tag="long")])
    hold(conn, short_job, short)
    hold(conn, long_job, long)
    assert lease.rescue(conn, healthy_seconds=3600.0) == 1
    assert workers_left(conn) == {long}
    held = dict(conn.execute("SELECT id, reserved_by FROM soleil.jobs").fetchall())
    assert held == {short_job: None, long_job: long}


def test_a_heartbeat_after_removal_registers_the_worker_again_with_its_lease(
    conn: psycopg.Connection[Any],
) -> None:
    worker_id = lease.register(conn, ["default"], 2, lease_seconds=7.5)
    conn.execute("DELETE FROM soleil.workers WHERE id = %s", (worker_id,))
    assert not lease.heartbeat(conn, worker_id, ["default"], 2, 0, lease_seconds=7.5), "lease lost"
    assert scalar(conn, "SELECT lease_seconds FROM soleil.workers WHERE id = %s", (worker_id,)) == 7.5
    assert lease.heartbeat(conn, worker_id, ["default"], 2, 0, lease_seconds=9.0)
    assert scalar(conn, "SELECT lease_seconds FROM soleil.workers WHERE id = %s", (worker_id,)) == 9.0


def test_a_worker_with_a_shorter_heartbeat_leaves_a_slower_workers_job_alone(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    slow = start_worker(heartbeat_interval=1.0, tries=3)  # lease 2 s
    job_id = runner.dispatch(Held())
    wait_for(lambda: runs(conn), what="the slow worker to start the job")
    quick = start_worker(heartbeat_interval=0.1, tries=3)  # lease 0.2 s, rescues every 0.1 s
    # Long enough for the quick worker to judge the slow one by the slow one's
    # lease: it has heartbeated without a break for more than 2 s since it started.
    wait_for(
        lambda: scalar(
            conn,
            "SELECT heartbeat_at - started_at > interval '2.5 s' FROM soleil.workers WHERE id = %s",
            (quick.id,),
        ),
        what="the quick worker to have rescued for a while",
    )
    RELEASED.set()
    wait_for(lambda: count_jobs(conn) == 0, what="the job to finish")
    assert runs(conn) == [(job_id, 1, "start"), (job_id, 1, "end")]
    assert quick.processed == 0
    assert workers_left(conn) == {slow.id, quick.id}


def test_a_worker_just_started_removes_nobody_before_it_has_heartbeated_for_their_lease(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    # Silent for 10 minutes, as if SIGKILLed; or cut off from a database that
    # the new worker reaches first as it comes back: the new worker cannot tell.
    silent = silent_worker(conn, lease_seconds=2.0, silent_for=600.0)
    job_id = runner.dispatch(Record(tag="orphan"), delay=3600)
    hold(conn, job_id, silent)
    rescuer = start_worker(heartbeat_interval=0.2, tries=3)
    ran_at = wait_for(
        lambda: scalar(conn, "SELECT at FROM public.runs WHERE job_id = %s", (job_id,)),
        what="the silent worker's job to be rescued and run",
    )
    started_at = scalar(conn, "SELECT started_at FROM soleil.workers WHERE id = %s", (rescuer.id,))
    waited = (ran_at - started_at).total_seconds()  # both in the database's clock
    assert waited >= 2.0, (
        f"rescued {waited:.2f} s after the rescuer started, before the silent worker's lease"
    )
    # Soon after (a rescue every 0.2 s), with room for a loaded machine.
    assert waited < 2.0 + 5.0, f"rescued only {waited:.2f} s after the rescuer started"
    assert silent not in workers_left(conn)


def test_nobody_is_removed_while_the_server_has_been_up_for_less_than_their_lease(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    # A lease longer than the server's uptime: the worker may have been silent
    # only because the server was down (a restart the rescuer did not notice).
    uptime = float(scalar(conn, "SELECT extract(epoch FROM now() - pg_postmaster_start_time())"))
    beyond_uptime = silent_worker(conn, lease_seconds=uptime + 60, silent_for=uptime + 120)
    short = silent_worker(conn, lease_seconds=1.0, silent_for=5.0)
    kept_job, rescued_job = runner.dispatch_many([Record(tag="kept"), Record(tag="rescued")])
    hold(conn, kept_job, beyond_uptime)
    hold(conn, rescued_job, short)
    assert lease.rescue(conn, healthy_seconds=10 * (uptime + 120)) == 1
    assert workers_left(conn) == {beyond_uptime}
    assert scalar(conn, "SELECT reserved_by FROM soleil.jobs WHERE id = %s", (kept_job,)) == beyond_uptime


class CuttableProxy:
    """A TCP proxy in front of PostgreSQL. cut() drops every connection through it
    and refuses new ones until restore(): a database outage as workers see it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                if not self.up:
                    raise ConnectionRefusedError
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            cut, self.sockets = self.sockets, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_live_workers_keep_their_jobs_through_an_outage_longer_than_their_lease(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    params = conninfo.conninfo_to_dict(database_url)
    host, port = str(params.get("host") or "127.0.0.1"), int(str(params.get("port") or 5432))
    # The first worker reaches the database again before the two others do.
    first_back, others = CuttableProxy(host, port), CuttableProxy(host, port)
    # A lease of 4 s: longer than a worker's housekeeping may take to get a
    # heartbeat through once the database is back (its waits on the pool).
    fast: dict[str, Any] = {**FAST, "heartbeat_interval": 2.0, "tries": 3}
    options = WorkerOptions(**fast)
    workers: list[Worker] = []
    try:
        with (
            Runner(conninfo.make_conninfo(database_url, host="127.0.0.1", port=first_back.port)) as first,
            Runner(conninfo.make_conninfo(database_url, host="127.0.0.1", port=others.port)) as second,
        ):
            rescuer = first.worker("default", options).start()
            workers += [
                rescuer,
                second.worker("default", options).start(),
                second.worker("default", options).start(),
            ]
            job_ids = first.dispatch_many([Held(), Held(), Held()])
            wait_for(lambda: len(runs(conn)) == 3, what="each worker to start a job")
            first_back.cut()
            others.cut()
            wait_for(
                lambda: scalar(
                    conn,
                    "SELECT bool_and(heartbeat_at < now() - make_interval(secs => %s)) FROM soleil.workers",
                    (options.lease_seconds + 0.5,),
                ),
                what="every worker's lease to run out during the outage",
            )
            restored_at = scalar(conn, "SELECT now()")
            first_back.restore()
            wait_for(
                lambda: scalar(
                    conn,
                    "SELECT heartbeat_at > %s FROM soleil.workers WHERE id = %s",
                    (restored_at, rescuer.id),
                ),
                what="the first worker to heartbeat again",
            )
            others.restore()
            # Every worker has been back for longer than a lease (so every rescuer
            # has had its chance to remove the others) before the jobs end.
            wait_for(
                lambda: scalar(
                    conn,
                    "SELECT count(*) FILTER (WHERE heartbeat_at > %s + make_interval(secs => %s)) = 3"
                    " FROM soleil.workers",
                    (restored_at, options.lease_seconds + options.heartbeat_interval),
                ),
                timeout=30,
                what="every worker to heartbeat for a while after the outage",
            )
            RELEASED.set()
            wait_for(lambda: count_jobs(conn) == 0, timeout=20, what="the jobs to finish")
    finally:
        RELEASED.set()
        for worker in workers:
            worker.stop(timeout=30)
        first_back.close()
        others.close()
    assert sorted(runs(conn)) == sorted([(j, 1, tag) for j in job_ids for tag in ("start", "end")])
    assert count_failed(conn) == 0


def test_a_worker_of_older_code_without_a_lease_of_its_own_is_judged_by_the_rescuers(
    conn: psycopg.Connection[Any],
) -> None:
    # Written the way workers did before migration 0006: no lease_seconds. A
    # default would judge a fleet running --heartbeat 30 (a 60 s lease) by 20 s.
    old = int(
        scalar(
            conn,
            "INSERT INTO soleil.workers (host, pid, queues, concurrency, heartbeat_at)"
            " VALUES ('old-code', 999998, '{default}', 1, now() - interval '25 seconds') RETURNING id",
        )
    )
    lease.rescue(conn, healthy_seconds=3600.0, own_lease=60.0)
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (old,)) == 1
    lease.rescue(conn, healthy_seconds=3600.0, own_lease=20.0)
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (old,)) == 0


def test_a_rescuer_that_lost_the_database_between_its_heartbeats_removes_nobody_yet(
    conn: psycopg.Connection[Any], start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its heartbeats all went through, but its control reads (one a second) did
    # not: an outage shorter than a heartbeat interval, which a worker with a
    # longer lease than this one's interval may not have recovered from yet.
    silent = silent_worker(conn, lease_seconds=1.5, silent_for=3600)
    worker = start_worker(heartbeat_interval=0.3)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("connection refused (simulated)")

    monkeypatch.setattr(control, "read_state", unreachable)
    first = scalar(conn, "SELECT heartbeat_at FROM soleil.workers WHERE id = %s", (worker.id,))
    wait_for(
        lambda: scalar(
            conn,
            "SELECT heartbeat_at > %s + interval '3 s' FROM soleil.workers WHERE id = %s",
            (first, worker.id),
        ),
        what="three seconds of the rescuer's heartbeats",
    )
    assert scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (silent,)) == 1
    monkeypatch.undo()
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM soleil.workers WHERE id = %s", (silent,)) == 0,
        what="the silent worker's removal once contact is unbroken for its lease",
    )
