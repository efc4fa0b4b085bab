"""`soleil-runner work-instance INSTANCE`: `work` for a systemd template instance.

`soleil-worker@.service` passes its instance name (%i); this maps it to the
queue list, so one template serves every queue and every process count:

    bookings            -> bookings
    bookings-2          -> bookings  (a trailing -N numbers processes of one queue)
    bookings\\x2cdefault -> bookings,default  (systemd-escape: a priority list)

Only a raw `-N` suffix is a process number; an escaped `\\x2d` is a literal '-'
(`systemd-escape v-2` gives `v\\x2d2`, the queue named v-2).
"""

from __future__ import annotations

import re

import click

from soleil.runner.cli.work import work
from soleil.runner.names import parse_queue_list

_PROCESS_NUMBER = re.compile(r"-[0-9]+$")
_ESCAPED_BYTE = re.compile(r"\\x([0-9A-Fa-f]{2})")


def queues_for_instance(instance: str) -> list[str]:
    """The validated queue list a systemd instance name stands for."""
    name = _PROCESS_NUMBER.sub("", instance)
    return parse_queue_list(_ESCAPED_BYTE.sub(lambda m: chr(int(m.group(1), 16)), name))


def _queues(_: click.Context, __: click.Parameter, value: str) -> list[str]:
    try:
        return queues_for_instance(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _work_instance(queues: list[str], **options: object) -> None:
    click.get_current_context().invoke(work, queues=queues, **options)


work_instance = click.Command(
    "work-instance",
    callback=_work_instance,
    params=[
        click.Argument(["queues"], metavar="INSTANCE", callback=_queues),
        *(param for param in work.params if param.name != "queues"),
    ],
    help="Run `work` for a systemd instance name: bookings-2 works queue bookings. "
    "Takes every option of `work`.",
)

COMMANDS = [work_instance]
