"""`soleil-runner queue clear|pause|resume`, `restart` and `monitor`: control
that travels through the database (a row plus a NOTIFY), never a cache server."""

from __future__ import annotations

import sys

import click
import structlog

from soleil.runner import control
from soleil.runner import status as queue_status
from soleil.runner.chunks import DEFAULT_CHUNK_SIZE
from soleil.runner.cli.common import Context, pass_context
from soleil.runner.cli.output import echo_json, plural, progress, table
from soleil.runner.names import validate_queue

log = structlog.get_logger("soleil.monitor")

EXIT_BUSY = 1  # monitor: a queue is above its limit (2 stays "could not check")
EXIT_DECLINED = 1  # queue clear: the operator answered no


def _queue(_: click.Context, __: click.Parameter, value: str) -> str:
    try:
        return validate_queue(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def queue() -> None:
    """Pause, resume or clear a queue."""


@queue.command()
@click.argument("name", metavar="QUEUE", callback=_queue)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE, show_default=True)
@pass_context
def clear(ctx: Context, name: str, force: bool, chunk_size: int) -> None:
    """Delete every job of QUEUE, running ones included (failed jobs stay)."""
    if not force:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"refusing to clear queue {name!r} without --force: stdin is not a terminal"
            )
        if not click.confirm(f"Delete every job of queue {name!r}, running ones included?"):
            click.echo("Nothing cleared.")
            sys.exit(EXIT_DECLINED)
    runner = ctx.migrated_runner()
    total = queue_status.job_count(runner, name)
    with progress(total, "Clearing") as on_chunk:
        done = control.clear(runner, name, chunk_size=chunk_size, progress=on_chunk)
    click.echo(f"Cleared {plural(done, 'job')} from queue {name}.")


@queue.command()
@click.argument("name", metavar="QUEUE", callback=_queue)
@pass_context
def pause(ctx: Context, name: str) -> None:
    """Workers stop claiming from QUEUE within a second; running jobs finish."""
    control.pause(ctx.migrated_runner(), name)
    click.echo(f"Paused queue {name}.")


@queue.command()
@click.argument("name", metavar="QUEUE", callback=_queue)
@pass_context
def resume(ctx: Context, name: str) -> None:
    """Workers claim from QUEUE again within a second."""
    control.resume(ctx.migrated_runner(), name)
    click.echo(f"Resumed queue {name}.")


@click.command()
@pass_context
def restart(ctx: Context) -> None:
    """Every running worker exits 0 after its current jobs (systemd starts it again)."""
    control.restart(ctx.migrated_runner())
    click.echo("Restart requested: every running worker exits after its current jobs.")


def _limits(_: click.Context, __: click.Parameter, value: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for part in value.split(","):
        name, sep, limit = part.strip().rpartition(":")
        try:
            if not sep:
                raise ValueError(f"{part.strip()!r} is not QUEUE:MAX")
            if not limit.isdigit():
                raise ValueError(f"invalid MAX {limit!r} in {part.strip()!r}: use a whole number")
            name = validate_queue(name)
            if name in limits:
                raise ValueError(f"queue {name!r} is given twice")
            limits[name] = int(limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return limits


@click.command()
@click.argument("limits", metavar="QUEUE:MAX[,QUEUE:MAX...]", callback=_limits)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def monitor(ctx: Context, limits: dict[str, int], as_json: bool) -> None:
    """Exit 1 and log `queue.busy` when a queue has more than MAX ready jobs."""
    counts, busy = queue_status.busy_queues(ctx.migrated_runner(), limits)
    for item in busy:
        log.warning("queue.busy", queue=item.queue, ready=item.ready, max=item.limit)
    over = {item.queue for item in busy}
    if as_json:
        echo_json([{"queue": q, "ready": counts[q], "max": m, "busy": q in over} for q, m in limits.items()])
    else:
        rows = [(q, counts[q], m, "BUSY" if q in over else "ok") for q, m in limits.items()]
        click.echo(table(["QUEUE", "READY", "MAX", "STATE"], rows))
    if busy:
        sys.exit(EXIT_BUSY)  # SystemExit: main() would turn ctx.exit() into 0


COMMANDS = [queue, restart, monitor]
