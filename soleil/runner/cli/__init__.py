"""`soleil-runner`: a thin click layer over the Python API.

Every command takes --database-url (or $SOLEIL_DATABASE_URL). Errors are one
clear line on stderr: exit 2 for configuration and database problems, 1 for
"not found" answers; a traceback only with --debug.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, get_args

import click
import psycopg

from soleil.runner import logging as soleil_logging
from soleil.runner.cli.common import Context
from soleil.runner.db import first_line, redact
from soleil.runner.errors import SoleilError

EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    envvar="SOLEIL_DATABASE_URL",
    metavar="URL",
    help="libpq URL or conninfo of the database [env: SOLEIL_DATABASE_URL].",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    envvar="SOLEIL_LOG_FORMAT",
    show_default=True,
    help="console on a terminal, JSON lines elsewhere.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    envvar="SOLEIL_LOG_LEVEL",
    show_default=True,
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="soleil")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, log_format: Any, log_level: str, debug: bool) -> None:
    """Soleil: PostgreSQL-backed background jobs."""
    soleil_logging.configure(log_format, log_level)
    ctx.obj = Context(database_url=database_url, debug=debug)


def _register_commands() -> None:
    from soleil.runner.cli import demo, dispatch, failed, grant, queue, schema, status, units, work

    for module in (schema, work, dispatch, units, grant, demo, failed, status, queue):
        for command in module.COMMANDS:
            _accept_global_options_after(command)
            cli.add_command(command)


def _accept_global_options_after(command: click.Command) -> None:
    """Operators put options after the command (`work default --log-format json`, as
    with Laravel's artisan): the global options work there too, overriding those before."""
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _accept_global_options_after(subcommand)
        return
    taken = {name for param in command.params for name in param.opts}
    late = [
        click.Option(["--database-url"], metavar="URL", callback=_late_database_url),
        click.Option(
            ["--log-format"], type=click.Choice(get_args(soleil_logging.LogFormat)), callback=_late_logging
        ),
        click.Option(["--log-level"], type=click.Choice(list(soleil_logging.LEVELS)), callback=_late_logging),
        click.Option(["--debug"], is_flag=True, default=None, callback=_late_debug),
    ]
    for option in late:
        if not taken & set(option.opts):
            option.hidden, option.expose_value = True, False
            command.params.append(option)


def _late_database_url(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Context).database_url = value  # type: ignore[union-attr]


def _late_logging(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and param.name is not None:
        options = ctx.find_root().params
        options[param.name] = value
        soleil_logging.configure(options["log_format"], options["log_level"])


def _late_debug(ctx: click.Context, _: click.Parameter, value: bool | None) -> None:
    if value:
        ctx.find_object(Context).debug = True  # type: ignore[union-attr]


_register_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        # Without standalone mode click returns ctx.exit(n)'s code instead of exiting.
        code = cli.main(args=argv, prog_name="soleil-runner", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort) or EOF
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SoleilError as exc:
        _traceback_if_debugging(argv)
        click.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(exit_code_for(exc))
    except psycopg.Error as exc:  # a database error no command turned into a SoleilError
        _traceback_if_debugging(argv)
        click.echo(f"error: database error: {redact(first_line(exc))}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _traceback_if_debugging(argv: list[str] | None) -> None:
    """--debug prints the traceback too; the exit code stays the one the docs give."""
    if "--debug" in (argv if argv is not None else sys.argv):
        traceback.print_exc()


def exit_code_for(exc: SoleilError) -> int:
    return int(getattr(exc, "exit_code", 2))


__all__ = ["cli", "main"]
