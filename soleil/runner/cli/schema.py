"""`soleil-runner migrate`."""

from __future__ import annotations

import click

from soleil.runner.cli.common import Context, pass_context
from soleil.runner.migrate import latest_version


@click.command()
@pass_context
def migrate(ctx: Context) -> None:
    """Create or update the `soleil` schema (safe to run from several hosts at once)."""
    applied = ctx.runner().migrate()
    if applied:
        click.echo(f"Applied migrations: {', '.join(f'{v:04d}' for v in applied)}.")
    else:
        click.echo(f"Schema is up to date (version {latest_version():04d}).")


COMMANDS = [migrate]
