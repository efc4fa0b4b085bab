"""A hypothesis state machine drives jobs through their whole life against the
real database and the real claim, execute, outcome, completion and rescue code:
dispatch, claim, run (succeed or fail; alone, or one after another on one
executor, where transactional jobs chain and share transaction groups), batch
completion, graceful stop, worker death, rescue, a dead worker waking up and
running what it had claimed, and `failed retry`.

Some jobs fail at every COMMIT (a deferred unique violation): a transaction group
holding one is sent back job by job, and the executor runs those again alone.

After every step it checks that no job is lost, that no job ran successfully
twice unless a worker holding it was killed, and that every transactional job's
effects exist exactly once when it completed and never otherwise.

Workers are simulated by real Worker objects that are never started: the state
machine decides when each one claims, runs and flushes, so interleavings that
threads would make rare happen at will, and every example replays exactly.
"""

from __future__ import annotations

import json
import os
import queue
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from soleil.runner import Runner, Worker, WorkerOptions, failed, lease
from soleil.runner import claim as claiming
from soleil.runner.claim import ClaimedJob, claim
from soleil.runner.complete import Completer
from soleil.runner.execute import Executor
from tests.apps.lifecycle import (
    ClashesAtCommit,
    Countdown,
    OneShotCountdown,
    OneShotTransactionalCountdown,
    TransactionalCountdown,
)

TRIES = 3  # the worker's --tries; every job class here sets its own (3, or 1 for one-shots)
# (transactional, one try only) -> the job class dispatched
JOB_CLASSES: dict[tuple[bool, bool], type[Countdown | TransactionalCountdown]] = {
    (False, False): Countdown,
    (True, False): TransactionalCountdown,
    (False, True): OneShotCountdown,
    (True, True): OneShotTransactionalCountdown,
}
# A job dispatched with this many failures is a ClashesAtCommit: every COMMIT of
# its transaction fails, so a group holding it is sent back to run job by job.
CLASHES = 99
QUEUES = ["default"]
CLASHES_TABLE = "CREATE TABLE public.clashes (key text UNIQUE DEFERRABLE INITIALLY DEFERRED)"
RESET = (
    "TRUNCATE soleil.jobs, soleil.failed_jobs, soleil.workers, soleil.queue_stats,"
    " public.runs, public.hooks, public.effects, public.clashes"
)


@dataclass
class Expected:
    """What the model knows about one dispatched job (by its payload key)."""

    transactional: bool
    failures: int
    status: str = "queued"  # queued | completed | failed
    job_ids: set[int] = field(default_factory=set)
    successes: int = 0  # handle() runs that succeeded
    rerun_allowed: int = 0  # extra successful runs explained by a killed worker
    times_failed: int = 0  # moves to failed_jobs (each runs the failed() hook once)


class SimulatedWorker:
    """A real Worker (pool, registry, options, fences) whose steps the test calls."""

    def __init__(self, runner: Runner) -> None:
        # Groups of up to 3 transactional jobs; a window longer than any example
        # keeps them independent of time, so that every example replays exactly.
        options = WorkerOptions(tries=TRIES, backoff=0, transaction_group=3, completion_interval=3600.0)
        self.worker = Worker(runner, QUEUES, options)
        self.worker.pool.open(wait=True)
        self.claimed: list[ClaimedJob] = []
        self.unflushed: list[str] = []  # keys run successfully, completion still buffered

    def register(self, conn: psycopg.Connection[Any]) -> None:
        self.worker.id = lease.register(conn, QUEUES, 1, lease_seconds=60.0)
        self.worker.completer = Completer(self.worker.pool, self.worker.id)
        self.claimed, self.unflushed = [], []

    def run(self, job: ClaimedJob) -> None:
        Executor(self.worker, queue.SimpleQueue(), 0)._run(job)

    def run_in_turn(self, jobs: list[ClaimedJob]) -> None:
        """One executor runs `jobs` from its inbox, as a busy worker's would, then
        the jobs its failed group COMMITs sent back, until there are none."""
        while jobs:
            inbox: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
            for job in [*jobs, None]:
                inbox.put(job)
            Executor(self.worker, inbox, 0)._loop()
            jobs = []
            while not self.worker._inbox.empty():
                requeued = self.worker._inbox.get_nowait()
                assert requeued is not None and requeued.solo
                jobs.append(requeued)

    def close(self) -> None:
        self.worker.pool.close()


