"""Events dispatched in a transaction: inline listeners join it, queued
listeners are enqueued in it, and a rollback fires nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from soleil.runner import Event, EventContext, Listener, Runner
from tests.helpers import count_jobs, effects, scalar, wait_for


class Paid(Event):
    invoice: str


def write_effect(conn: psycopg.Connection[Any], key: str) -> None:
    conn.execute("INSERT INTO public.effects (key) VALUES (%s)", (key,))


class RecordPaymentInline(Listener[Paid]):
    def handle(self, event: Paid, ctx: EventContext) -> None:
        assert ctx.connection is not None and ctx.job is None
        write_effect(ctx.connection, f"inline:{event.invoice}")


class SendReceiptLater(Listener[Paid]):
    queued = True
    queue = "receipts"
    transactional = True

    def handle(self, event: Paid, ctx: EventContext) -> None:
        assert ctx.connection is not None and ctx.job is not None
        write_effect(ctx.connection, f"queued:{event.invoice}:{ctx.job.queue}")


def test_a_committed_event_runs_inline_listeners_now_and_queued_ones_on_a_worker(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    with runner.connection() as tx, tx.transaction():
        job_ids = runner.events.dispatch(Paid(invoice="A-1"), connection=tx)
    assert len(job_ids) == 1
    assert effects(conn) == ["inline:A-1"]
    assert count_jobs(conn, "queue = 'receipts'") == 1
    start_worker("receipts")
    wait_for(lambda: count_jobs(conn) == 0, what="the queued listener to run")
    assert effects(conn) == ["inline:A-1", "queued:A-1:receipts"]


def test_a_rolled_back_transaction_fires_nothing(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(RuntimeError), runner.connection() as tx, tx.transaction():
        runner.events.dispatch(Paid(invoice="B-2"), connection=tx)
        raise RuntimeError("the payment is refused after all")
    assert effects(conn) == []
    assert count_jobs(conn) == 0


def test_without_a_connection_the_dispatch_is_its_own_transaction(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    runner.events.dispatch(Paid(invoice="C-3"))
    assert effects(conn) == ["inline:C-3"]
    assert scalar(conn, "SELECT payload->>'event' FROM soleil.jobs") == Paid.name


class Refunded(Event):
    invoice: str


class NotifyAccountingOrFail(Listener[Refunded]):
    queued = True
    queue = "accounting"
    tries = 2
    backoff = 0

    def handle(self, event: Refunded, ctx: EventContext) -> None:
        assert ctx.job is not None
        write_effect_elsewhere(ctx, f"try:{ctx.job.attempt}")
        raise RuntimeError("accounting is down")

    def failed(self, event: Refunded, ctx: EventContext, exc: BaseException) -> None:
        assert ctx.connection is not None and ctx.job is not None
        ctx.connection.execute(
            "INSERT INTO public.hooks (job_id, error) VALUES (%s, %s)",
            (ctx.job.job_id, f"{event.invoice}: {exc}"),
        )


def write_effect_elsewhere(ctx: EventContext, key: str) -> None:
    with ctx.runner.connection() as conn:
        write_effect(conn, key)


def test_a_queued_listener_gets_its_tries_then_its_failed_hook_with_the_event(
    runner: Runner, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    runner.events.dispatch(Refunded(invoice="D-4"))
    start_worker("accounting")
    wait_for(lambda: count_jobs(conn) == 0 and scalar(conn, "SELECT count(*) FROM public.hooks") == 1)
    assert effects(conn) == ["try:1", "try:2"]
    assert scalar(conn, "SELECT error FROM public.hooks") == "D-4: accounting is down"
    job_class = NotifyAccountingOrFail.job_class
    assert job_class is not None
    assert scalar(conn, "SELECT job FROM soleil.failed_jobs") == job_class.name
