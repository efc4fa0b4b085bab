"""The sd_notify client against real unix datagram sockets, as systemd binds them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soleil.runner.sdnotify import Notifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5.0)
        yield address, sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"soleil-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        yield "@" + name, sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("idle")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    notifier.close()


def test_path_socket_receives_ready_with_main_pid_and_status(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = Notifier(address)
    assert notifier.ready("idle; 0 done")
    assert received(sock) == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=idle; 0 done"]
    assert notifier.status("running 1 of 4 jobs")
    assert received(sock) == ["STATUS=running 1 of 4 jobs"]
    notifier.close()
    assert not notifier.status("closed")


def test_abstract_socket_receives_watchdog_and_stopping(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    notifier = Notifier(address, watchdog_usec="3000000")
    assert notifier.watchdog_interval == 1.5  # half of WatchdogSec
    assert notifier.watchdog()
    assert received(sock) == ["WATCHDOG=1"]
    assert notifier.stopping("draining: 2 running")
    assert received(sock) == ["STOPPING=1", "STATUS=draining: 2 running"]
    notifier.close()


def test_watchdog_meant_for_another_process_is_ignored(
    monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[str, socket.socket]
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_socket[0])
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_env().watchdog_interval is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval == 0.5
    monkeypatch.delenv("WATCHDOG_PID")
    assert Notifier.from_env().watchdog_interval == 0.5


@pytest.mark.parametrize("usec", ["", "0", "-5", "1.5", "soon"])
def test_a_missing_or_invalid_watchdog_usec_means_no_watchdog(usec: str) -> None:
    assert Notifier("@soleil-test", watchdog_usec=usec).watchdog_interval is None


def test_a_socket_nobody_listens_on_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"), watchdog_usec="1000000")
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    notifier.close()
