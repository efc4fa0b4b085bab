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
from soleil.runner.events import Event, EventContext, Events, Listener
from soleil.runner.job import Job, JobContext
from soleil.runner.queries import Query, sql_root
from soleil.runner.queries import parse as parse_queries
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
    "Job",
    "JobContext",
    "JobTimeout",
    "Listener",
    "PayloadTooLarge",
    "PermanentFailure",
    "Query",
    "Runner",
    "SchemaNotReady",
    "SoleilError",
    "UnknownJob",
    "Worker",
    "WorkerLost",
    "WorkerOptions",
    "parse_queries",
    "sql_root",
]
