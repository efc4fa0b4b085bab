"""Soleil's runner: PostgreSQL-backed background jobs for Python.

The public API is what this module exports; everything else is private.
"""

from soleil.runner.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidName,
    InvalidPayload,
    InvalidSchedule,
    JobTimeout,
    PayloadTooLarge,
    PermanentFailure,
    SchemaNotReady,
    SoleilError,
    UnknownJob,
    WorkerLost,
)
from soleil.runner.events import Event, EventContext, Events, Listener
from soleil.runner.job import Job, JobContext
from soleil.runner.migrate import apply_migrations
from soleil.runner.queries import SqlStatements, sql_root
from soleil.runner.runner import Runner
from soleil.runner.worker import Worker, WorkerOptions

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "Event",
    "EventContext",
    "Events",
    "InvalidName",
    "InvalidPayload",
    "InvalidSchedule",
    "Job",
    "JobContext",
    "JobTimeout",
    "Listener",
    "PayloadTooLarge",
    "PermanentFailure",
    "Runner",
    "SchemaNotReady",
    "SoleilError",
    "SqlStatements",
    "UnknownJob",
    "Worker",
    "WorkerLost",
    "WorkerOptions",
    "apply_migrations",
    "sql_root",
]
