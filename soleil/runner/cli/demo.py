"""`soleil-runner demo`: the booking demo, the README's main command.

The dependency runs one way: soleil.booking is an application built on
soleil.runner's public API, and soleil.runner never imports it at import time.
The demo ships with the package, so this command loads it by name, only when
it runs; the runner works (and its other commands load) without it.
"""

from __future__ import annotations

import importlib
import sys

import click
from click.core import ParameterSource

from soleil.runner import logging as soleil_logging
from soleil.runner.cli.common import Context, pass_context
from soleil.runner.errors import ConfigurationError

DEMO_MODULE = "soleil.booking.demo"


@click.command()
@click.option(
    "--requests",
    type=click.IntRange(min=2, max=200),
    default=32,
    show_default=True,
    help="Concurrent booking requests (one thread each).",
)
@pass_context
def demo(ctx: Context, requests: int) -> None:
    """Run the booking demo on $SOLEIL_DATABASE_URL (created when missing).

    Migrates the runner and booking schemas, seeds rooms and users, fires
    concurrent booking requests, runs a worker until the queues drain, and
    prints a summary. Exits 1 if a check fails (overlapping bookings, or a
    queued request that ended neither booked nor failed and notified).
    Logs warnings and errors only, unless --log-level is given.
    """
    group = click.get_current_context().parent
    if group is not None and group.get_parameter_source("log_level") is ParameterSource.DEFAULT:
        # Every job's start and end at info level would bury the summary.
        soleil_logging.configure(group.params["log_format"], "warning")
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ImportError as exc:
        raise ConfigurationError(f"the booking demo cannot be loaded: {exc}") from None
    sys.exit(module.main(ctx.database_url, requests=requests))


COMMANDS = [demo]
