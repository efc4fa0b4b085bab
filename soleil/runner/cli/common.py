"""What every command shares: the database URL, the runner, app imports."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from soleil.runner.errors import ConfigurationError
from soleil.runner.options import MAX_SECONDS
from soleil.runner.runner import Runner


class Seconds(click.FloatRange):
    """A duration from `min` to `max` seconds (a year unless told); click's own
    range lets NaN through, which every comparison then passes."""

    name = "duration"

    def __init__(self, min: float = 0.0, max: float = MAX_SECONDS) -> None:
        super().__init__(min=min, max=max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = float(super().convert(value, param, ctx))
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


@dataclass
class Context:
    database_url: str | None
    debug: bool = False
    _runner: Runner | None = field(default=None, repr=False)

    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.database_url)
            click.get_current_context().call_on_close(self._runner.close)
        return self._runner

    def migrated_runner(self) -> Runner:
        """The runner, once the schema is known to be current (else SchemaNotReady, exit 2)."""
        runner = self.runner()
        runner.check_schema()
        return runner


pass_context = click.make_pass_decorator(Context)


def import_app(modules: str | None) -> list[str]:
    """Import the modules that define the job classes (comma-separated)."""
    if not modules:
        return []
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    imported = []
    for name in (part.strip() for part in modules.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import app module {name!r}: {exc}") from None
        imported.append(name)
    return imported
