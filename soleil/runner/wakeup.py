"""When an idle worker looks for work again: a notification of a job due now,
the due time of the next delayed job, or the poll interval (the fallback for a
lost notification). The listener thread writes here; the main loop reads."""

from __future__ import annotations

import threading
import time

# A notification due this close to now is claimed at once: the database clock is
# only known to within the look-up's round trip, and a busy host stretches that to
# milliseconds. Claiming a job that is not quite due yet just finds nothing.
DUE_SLACK_SECONDS = 0.025
# How fast two clocks may drift apart, at most: NTP slews a clock by up to 500 µs a second.
CLOCK_DRIFT = 500e-6


class Wakeup:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.work_ready = True  # look before sleeping: jobs may be waiting at start
        self.next_due: float | None = None  # local wall-clock time of the next delayed job
        self.clock_offset = 0.0  # database clock - local clock
        self._offset_bound: float | None = None  # how far clock_offset was off, at most, when learned
        self._offset_learned = 0.0  # when it was learned (local time)

    def work_waiting(self) -> None:
        """Jobs may be ready now (a reconnect, a resume, a rescue): claim before sleeping."""
        self.work_ready = True
        self.event.set()

    def ring(self) -> None:
        """Wake the main loop to re-check its state (a stop, a control message)."""
        self.event.set()

    def job_notified(self, payload: str, *, claim_here: bool = False) -> bool:
        """A job was dispatched; the payload is its due time in the database's clock
        (see notified_job). Returns whether it is due now. With claim_here the
        caller claims at once itself, so a job due now does not also wake the main
        loop to claim."""
        try:
            due = float(payload.partition(":")[0]) - self.clock_offset
        except ValueError:
            due = 0.0
        if due <= time.time() + DUE_SLACK_SECONDS:
            if not claim_here:
                self.work_waiting()
            return True
        if self.next_due is None or due < self.next_due:
            self.next_due = due
            self.event.set()
        return False

    def learn_next_due(self, due_epoch: float | None, db_now: float, sent: float) -> None:
        """The next-due look-up's answer, `sent` being the local time it was sent."""
        self._learn_clock(db_now, sent, time.time())
        previous, self.next_due = self.next_due, None if due_epoch is None else due_epoch - self.clock_offset
        if self.next_due is not None and (previous is None or self.next_due < previous):
            # Learned on the listener's thread, the main loop sleeps on the time it
            # knew: a job due sooner (announced a little early, then not yet found)
            # would wait for its next tick.
            self.event.set()

    def _learn_clock(self, db_now: float, sent: float, received: float) -> None:
        """The database read its clock between sending and receiving, so a look-up
        gives the offset to within half its round trip. A slow one (a stalled VM, a
        busy server) does not replace a closer estimate that it agrees with: a reply
        300 ms late would put the offset 150 ms off, every job due now would look
        150 ms ahead, and the idle worker would wait that long for each. An estimate
        grows less certain as it ages (either clock may be slewed), so a steadily
        slow link still replaces it within seconds."""
        bound = max(received - sent, 0.0) / 2
        sample = db_now - (sent + received) / 2
        if (
            self._offset_bound is None
            or bound <= self._offset_bound + max(received - self._offset_learned, 0.0) * CLOCK_DRIFT
            or abs(sample - self.clock_offset) > bound  # the clock itself moved
        ):
            self.clock_offset, self._offset_bound, self._offset_learned = sample, bound, received

    def due_in(self) -> float | None:
        return None if self.next_due is None else self.next_due - time.time()

    def wait(self, timeout: float) -> None:
        if self.event.wait(timeout):
            self.event.clear()


def notified_job(payload: str) -> int | None:
    """The job a notification names: its payload is "<due time>:<job id>" for a job
    dispatched in a transaction of its own, the bare due time otherwise. Anyone who
    may connect may NOTIFY: anything but a plain bigint names no job."""
    _, _, job_id = payload.partition(":")
    if not (0 < len(job_id) <= _BIGINT_DIGITS and job_id.isascii() and job_id.isdigit()):
        return None
    number = int(job_id)
    return number if number <= _BIGINT_MAX else None


_BIGINT_MAX = 2**63 - 1
_BIGINT_DIGITS = len(str(_BIGINT_MAX))
