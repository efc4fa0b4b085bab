"""systemd's notify protocol (sd_notify) without libsystemd: datagrams to
$NOTIFY_SOCKET, a path or an abstract socket ('@' prefix). A no-op when the
variable is unset, so the same worker runs under systemd, in a shell or in tests."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None, watchdog_usec: str | None = None) -> None:
        self._address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        # systemd asks for a ping at least every WatchdogSec; pinging at half of it
        # leaves room for one late loop iteration.
        self.watchdog_interval: float | None = None
        if address and watchdog_usec and watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            self.watchdog_interval = int(watchdog_usec) / 1_000_000 / 2

    @classmethod
    def from_env(cls) -> Notifier:
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        watchdog = os.environ.get("WATCHDOG_USEC")
        if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
            watchdog = None  # the watchdog is meant for another process
        return cls(os.environ.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        if self._socket is None or not self._address:
            return False
        address = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            self._socket.sendto("\n".join(lines).encode(), address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"MAINPID={os.getpid()}", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
