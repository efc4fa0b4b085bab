"""`soleil-runner grant`: create the least-privilege roles and grant their privileges."""

from __future__ import annotations

import click

from soleil.runner import db, grants
from soleil.runner.cli.common import Context, pass_context


@click.command()
@click.option(
    "--prefix",
    default=grants.DEFAULT_PREFIX,
    show_default=True,
    help="Role names are PREFIX + dispatcher, worker, operator.",
)
@pass_context
def grant(ctx: Context, prefix: str) -> None:
    """Create the roles dispatcher, worker and operator (NOLOGIN groups) and grant
    each only what it needs on the `soleil` schema. Run it as the schema's owner,
    again after every `migrate`; then grant the roles to your login roles."""
    names = grants.RoleNames.with_prefix(prefix)
    runner = ctx.runner()
    conn = db.connect(runner.database_url)
    try:
        created = grants.grant(conn, names)
    finally:
        conn.close()
    for role in names.all():
        click.echo(f"{role}: {'created and granted' if role in created else 'granted'}")
    click.echo(f"Next: GRANT {names.worker} TO <the workers' login role>; likewise for the others.")


COMMANDS = [grant]
