"""The limits after which a worker exits on its own, as Laravel's --max-jobs,
--max-time and --memory: systemd (Restart=always) starts a fresh process."""

from __future__ import annotations

import resource

import structlog

from soleil.runner.options import WorkerOptions

log = structlog.get_logger("soleil.worker")

EXIT_MEMORY = 12  # as Laravel's worker


def reached(options: WorkerOptions, processed: int, running_seconds: float) -> tuple[str, int | None] | None:
    """(reason, exit code or None for the default) once a limit is reached."""
    if options.max_jobs is not None and processed >= options.max_jobs:
        return "max jobs reached", None
    if options.max_time is not None and running_seconds >= options.max_time:
        return "max time reached", None
    if options.memory_mb is not None:
        rss = rss_mb()
        if rss >= options.memory_mb:
            log.warning("worker.memory_exceeded", rss_mb=round(rss, 1), limit_mb=options.memory_mb)
            return "memory limit exceeded", EXIT_MEMORY
    return None


def rss_mb() -> float:
    """The process's resident memory now (peak memory where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
