"""`soleil-runner failed list|show|retry|forget|flush|prune`: jobs that used up their tries."""

from __future__ import annotations

import json

import click

from soleil.runner import failed as failed_jobs
from soleil.runner.chunks import DEFAULT_CHUNK_SIZE
from soleil.runner.cli.common import Context, pass_context
from soleil.runner.cli.output import echo_json, plural, progress, table
from soleil.runner.errors import FailedJobNotFound

chunk_option = click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    envvar="SOLEIL_CHUNK_SIZE",
    help="Rows per statement [env: SOLEIL_CHUNK_SIZE].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def failed() -> None:
    """Inspect, retry and delete failed jobs."""


@failed.command("list")
@click.option("--queue", help="Only this queue.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=failed_jobs.DEFAULT_LIST_LIMIT, show_default=True
)
@json_option
@pass_context
def list_command(ctx: Context, queue: str | None, limit: int, as_json: bool) -> None:
    """The newest failed jobs first."""
    runner = ctx.migrated_runner()
    jobs = failed_jobs.list_failed(runner, queue=queue, limit=limit)
    if as_json:
        echo_json([job.as_dict() for job in jobs])
        return
    if not jobs:
        click.echo("No failed jobs.")
        return
    rows = [(j.uuid, j.failed_at, j.queue, j.job, j.attempts, j.error) for j in jobs]
    click.echo(table(["UUID", "FAILED AT", "QUEUE", "JOB", "ATTEMPTS", "ERROR"], rows))
    total = failed_jobs.count(runner, queue=queue)
    if total > len(jobs):
        click.echo(f"(showing {len(jobs)} of {total}; use --limit to see more)")


@failed.command()
@click.argument("uuid")
@json_option
@pass_context
def show(ctx: Context, uuid: str, as_json: bool) -> None:
    """Everything about one failed job: the traceback and the payload."""
    job = failed_jobs.show(ctx.migrated_runner(), uuid)
    if as_json:
        echo_json(job.as_dict())
        return
    for label, value in (
        ("UUID", job.uuid),
        ("Failed at", job.failed_at.isoformat()),
        ("Queue", job.queue),
        ("Job", job.job),
        ("Attempts", job.attempts if job.max_attempts is None else f"{job.attempts} of {job.max_attempts}"),
        ("Priority", job.priority),
        ("Job id", "-" if job.job_id is None else job.job_id),
    ):
        click.echo(f"{label + ':':<11} {value}")
    click.echo("Payload:")
    click.echo(json.dumps(job.payload, indent=2, sort_keys=True))
    click.echo("Exception:")
    click.echo(job.exception)


@failed.command()
@click.argument("uuids", nargs=-1, required=True, metavar="UUID... | all")
@click.option("--queue", help="With `all`: only this queue.")
@chunk_option
@pass_context
def retry(ctx: Context, uuids: tuple[str, ...], queue: str | None, chunk_size: int) -> None:
    """Put failed jobs back on their queues with attempts reset.

    Each chunk moves atomically: a killed run loses and duplicates nothing,
    and two operators may run it at once.
    """
    runner = ctx.migrated_runner()
    if "all" in uuids:
        if len(uuids) > 1:
            raise click.UsageError("give either `all` or uuids, not both")
        total = failed_jobs.count(runner, queue=queue)
        with progress(total, "Retrying") as on_chunk:
            done = failed_jobs.retry_all(runner, queue=queue, chunk_size=chunk_size, progress=on_chunk)
        click.echo(f"Pushed back {plural(done, 'failed job')}.")
        return
    if queue is not None:
        raise click.UsageError("--queue only applies to `failed retry all`")
    result = failed_jobs.retry(runner, uuids)
    click.echo(f"Pushed back {plural(len(result.retried), 'failed job')}.")
    if result.missing:
        raise FailedJobNotFound(result.missing)


@failed.command()
@click.argument("uuid")
@pass_context
def forget(ctx: Context, uuid: str) -> None:
    """Delete one failed job."""
    failed_jobs.forget(ctx.migrated_runner(), uuid)
    click.echo(f"Deleted failed job {uuid}.")


def _delete(ctx: Context, hours: float | None, chunk_size: int) -> None:
    runner = ctx.migrated_runner()
    total = failed_jobs.count(runner, older_than_hours=hours)
    with progress(total, "Deleting") as on_chunk:
        done = failed_jobs.flush(runner, older_than_hours=hours, chunk_size=chunk_size, progress=on_chunk)
    older = "" if hours is None else f" older than {hours:g} hour{'' if hours == 1 else 's'}"
    click.echo(f"Deleted {plural(done, 'failed job')}{older}.")


@failed.command()
@click.option("--hours", type=click.FloatRange(min=0), help="Only those that failed more than N hours ago.")
@chunk_option
@pass_context
def flush(ctx: Context, hours: float | None, chunk_size: int) -> None:
    """Delete all failed jobs (or those older than --hours)."""
    _delete(ctx, hours, chunk_size)


@failed.command()
@click.option("--hours", type=click.FloatRange(min=0), required=True, help="Age in hours.")
@chunk_option
@pass_context
def prune(ctx: Context, hours: float, chunk_size: int) -> None:
    """Delete failed jobs older than --hours (for a timer or cron)."""
    _delete(ctx, hours, chunk_size)


COMMANDS = [failed]
