"""`soleil-runner status [--json] [--watch]`: queues and workers at a glance."""

from __future__ import annotations

import sys
import time

import click

from soleil.runner import status as queue_status
from soleil.runner.cli.common import Context, Seconds, pass_context
from soleil.runner.cli.output import echo_json, seconds, table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def render(snapshot: queue_status.Status) -> str:
    lines = [f"Database: {snapshot.database}", ""]
    if snapshot.queues:
        rows = [
            (
                q.queue, q.ready, q.delayed, q.reserved, q.failed, seconds(q.oldest_ready_age_s),
                f"{q.completed_1m}/{q.failed_1m}", f"{q.completed_1h}/{q.failed_1h}",
                _ms(q.avg_runtime_ms), _ms(q.avg_wait_ms), q.paused,
            )
            for q in snapshot.queues
        ]  # fmt: skip
        headers = ["QUEUE", "READY", "DELAYED", "RESERVED", "FAILED", "OLDEST READY",
                   "DONE/FAILED 1M", "DONE/FAILED 1H", "AVG RUNTIME", "AVG WAIT", "PAUSED"]  # fmt: skip
        lines.append(table(headers, rows))
    else:
        lines.append("No queues.")
    lines.append("")
    if snapshot.workers:
        worker_rows = [
            (w.id, w.host, w.pid, w.queues, f"{w.running}/{w.concurrency}",
             f"{seconds(w.heartbeat_age_s)} ago", "-" if w.lease_s is None else seconds(w.lease_s),
             w.paused or "no")
            for w in snapshot.workers
        ]  # fmt: skip
        lines.append(
            table(["WORKER", "HOST", "PID", "QUEUES", "RUNNING", "HEARTBEAT", "LEASE", "PAUSED"], worker_rows)
        )
    else:
        lines.append("No workers.")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per refresh with --watch).")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option(
    "--interval",
    type=Seconds(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@pass_context
def status(ctx: Context, as_json: bool, watch: bool, interval: float) -> None:
    """Per queue: ready, delayed, reserved and failed jobs, the oldest ready job's age,
    jobs done and failed in the last minute and hour, average runtime and wait.
    Then the workers."""
    runner = ctx.migrated_runner()
    try:
        while True:
            snapshot = queue_status.snapshot(runner)
            if as_json:
                echo_json(snapshot.as_dict())
            else:
                if watch and sys.stdout.isatty():
                    click.clear()
                click.echo(render(snapshot))
            if not watch:
                return
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return  # Ctrl-C ends --watch: a normal exit


COMMANDS = [status]