class Lifecycle(RuleBasedStateMachine):
    conn: psycopg.Connection[Any]
    runner: Runner
    workers: list[SimulatedWorker]
    zombie: SimulatedWorker  # plays any dead worker that wakes up

    def __init__(self) -> None:
        super().__init__()
        self.conn.execute(RESET)
        for simulated in self.workers:
            simulated.register(self.conn)
        self.jobs: dict[str, Expected] = {}
        self.dead: list[tuple[int, ClaimedJob]] = []  # (dead worker id, job it had claimed)
        self.sequence = 0

    # -- helpers ----------------------------------------------------------------

    def key_of(self, job: ClaimedJob) -> str:
        return str(json.loads(job.payload)["key"])

    def apply_run(self, simulated: SimulatedWorker, job: ClaimedJob, *, owned: bool) -> None:
        """Run `job` through the real executor and update the model with what the
        rules of the product say must happen."""
        simulated.run(job)
        self.record_run(simulated, job, owned=owned)

    def record_run(self, simulated: SimulatedWorker, job: ClaimedJob, *, owned: bool) -> None:
        expected = self.jobs[self.key_of(job)]
        lost = job.attempt > job.max_attempts  # WorkerLost: handle() does not run
        succeeded = not lost and job.attempt > expected.failures
        if succeeded and not (expected.transactional and not owned):
            expected.successes += 1
            if not owned:
                expected.rerun_allowed += 1  # a dead worker's late run: at-least-once
        if not owned:
            return  # every write of a stale holder is fenced out
        if succeeded:
            if expected.transactional:
                expected.status = "completed"
            else:
                simulated.unflushed.append(self.key_of(job))
        elif lost or job.attempt >= job.max_attempts:
            expected.status = "failed"
            expected.times_failed += 1

    # -- rules ------------------------------------------------------------------

    @rule(
        specs=st.lists(
            # Transactional two times in three: runs of them chain and form groups.
            st.tuples(
                st.sampled_from([True, True, False]), st.sampled_from([0, 0, 1, 2, 3, CLASHES]), st.booleans()
            ),
            min_size=1,
            max_size=4,
        )
    )
    def dispatch(self, specs: list[tuple[bool, int, bool]]) -> None:
        jobs: list[Countdown | TransactionalCountdown | ClashesAtCommit] = []
        for transactional, failures, one_shot in specs:
            self.sequence += 1
            key = f"k{self.sequence}"
            cls = ClashesAtCommit if failures == CLASHES else JOB_CLASSES[transactional, one_shot]
            jobs.append(cls(key=key, failures=failures))
            self.jobs[key] = Expected(transactional or failures == CLASHES, failures)
        # One job takes the single-row path, several the COPY path.
        many = len(jobs) > 1
        ids = list(self.runner.dispatch_many(jobs)) if many else [self.runner.dispatch(jobs[0])]
        for job, job_id in zip(jobs, ids, strict=True):
            assert job_id is not None
            self.jobs[job.key].job_ids.add(job_id)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 4))
    def claim(self, index: int, limit: int) -> None:
        simulated = self.workers[index]
        got = claim(self.conn, queues=QUEUES, limit=limit, worker_id=simulated.worker.id, default_tries=TRIES)
        simulated.claimed += got

    @precondition(lambda self: any(w.claimed for w in self.workers))
    @rule(index=st.integers(0, 1), count=st.integers(1, 4))
    def run(self, index: int, count: int) -> None:
        simulated = self.workers[index] if self.workers[index].claimed else self.workers[1 - index]
        for _ in range(min(count, len(simulated.claimed))):
            self.apply_run(simulated, simulated.claimed.pop(0), owned=True)

    @precondition(lambda self: any(w.claimed for w in self.workers))
    @rule(index=st.integers(0, 1), count=st.integers(2, 6))
    def run_in_turn(self, index: int, count: int) -> None:
        """Claimed jobs waiting in one executor's inbox: consecutive transactional
        ones chain on one connection and share COMMITs, three at most."""
        simulated = self.workers[index] if self.workers[index].claimed else self.workers[1 - index]
        jobs = simulated.claimed[:count]
        del simulated.claimed[:count]
        simulated.run_in_turn(jobs)
        for job in jobs:
            self.record_run(simulated, job, owned=True)

    @precondition(lambda self: any(w.unflushed for w in self.workers))
    @rule(index=st.integers(0, 1))
    def flush(self, index: int) -> None:
        simulated = self.workers[index] if self.workers[index].unflushed else self.workers[1 - index]
        self.flush_worker(simulated)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 6))
    def work(self, index: int, limit: int) -> None:
        """What a healthy worker's loop does: claim a batch, run it on one executor, flush."""
        self.claim(index, limit)
        simulated = self.workers[index]
        jobs, simulated.claimed = simulated.claimed, []
        simulated.run_in_turn(jobs)
        for job in jobs:
            self.record_run(simulated, job, owned=True)
        self.flush_worker(simulated)

    def flush_worker(self, simulated: SimulatedWorker) -> None:
        assert simulated.worker.completer.flush()
        for key in simulated.unflushed:
            self.jobs[key].status = "completed"
        simulated.unflushed = []

    @rule(index=st.integers(0, 1))
    def kill(self, index: int) -> None:
        """SIGKILL: the heartbeat stops, claimed jobs and buffered completions are lost."""
        simulated = self.workers[index]
        dead_id = simulated.worker.id
        self.conn.execute(
            "UPDATE soleil.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (dead_id,)
        )
        self.dead += [(dead_id, job) for job in simulated.claimed]
        for key in simulated.unflushed:
            self.jobs[key].rerun_allowed += 1  # it ran, but its completion died with the worker
        simulated.register(self.conn)  # systemd starts a new process

    @rule(index=st.integers(0, 1))
    def stop_gracefully(self, index: int) -> None:
        """SIGTERM, in the order the worker's shutdown uses: give back claimed jobs
        that never started (their attempt too), flush completions, unregister."""
        simulated = self.workers[index]
        before = {job.id: job.attempt for job in simulated.claimed}
        released = claiming.release(self.conn, simulated.claimed, simulated.worker.id)
        assert released == len(before)
        self.flush_worker(simulated)
        lease.unregister(self.conn, simulated.worker.id)
        for job_id, attempt in before.items():
            row = self.conn.execute(
                "SELECT attempts, reserved_by FROM soleil.jobs WHERE id = %s", (job_id,)
            ).fetchone()
            assert row == (attempt - 1, None), f"job {job_id} was not given back as it was: {row}"
        simulated.register(self.conn)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 4))
    def claim_then_die(self, index: int, limit: int) -> None:
        """Killed right after claiming a batch: the commonest way jobs are orphaned."""
        self.claim(index, limit)
        self.kill(index)

    @rule()
    def rescue(self) -> None:
        lease.rescue(self.conn, healthy_seconds=60.0)

    @precondition(lambda self: bool(self.dead))
    @rule(data=st.data())
    def dead_worker_wakes_up(self, data: st.DataObject) -> None:
        """A worker declared dead was only paused: it runs a job it had claimed."""
        dead_id, job = self.dead.pop(data.draw(st.integers(0, len(self.dead) - 1)))
        held = self.conn.execute(
            "SELECT 1 FROM soleil.jobs WHERE id = %s AND reserved_by = %s AND attempts = %s",
            (job.id, dead_id, job.attempt),
        ).fetchone()
        self.zombie.worker.id = dead_id
        self.zombie.worker.completer = Completer(self.zombie.worker.pool, dead_id)
        self.zombie.unflushed = []
        self.apply_run(self.zombie, job, owned=held is not None)
        self.flush_worker(self.zombie)

    @precondition(lambda self: any(e.status == "failed" for e in self.jobs.values()))
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        """An operator fixes the cause (payload failures -> 0) and retries the job."""
        key = data.draw(st.sampled_from(sorted(k for k, e in self.jobs.items() if e.status == "failed")))
        row = self.conn.execute(
            "UPDATE soleil.failed_jobs SET payload = jsonb_set(payload, '{failures}', '0')"
            " WHERE payload->>'key' = %s RETURNING uuid::text",
            (key,),
        ).fetchone()
        assert row is not None
        assert failed.retry(self.runner, [row[0]]).retried == [row[0]]
        expected = self.jobs[key]
        expected.status = "queued"
        if expected.failures != CLASHES:  # no payload fixes a COMMIT that always fails
            expected.failures = 0
        new_id = self.conn.execute("SELECT id FROM soleil.jobs WHERE payload->>'key' = %s", (key,)).fetchone()
        assert new_id is not None
        expected.job_ids.add(new_id[0])

    # -- invariants -------------------------------------------------------------

    @invariant()
    def no_job_is_lost_and_each_is_where_the_model_says(self) -> None:
        queued = Counter(r[0] for r in self.conn.execute("SELECT payload->>'key' FROM soleil.jobs"))
        failed_rows = Counter(
            r[0] for r in self.conn.execute("SELECT payload->>'key' FROM soleil.failed_jobs")
        )
        for key, expected in self.jobs.items():
            place = (queued[key], failed_rows[key])
            want = {"queued": (1, 0), "completed": (0, 0), "failed": (0, 1)}[expected.status]
            assert place == want, f"{key}: expected {expected.status}, found (jobs, failed_jobs) = {place}"
        assert set(queued) | set(failed_rows) <= set(self.jobs), "rows nobody dispatched"

    @invariant()
    def no_job_succeeds_twice_unless_a_killed_worker_explains_it(self) -> None:
        for key, expected in self.jobs.items():
            assert expected.successes <= 1 + expected.rerun_allowed, f"{key} ran successfully twice"
            if expected.transactional:
                assert expected.successes <= 1, f"transactional {key} succeeded twice"

    @invariant()
    def transactional_effects_exist_exactly_once_when_completed(self) -> None:
        effects = Counter(r[0] for r in self.conn.execute("SELECT key FROM public.effects"))
        for key, expected in self.jobs.items():
            if expected.transactional:
                want = 1 if expected.status == "completed" else 0
                assert effects[key] == want, f"{key} ({expected.status}) has {effects[key]} effects"

    @invariant()
    def the_failed_hook_ran_once_per_move_to_failed_jobs(self) -> None:
        hooks = Counter(r[0] for r in self.conn.execute("SELECT job_id FROM public.hooks"))
        for key, expected in self.jobs.items():
            ran = sum(hooks[job_id] for job_id in expected.job_ids)
            moved = expected.times_failed
            assert ran == moved, f"{key}: failed() committed {ran} times for {moved} moves to failed_jobs"


@pytest.fixture
def lifecycle_machine(runner: Runner, conn: psycopg.Connection[Any]) -> Iterator[type[Lifecycle]]:
    conn.execute(CLASHES_TABLE)
    workers = [SimulatedWorker(runner) for _ in range(2)]
    zombie = SimulatedWorker(runner)
    Lifecycle.conn, Lifecycle.runner, Lifecycle.workers, Lifecycle.zombie = conn, runner, workers, zombie
    try:
        yield Lifecycle
    finally:
        for simulated in [*workers, zombie]:
            simulated.close()


@pytest.mark.timeout(300)
def test_job_lifecycle_state_machine(lifecycle_machine: type[Lifecycle]) -> None:
    run_state_machine_as_test(
        lifecycle_machine,
        settings=settings(
            max_examples=int(os.environ.get("SOLEIL_LIFECYCLE_EXAMPLES", "60")),
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        ),
    )
