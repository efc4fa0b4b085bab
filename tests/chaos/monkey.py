"""The chaos monkey of the kill -9 tests: SIGKILL a random worker every 1-2 s and
start a replacement, until the queue is empty."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Monkey:
    spawn: Callable[[], subprocess.Popen[str]]
    workers: list[subprocess.Popen[str]]
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    killed_pids: set[int] = field(default_factory=set)

    def run_until(self, done: Callable[[], bool], timeout: float) -> float:
        """Kill and replace workers until `done()`; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"the queue did not drain within {timeout} s of chaos")
            # The cadence of the faults, returning early once the work is done.
            next_kill = time.monotonic() + self.rng.uniform(1.0, 2.0)
            while time.monotonic() < next_kill and not done():
                time.sleep(0.05)
            if not done():
                self.kill_one()
        return time.monotonic() - started

    def kill_one(self) -> None:
        victim = self.rng.choice(self.workers)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.killed_pids.add(victim.pid)
        self.workers[self.workers.index(victim)] = self.spawn()

    def alive(self) -> list[subprocess.Popen[str]]:
        return [w for w in self.workers if w.poll() is None]
