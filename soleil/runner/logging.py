"""structlog set-up: key-value events (`job.completed` with job id, queue,
attempt and duration), rendered for people on a terminal and as JSON lines
elsewhere (journald, files, log shippers)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from soleil.runner.db import redact

LogFormat = Literal["auto", "console", "json"]
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for a Soleil process. Logs go to stderr; command output to stdout."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(LEVELS[level])


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Defence in depth: Soleil logs `db.describe(url)`, never a URL, but a library's
    message or a traceback may quote one; no log line carries a database password."""
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "assword" in value or "ASSWORD" in value):
            event[key] = redact(value)
    return event


class _ToStructlog(logging.Handler):
    """Sends the records of libraries that use `logging` (psycopg, psycopg_pool)
    through structlog, so a JSON log stays all JSON. The event is the logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not kill the worker
            message = str(record.msg)
        structlog.get_logger("soleil.lib").log(record.levelno, record.name, message=message)


def _route_stdlib_logging(level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(level)
    # The pool warns about every failed connection attempt; Soleil logs its own
    # `database.unavailable` events for the same outages (and a command that cannot
    # connect prints one error line), so the pool's warnings only show at debug level.
    logging.getLogger("psycopg.pool").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.ERROR)
