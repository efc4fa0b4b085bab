"""Soleil's exceptions. Each class's docstring is its default message; data travels
as attributes so callers never parse messages."""

from __future__ import annotations


class SoleilError(Exception):
    """Soleil failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(SoleilError):
    """Soleil is not configured correctly."""


class DatabaseUnavailable(SoleilError):
    """The database cannot be reached."""


class SchemaNotReady(SoleilError):
    """The database has no (or an outdated) Soleil schema: run `soleil-runner migrate`."""


class NotFound(SoleilError, LookupError):
    """What was asked for does not exist (the CLI exits 1)."""

    exit_code = 1


class FailedJobNotFound(NotFound):
    """No failed job has this uuid."""

    def __init__(self, uuids: list[str]) -> None:
        self.uuids = uuids
        noun = "failed job" if len(uuids) == 1 else "failed jobs"
        super().__init__(f"no {noun} with uuid {', '.join(uuids)}")


class InvalidName(SoleilError, ValueError):
    """A queue or job name is not valid."""


class UnknownJob(SoleilError, LookupError):
    """No job class is registered under this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown job {name!r}: no job class is registered under this name "
            "(is its module imported by the worker's --app?)"
        )


class InvalidSchedule(SoleilError, ValueError):
    """A dispatch's priority or delay is outside what the jobs table holds."""


class InvalidPayload(SoleilError, ValueError):
    """A job's payload does not validate against its class."""

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"invalid payload for job {name!r}: {detail}")


class PayloadTooLarge(SoleilError, ValueError):
    """A job's payload is larger than the configured limit."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.name, self.size, self.limit = name, size, limit
        super().__init__(f"payload of job {name!r} is {size} bytes, above the limit of {limit} bytes")


class PermanentFailure(Exception):
    """Raised by a job to fail at once: the remaining tries are skipped."""


class JobTimeout(Exception):
    """The attempt ran past its job's timeout."""


class WorkerLost(Exception):
    """The worker running the job stopped heartbeating and no tries are left."""


class LeaseLost(SoleilError):
    """This worker no longer holds the job (it was rescued while this worker was silent)."""
