"""Jobs: a pydantic model whose fields are the payload, class options that say how
it runs, and the registry that finds a class again from its name."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from soleil.runner import backoff as backoff_rules
from soleil.runner.errors import ConfigurationError, InvalidPayload, UnknownJob
from soleil.runner.names import validate_job_name, validate_queue

if TYPE_CHECKING:
    import psycopg

    from soleil.runner.runner import Runner


@dataclass(slots=True)
class JobContext:
    """What a running job knows about its run."""

    job_id: int
    queue: str
    name: str
    attempt: int
    max_attempts: int
    runner: Runner
    # Set for transactional jobs (and in the failed() hook): the open transaction
    # that also deletes the job row. Commit and rollback belong to Soleil.
    connection: psycopg.Connection[Any] | None = None
    log: Any = field(default_factory=structlog.get_logger)

    def dispatch(self, job: Job, **options: Any) -> int | None:
        """Dispatch another job; inside the job's transaction when it has one."""
        options.setdefault("connection", self.connection)
        return self.runner.dispatch(job, **options)


class Job(BaseModel):
    """Base class of every job. Fields are the payload; ClassVars are the options."""

    model_config = ConfigDict(validate_assignment=True, frozen=False)

    # The registered name; defaults to "module:Class". Set it to keep a moved class working.
    name: ClassVar[str] = ""
    queue: ClassVar[str] = "default"
    # Total attempts; None: the worker's --tries.
    tries: ClassVar[int | None] = None
    # Seconds, a list indexed by attempt (last repeats) or "exponential"; None: the worker's.
    backoff: ClassVar[backoff_rules.BackoffSpec | None] = None
    # Seconds one attempt may run; None: the worker's --timeout.
    timeout: ClassVar[float | None] = None
    # True: handle() runs in a transaction (ctx.connection) that also deletes the job row.
    transactional: ClassVar[bool] = False
    # False: never shares its transaction with other jobs, even on a worker with a
    # transaction_group (for handlers that rely on SET LOCAL, now() or other
    # transaction-local state).
    share_transaction: ClassVar[bool] = True

    def handle(self, ctx: JobContext) -> None:
        raise NotImplementedError(f"{type(self).__name__}.handle() is not implemented")

    def failed(self, ctx: JobContext, exc: BaseException) -> None:
        """Runs once, after the last try, in the transaction that moves the job to
        failed_jobs, once its row is locked for this attempt (see docs/guarantees.md)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"
        _check_options(cls)
        if cls.handle is not Job.handle:
            REGISTRY.register(cls)


def _check_options(cls: type[Job]) -> None:
    where = f"job class {cls.__module__}.{cls.__qualname__}"
    try:
        validate_job_name(cls.name)
        validate_queue(cls.queue)
        if cls.backoff is not None:
            backoff_rules.validate(cls.backoff)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if cls.tries is not None and (not isinstance(cls.tries, int) or cls.tries < 1):
        raise ConfigurationError(f"{where}: tries must be an integer >= 1, got {cls.tries!r}")
    if cls.timeout is not None and not cls.timeout > 0:
        raise ConfigurationError(f"{where}: timeout must be > 0 seconds, got {cls.timeout!r}")


class Registry:
    """Job classes by registered name. Classes register when they are defined."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Job]] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[Job]) -> None:
        with self._lock:
            existing = self._classes.get(cls.name)
            same_class = existing is not None and (
                (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
            )
            if existing is not None and not same_class:
                raise ConfigurationError(
                    f"job name {cls.name!r} is used by both {existing.__module__}."
                    f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}"
                )
            self._classes[cls.name] = cls

    def lookup(self, name: str) -> type[Job]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownJob(name) from None

    def names(self) -> list[str]:
        return sorted(self._classes)


REGISTRY = Registry()


def load_payload(cls: type[Job], payload_json: str | bytes) -> Job:
    """The job instance a worker runs, or InvalidPayload with pydantic's message."""
    try:
        return cls.model_validate_json(payload_json)
    except ValidationError as exc:
        raise InvalidPayload(cls.name, _one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '<payload>'}: {error['msg']}"
        for error in exc.errors()
    )
