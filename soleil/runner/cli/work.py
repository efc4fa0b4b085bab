"""`soleil-runner work QUEUE[,QUEUE...]`: run a worker in the foreground."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from soleil.runner import backoff as backoff_rules
from soleil.runner.cli.common import Context, Seconds, import_app, pass_context
from soleil.runner.names import parse_queue_list
from soleil.runner.options import MAX_BATCH, MAX_CONCURRENCY
from soleil.runner.sdnotify import Notifier
from soleil.runner.worker import Worker, WorkerOptions


def _queues(_: click.Context, __: click.Parameter, value: str) -> list[str]:
    try:
        return parse_queue_list(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _backoff(_: click.Context, __: click.Parameter, value: str | None) -> backoff_rules.BackoffSpec:
    if value is None:
        return 0
    try:
        return backoff_rules.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("queues", callback=_queues, metavar="QUEUE[,QUEUE...]")
@click.option("--app", envvar="SOLEIL_APP", help="Module(s) defining the job classes [env: SOLEIL_APP].")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=1,
    show_default=True,
    help="Jobs run at once.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0, max=MAX_BATCH),
    default=0,
    show_default=True,
    help="Jobs claimed ahead of free executors: fewer, larger claims. Unstarted ones go back on "
    "stop; a killed worker has used an attempt of each.",
)
@click.option(
    "--transaction-group",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Transactional jobs already waiting that may share one transaction and its COMMIT "
    "(1: a COMMIT per job).",
)
@click.option(
    "--sleep",
    type=Seconds(min=0.01),
    default=3.0,
    show_default=True,
    help="Seconds between polls when no notification arrives.",
)
@click.option(
    "--tries",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Attempts for jobs that do not set `tries`.",
)
@click.option("--backoff", callback=_backoff, help="Seconds, a list such as 1,5,10, or 'exponential'.")
@click.option(
    "--timeout",
    type=Seconds(min=0.001),
    default=60.0,
    show_default=True,
    help="Seconds an attempt may run, for jobs that do not set `timeout`.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit 0 after this many jobs.")
@click.option("--max-time", type=Seconds(min=0.001), help="Exit 0 after this many seconds.")
@click.option(
    "--memory", "memory_mb", type=click.IntRange(min=1), help="Exit 12 above this many MB of memory."
)
@click.option("--stop-when-empty", is_flag=True, help="Exit 0 once no job is ready.")
@click.option(
    "--heartbeat",
    "heartbeat_interval",
    type=Seconds(min=0.05),
    default=10.0,
    show_default=True,
    help="Seconds between heartbeats; jobs of a silent worker return after two.",
)
@click.option(
    "--stop-grace",
    type=Seconds(),
    default=60.0,
    show_default=True,
    help="Seconds running jobs may take to finish after SIGTERM.",
)
@click.option(
    "--timeout-grace",
    type=Seconds(),
    default=5.0,
    show_default=True,
    help="Seconds a job may take to stop after its timeout before its thread is abandoned.",
)
@click.option(
    "--listen-database-url",
    envvar="SOLEIL_LISTEN_DATABASE_URL",
    metavar="URL",
    help="A direct connection for LISTEN when --database-url goes through PgBouncer "
    "[env: SOLEIL_LISTEN_DATABASE_URL].",
)
@pass_context
def work(ctx: Context, /, queues: list[str], app: str | None, **options: object) -> None:
    """Process jobs from the queues, in strict priority order, until stopped.

    SIGTERM or SIGINT: stop claiming, let running jobs finish, exit 0. A second
    one: stop now; running jobs go back to their queues (attempt counted), exit 1.
    """
    import_app(app)
    runner = ctx.runner()
    worker = Worker(runner, queues, WorkerOptions(**options).validated(), notifier=Notifier.from_env())  # type: ignore[arg-type]

    signalled: list[str] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signalled:  # a second SIGTERM or Ctrl-C: stop waiting for the running jobs
            worker.stop_now(f"{signalled[0]} then {name}")
        else:
            signalled.append(name)
            worker.request_stop(name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(worker.run())


COMMANDS = [work]
