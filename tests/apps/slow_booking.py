"""The booking app for worker subprocesses, with a test hook: on its first
attempt, CreateBookingJob records that it has inserted the booking (in
public.runs, outside its transaction) and then sleeps, so a test can kill the
worker while the booking is written but not committed."""

from __future__ import annotations

import os
import time

import soleil.booking  # noqa: F401  (registers the booking jobs and listeners)
from soleil.booking import CreateBookingJob
from soleil.runner import JobContext

SLEEP_SECONDS = 60.0


def pause_on_first_attempt(ctx: JobContext) -> None:
    with ctx.runner.connection() as conn:
        conn.execute(
            "INSERT INTO public.runs (job_id, attempt, tag, pid) VALUES (%s, %s, 'inserted', %s)",
            (ctx.job_id, ctx.attempt, os.getpid()),
        )
    if ctx.attempt == 1:
        time.sleep(SLEEP_SECONDS)


CreateBookingJob.after_insert_hook = pause_on_first_attempt
