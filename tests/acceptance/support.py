"""Helpers for the acceptance tier: `soleil-runner` runs as a subprocess, and the
tests read what an operator would see (exit codes, stdout, stderr, log lines)
and what the database holds."""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

APPS = "tests.apps.basic,tests.apps.cli"
# `work` options that keep a test's worker quick to notice jobs and to stop.
FAST = ["--sleep", "0.2", "--heartbeat", "0.5"]


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process; fails on any line that is not JSON."""
    events = []
    for line in stderr.splitlines():
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON log line: {line!r}") from None
    return events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Exactly one `error: ...` line on stderr, nothing on stdout, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


def free_port() -> int:
    """A TCP port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_exit(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    """The exit code of a process, waiting for it with a deadline."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"process {proc.args!r} still running after {timeout} s") from None


__all__ = ["APPS", "assert_one_line_error", "free_port", "log_events", "named", "wait_exit"]
