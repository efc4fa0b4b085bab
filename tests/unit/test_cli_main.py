"""soleil-runner's entry point turns what commands say into exit codes."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from soleil.runner.cli import cli, main
from soleil.runner.errors import ConfigurationError


@pytest.fixture
def probe() -> Iterator[str]:
    """A throwaway command registered for one test."""

    @click.command("probe-exit")
    @click.argument("what")
    @click.pass_context
    def probe_exit(ctx: click.Context, what: str) -> None:
        if what == "exit3":
            ctx.exit(3)
        if what == "config":
            raise ConfigurationError("no database: pass --database-url postgresql://u:hunter22@h/db")

    cli.add_command(probe_exit)
    try:
        yield "probe-exit"
    finally:
        cli.commands.pop("probe-exit")


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0)


def test_ctx_exit_code_reaches_the_shell(probe: str) -> None:
    assert exit_code([probe, "exit3"]) == 3
    assert exit_code([probe, "fine"]) == 0


def test_soleil_errors_are_one_redacted_line_with_exit_2(
    probe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code([probe, "config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no database")
    assert "hunter22" not in err
    assert len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(probe: str) -> None:
    assert exit_code([probe]) == 2
