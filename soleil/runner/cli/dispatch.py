"""`soleil-runner dispatch NAME`: enqueue one job from the shell (operators, scripts, tests)."""

from __future__ import annotations

import click

from soleil.runner.cli.common import Context, Seconds, import_app, pass_context
from soleil.runner.dispatch import MAX_DELAY_SECONDS, PRIORITIES
from soleil.runner.job import REGISTRY, load_payload
from soleil.runner.names import validate_queue


def _queue(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_queue(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("name")
@click.option("--payload", default="{}", show_default=True, metavar="JSON", help="The job's fields.")
@click.option("--queue", callback=_queue, help="Queue to use instead of the job class's own.")
@click.option("--delay", type=Seconds(max=MAX_DELAY_SECONDS), help="Seconds before the job may run.")
@click.option(
    "--priority",
    type=click.IntRange(PRIORITIES.start, PRIORITIES.stop - 1),
    default=0,
    show_default=True,
    help="Higher runs first.",
)
@click.option("--unique-key", help="Enqueue nothing while a job with this key is queued or running.")
@click.option("--app", envvar="SOLEIL_APP", help="Module(s) defining the job classes [env: SOLEIL_APP].")
@pass_context
def dispatch(
    ctx: Context,
    /,
    name: str,
    payload: str,
    queue: str | None,
    delay: float | None,
    priority: int,
    unique_key: str | None,
    app: str | None,
) -> None:
    """Enqueue job NAME (its registered name) and print its id.

    The payload is validated by the job class, as Runner.dispatch does. With a
    --unique-key that is taken, nothing is enqueued, stdout stays empty and the
    exit code is 0.
    """
    import_app(app)
    job = load_payload(REGISTRY.lookup(name), payload)
    job_id = ctx.runner().dispatch(job, delay=delay, priority=priority, unique_key=unique_key, queue=queue)
    if job_id is None:
        click.echo(f"not dispatched: unique key {unique_key!r} is taken by a queued or running job", err=True)
    else:
        click.echo(job_id)


COMMANDS = [dispatch]
