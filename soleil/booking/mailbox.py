"""A local SMTP server that keeps what it receives (aiosmtpd, in a thread).

The demo starts one when no SMTP server is configured, so its failure
notifications travel through real SMTP; the tests read the messages from it.
aiosmtpd is a development dependency: imported only when a mailbox starts.
"""

from __future__ import annotations

import email
import socket
import threading
from email.message import Message
from typing import Any


class LocalMailbox:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    def __enter__(self) -> LocalMailbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalMailbox:
        from aiosmtpd.controller import Controller

        self.port = _free_port(self.host)
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def env(self) -> dict[str, str]:
        """The SOLEIL_SMTP_* settings that point at this mailbox."""
        return {"SOLEIL_SMTP_HOST": self.host, "SOLEIL_SMTP_PORT": str(self.port)}

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # the name aiosmtpd calls
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        with self._lock:
            self._messages.append(message)
        return "250 Message accepted for delivery"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
