"""Soleil's runner: PostgreSQL-backed background jobs for Python.

The public API is what this module exports; everything else is private.
"""

from soleil.runner.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidName,
    InvalidPayload,
    JobTimeout,
    PayloadTooLarge,
    PermanentFailure,
    SchemaNotReady,
    SoleilError,
    UnknownJob,
    WorkerLost,
)
from soleil.runner.job import Job, JobContext
from soleil.runner.runner import Runner
from soleil.runner.worker import Worker, WorkerOptions

__all__ = [
    # errors
    "ConfigurationError",
    "DatabaseUnavailable",
    "InvalidName",
    "InvalidPayload",
    # jobs and dispatch
    "Job",
    "JobContext",
    "JobTimeout",
    "PayloadTooLarge",
    "PermanentFailure",
    "Runner",
    "SchemaNotReady",
    "SoleilError",
    "UnknownJob",
    # workers
    "Worker",
    "WorkerLost",
    "WorkerOptions",
]
