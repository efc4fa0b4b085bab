"""A worker's settings, validated once, naming the field that is wrong."""

from __future__ import annotations

from dataclasses import dataclass

from soleil.runner import backoff as backoff_rules
from soleil.runner import db
from soleil.runner.errors import ConfigurationError

# A group holds the rows of its jobs locked until it commits, and a job that
# fails sends the jobs that ran before it in its group to run again: bounded.
MAX_TRANSACTION_GROUP = 64


@dataclass
class WorkerOptions:
    """A worker's settings; the names follow `soleil-runner work`'s options."""

    concurrency: int = 1
    sleep: float = 3.0  # seconds between polls when no notification arrives
    tries: int = 1  # default for jobs that do not set `tries`
    backoff: backoff_rules.BackoffSpec = 0  # default for jobs that do not set `backoff`
    timeout: float = 60.0  # default seconds per attempt for jobs that do not set `timeout`
    max_jobs: int | None = None
    max_time: float | None = None  # seconds
    memory_mb: int | None = None
    stop_when_empty: bool = False
    heartbeat_interval: float = 10.0  # a silent worker loses its jobs after two intervals
    timeout_grace: float = 5.0  # seconds a job may take to stop after its timeout
    stop_grace: float = 60.0  # seconds running jobs may take to finish after SIGTERM
    completion_interval: float = 0.05
    completion_batch: int = 500
    # Jobs claimed ahead of the free executors (0: claim only for idle ones). More
    # jobs per claim; those not started when the worker stops are released without
    # using an attempt, but a killed worker (SIGKILL) has used one for each of them.
    prefetch: int = 0
    # Transactional jobs that may share one transaction and its COMMIT, when they
    # are already waiting in the worker's inbox: fewer WAL flushes and round trips;
    # a job's writes and row locks then wait for its group's COMMIT. Jobs join a
    # group after its first job has run, while that job returned less than
    # completion_interval ago (docs/guarantees.md, "Transaction groups").
    transaction_group: int = 1
    # A direct connection for LISTEN when the main URL goes through PgBouncer in
    # transaction mode (LISTEN needs a session); default: the runner's URL.
    listen_database_url: str | None = None

    def validated(self) -> WorkerOptions:
        checks: dict[str, bool] = {
            "concurrency": _integer(self.concurrency, 1, MAX_CONCURRENCY),
            "sleep": _positive(self.sleep),
            "tries": _integer(self.tries, 1),
            "timeout": _positive(self.timeout),
            "max_jobs": self.max_jobs is None or _integer(self.max_jobs, 1),
            "max_time": self.max_time is None or _positive(self.max_time),
            "memory_mb": self.memory_mb is None or _integer(self.memory_mb, 1),
            "stop_when_empty": isinstance(self.stop_when_empty, bool),
            "heartbeat_interval": _positive(self.heartbeat_interval),
            "timeout_grace": _seconds(self.timeout_grace),
            "stop_grace": _seconds(self.stop_grace),
            "completion_interval": _positive(self.completion_interval),
            "completion_batch": _integer(self.completion_batch, 1, MAX_BATCH),
            "prefetch": _integer(self.prefetch, 0, MAX_BATCH),
            "transaction_group": _integer(self.transaction_group, 1)
            and self.transaction_group <= MAX_TRANSACTION_GROUP,
        }
        for field, ok in checks.items():
            if not ok:
                raise ConfigurationError(f"invalid worker option {field}={getattr(self, field)!r}")
        try:
            backoff_rules.validate(self.backoff)
        except ValueError as exc:
            raise ConfigurationError(f"invalid worker option backoff: {exc}") from None
        if self.listen_database_url:
            db.resolve_url(self.listen_database_url)
        return self

    @property
    def lease_seconds(self) -> float:
        return 2 * self.heartbeat_interval


# Upper bounds that keep values where threads, PostgreSQL's integers and intervals,
# and Python's waits can follow: past them a worker failed later, less clearly.
MAX_CONCURRENCY = 1_000  # an executor thread and a pooled connection each
MAX_BATCH = 100_000
INT4_MAX = 2**31 - 1
MAX_SECONDS = 366 * 24 * 3600.0


# bool is an int to Python; True as a concurrency or a timeout is a mistake, not 1.
def _integer(value: object, minimum: int, maximum: int = INT4_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def _seconds(value: object) -> bool:
    """A duration from 0 to a year (NaN and infinity are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_SECONDS


def _positive(value: object) -> bool:
    return _seconds(value) and value > 0  # type: ignore[operator]
