-- Statements on soleil.jobs: the job's whole life, from dispatch to completion.
-- Each statement starts with a `-- name: <name> :<one|many|none|rowcount>` header;
-- soleil/runner/queries.py loads them once.

-- name: job_insert_one :one
-- Dispatch one job. A unique_key already held by a queued or running job makes
-- this a no-op (no row returned). Wakes the queue's listeners at commit; the
-- payload of the notification is the due time, so idle workers can schedule it,
-- followed by ":<id>" when %(name_job)s (a job dispatched in a transaction of its
-- own): an idle worker then claims that row by its key (job_claim_notified).
-- Inside a caller's transaction the payload stays the bare time, so that many
-- dispatches there collapse into one notification per queue and due time.
-- A delay counts from this statement (clock_timestamp()), not from the start of
-- the caller's transaction (now()), which may be long past. A job without delay
-- keeps now(): due at once either way, and one due time for all of them keeps
-- their notifications collapsing.
WITH inserted AS (
    INSERT INTO soleil.jobs (queue, job, payload, priority, max_attempts, available_at, unique_key)
    VALUES (
        %(queue)s, %(job)s, %(payload)s::jsonb, %(priority)s, %(max_attempts)s,
        COALESCE(
            %(available_at)s::timestamptz,
            CASE WHEN %(delay)s::float8 > 0 THEN clock_timestamp() + make_interval(secs => %(delay)s) ELSE now() END
        ),
        %(unique_key)s
    )
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id, queue, available_at
)
SELECT id, pg_notify(
    'soleil:' || queue,
    CASE WHEN %(name_job)s THEN extract(epoch FROM available_at)::text || ':' || id
    -- In a caller's transaction equal payloads collapse into one notification at
    -- COMMIT; delayed jobs there are each due at their own clock_timestamp(), so
    -- they announce it rounded down to a tenth of a second. A worker woken that
    -- little early finds nothing due and looks the exact time up.
    ELSE (floor(extract(epoch FROM available_at) * 10) / 10)::text END
)
FROM inserted;

-- name: job_reserve_many :one
-- The bulk path's one round trip before its COPY: a block of ids (COPY needs them
-- up front, in order), the due time in the database's clock (as text, for the COPY
-- stream) and one wake-up per queue, which Postgres sends at commit. A delay
-- counts from this statement, as in job_insert_one.
SELECT (SELECT array_agg(nextval('soleil.jobs_id_seq')) FROM generate_series(1, %(count)s)) AS ids,
       due.at::text AS due_at,
       (SELECT count(pg_notify('soleil:' || q.name, extract(epoch FROM due.at)::text))
        FROM unnest(%(queues)s::text[]) AS q(name)) AS notified
FROM (
    SELECT COALESCE(
        %(available_at)s::timestamptz,
        CASE WHEN %(delay)s::float8 > 0 THEN clock_timestamp() + make_interval(secs => %(delay)s) ELSE now() END
    ) AS at
) due;

-- name: job_copy_in :none
-- The bulk path: rows arrive by COPY with ids from job_reserve_many.
COPY soleil.jobs (id, queue, job, payload, priority, max_attempts, available_at) FROM STDIN;

-- name: job_claim_available :many
-- Reserve up to %(limit)s ready jobs for a worker, queues in strict priority
-- order, and commit without waiting for the WAL flush. The statement lives in
-- soleil.claim_jobs (sql/migrations/0005_claim_function.sql), which keeps its
-- plan for the session instead of re-planning on every call.
SELECT id, queue, job, payload, priority, attempt, max_attempts, available_epoch, reserved_epoch
FROM soleil.claim_jobs(%(queues)s, %(limit)s, %(worker_id)s, %(default_tries)s);

-- name: job_claim_notified :many
-- Reserve the one job an idle worker was just notified of, by its key: a
-- primary-key update instead of the claim function's scan, which is most of an
-- idle worker's pickup once the notification has arrived. Only while the job is
-- in one of the worker's (unpaused) queues, waiting and due; a row another
-- worker is claiming at this moment is skipped, not waited for. The worker uses
-- it only for a single notified job, and only when its last claim left nothing
-- else ready (worker.py, Worker._claim): strict queue and priority order cannot
-- pick another job then. Like the claim function it commits without waiting for
-- the WAL flush, for its own transaction only (set_config's is_local).
UPDATE soleil.jobs j
SET attempts = j.attempts + 1,
    reserved_at = now(),
    reserved_by = %(worker_id)s,
    max_attempts = COALESCE(j.max_attempts, %(default_tries)s)
WHERE j.id = (
    SELECT w.id FROM soleil.jobs w
    WHERE w.id = %(id)s AND w.queue = ANY (%(queues)s::text[])
      AND w.reserved_by IS NULL AND w.available_at <= now()
    FOR UPDATE SKIP LOCKED
)
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
RETURNING j.id, j.queue, j.job, j.payload::text, j.priority, j.attempts, j.max_attempts,
          extract(epoch FROM j.available_at)::float8,
          extract(epoch FROM j.reserved_at)::float8;

-- name: job_next_available_at :one
-- When the next waiting job of these queues becomes due (NULL: none waiting).
-- Read from jobs_claim_idx like the claim: within a queue and priority the index
-- is ordered by available_at, so the earliest job is the first entry of each
-- priority that has waiting jobs (soleil.waiting_priorities, as in the claim).
SELECT extract(epoch FROM min(next.available_at))::float8 AS due_epoch,
       extract(epoch FROM now())::float8 AS now_epoch
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL soleil.waiting_priorities(q.name) AS level(priority)
CROSS JOIN LATERAL (
    SELECT j.available_at
    FROM soleil.jobs j
    WHERE j.queue = q.name AND j.priority = level.priority AND j.reserved_by IS NULL
    ORDER BY j.available_at
    LIMIT 1
) next;

-- name: job_complete_many :rowcount
-- Delete a batch of finished jobs, fenced by holder and attempt so a job that
-- was rescued and re-claimed elsewhere is never completed by its old holder,
-- and add the batch's per-minute statistics in the same statement.
-- Each row is looked up by primary key (`held`), then deleted by its ctid: a row
-- changed meanwhile (rescued, re-claimed) has a new ctid and is left alone. A
-- join on the ids let the planner scan jobs_reserved_by_idx instead (statistics
-- say a worker holds a row or two), and until vacuum that index holds an entry
-- for every job the worker ever completed: a flush took 1.5 ms after 500 jobs and
-- 21 ms after 20,000. COALESCE keeps that index (and its implied predicate) out.
WITH done AS (
    DELETE FROM soleil.jobs j
    WHERE j.ctid = ANY (ARRAY(
        SELECT held.ctid
        FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS f(id, attempts)
        CROSS JOIN LATERAL (
            SELECT c.ctid FROM soleil.jobs c
            WHERE c.id = f.id AND c.attempts = f.attempts AND COALESCE(c.reserved_by, 0) = %(worker_id)s
        ) held
    ))
    RETURNING j.id
), stats AS (
    INSERT INTO soleil.queue_stats AS s (queue, minute, completed, failed, retried, runtime_ms, wait_ms)
    SELECT * FROM unnest(
        %(stat_queues)s::text[], %(stat_minutes)s::timestamptz[], %(stat_completed)s::bigint[],
        %(stat_failed)s::bigint[], %(stat_retried)s::bigint[], %(stat_runtime_ms)s::float8[],
        %(stat_wait_ms)s::float8[])
    ON CONFLICT (queue, minute) DO UPDATE SET
        completed = s.completed + excluded.completed,
        failed = s.failed + excluded.failed,
        retried = s.retried + excluded.retried,
        runtime_ms = s.runtime_ms + excluded.runtime_ms,
        wait_ms = s.wait_ms + excluded.wait_ms
)
SELECT count(*) FROM done;

-- name: job_fence :one
-- The fence of a transactional job, run first inside its transaction: deletes
-- (and so locks) the row only while this worker still holds this attempt. No
-- row: the lease was lost and the transaction must roll back. In the same round
-- trip it sets the transaction's statement_timeout, which bounds every statement
-- the handler sends (even one stuck where Python cannot interrupt it), and its
-- idle_in_transaction_session_timeout: a worker whose host died without closing
-- its connection would otherwise hold the row locked (and unrescuable) until TCP
-- noticed, hours later. A live worker never leaves its transaction idle that
-- long: past the job's timeout and grace it ends the session itself.
-- Sent through libpq's pipeline as a prepared statement (soleil/runner/transaction.py).
-- Returns the transaction id too, which tells a handler's own COMMIT statement
-- from its ROLLBACK (transaction_status), and the pid of the server session that
-- holds the transaction, which a worker giving up on the job terminates: the
-- client's backend_pid is PgBouncer's cancel key behind PgBouncer, not a pid.
DELETE FROM soleil.jobs
WHERE id = %(job_id)s AND reserved_by = %(worker_id)s AND attempts = %(attempt)s
  AND (SELECT set_config('statement_timeout', %(statement_timeout)s, true)) IS NOT NULL
  AND (SELECT set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true)) IS NOT NULL
RETURNING id, pg_current_xact_id()::text, pg_backend_pid();

-- name: job_fence_group :many
-- The fence of jobs joining an open transaction (a transaction group,
-- WorkerOptions.transaction_group): locks the rows of those this worker still
-- holds, in that attempt. Locked, not deleted: the group may commit before all
-- of them have run (job_delete_group then deletes those that did), and the
-- others stay reserved. Also sets the statement_timeout and the idle timeout, as
-- job_fence does.
SELECT j.id
FROM soleil.jobs j
JOIN unnest(%(job_ids)s::bigint[], %(attempts)s::integer[]) AS fenced(id, attempt)
  ON j.id = fenced.id AND j.attempts = fenced.attempt
WHERE j.reserved_by = %(worker_id)s
  AND (SELECT set_config('statement_timeout', %(statement_timeout)s, true)) IS NOT NULL
  AND (SELECT set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true)) IS NOT NULL
FOR UPDATE OF j;

-- name: job_delete_group :rowcount
-- The rows of a group's jobs that have run, deleted with the group's COMMIT
-- (they are locked by job_fence_group in the same transaction).
DELETE FROM soleil.jobs WHERE id = ANY (%(job_ids)s::bigint[]) AND reserved_by = %(worker_id)s;

-- name: transaction_status :one
-- Whether a transaction committed, after a handler ended it with its own statement.
SELECT pg_xact_status(%(xid)s::xid8);

-- name: job_retry_later :one
-- Put a failed attempt back in its queue after its backoff.
WITH retried AS (
    UPDATE soleil.jobs
    SET reserved_by = NULL,
        reserved_at = NULL,
        available_at = now() + make_interval(secs => %(delay)s)
    WHERE id = %(id)s AND reserved_by = %(worker_id)s AND attempts = %(attempts)s
    RETURNING id, queue, available_at
)
SELECT id, pg_notify('soleil:' || queue, extract(epoch FROM available_at)::text) FROM retried;

-- name: job_lock_held :one
-- The first statement of the move to failed_jobs: locks the job's row while this
-- worker still holds this attempt, so that the failed() hook runs only for a job
-- that is still this worker's to fail (not one rescued and claimed elsewhere, nor
-- one a move whose COMMIT reply was lost has already taken), and nothing can take
-- the row between the hook and the move (the rescue skips locked rows).
SELECT id FROM soleil.jobs
WHERE id = %(id)s AND reserved_by = %(worker_id)s AND attempts = %(attempts)s
FOR UPDATE;

-- name: job_move_to_failed :one
-- After the last try: the row leaves soleil.jobs and enters soleil.failed_jobs in
-- one statement (and in the transaction of the job's failed() hook). Returns the
-- transaction id too: when the connection fails around the COMMIT, the worker
-- asks whether it committed (transaction_status) before calling the move lost.
WITH moved AS (
    DELETE FROM soleil.jobs
    WHERE id = %(id)s AND reserved_by = %(worker_id)s AND attempts = %(attempts)s
    RETURNING id, queue, job, payload, attempts, priority, max_attempts
)
INSERT INTO soleil.failed_jobs (queue, job, payload, exception, attempts, priority, max_attempts, job_id)
SELECT queue, job, payload, %(exception)s, attempts, priority, max_attempts, id FROM moved
RETURNING uuid::text, pg_current_xact_id()::text;

-- name: job_release_lost_claim :rowcount
-- Give back the jobs of a claim whose reply never came (the connection broke
-- after its COMMIT). Nobody would rescue them: the worker is alive and
-- heartbeats. Sent only while the worker holds nothing else (no job claimed,
-- running or waiting for its completion to be written), so every row still
-- reserved for it is such a job. The attempt the claim counted is returned.
WITH released AS (
    UPDATE soleil.jobs j
    SET reserved_by = NULL, reserved_at = NULL, attempts = j.attempts - 1
    WHERE j.reserved_by = %(worker_id)s
    RETURNING j.queue
)
SELECT count(*) FROM released, LATERAL (SELECT pg_notify('soleil:' || released.queue, '0')) n;

-- name: job_release_many :rowcount
-- Give back jobs that were claimed but never started (graceful stop): the
-- attempt the claim counted is returned too.
WITH released AS (
    UPDATE soleil.jobs j
    SET reserved_by = NULL, reserved_at = NULL, attempts = j.attempts - 1
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS f(id, attempts)
    WHERE j.id = f.id AND j.attempts = f.attempts AND j.reserved_by = %(worker_id)s
    RETURNING j.queue
)
SELECT count(*) FROM released, LATERAL (SELECT pg_notify('soleil:' || released.queue, '0')) n;

-- name: job_lock_orphans :many
-- Jobs reserved by a worker that no longer has a row in soleil.workers (it
-- stopped heartbeating and was removed by worker_remove_dead): lock them for
-- job_rescue_orphans, run next in the same transaction. Rows locked by a live
-- transaction (a transactional job running) are skipped.
-- Locking is not enough to decide: a row freed by another rescuer and claimed
-- by a live worker after this statement's snapshot is locked all the same, as
-- PostgreSQL's re-check of a concurrently updated row (EvalPlanQual) does not
-- run NOT EXISTS again against a newer snapshot of soleil.workers.
SELECT j.id
FROM soleil.jobs j
WHERE j.reserved_by IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM soleil.workers w WHERE w.id = j.reserved_by)
ORDER BY j.id
FOR UPDATE SKIP LOCKED;

-- name: job_rescue_orphans :many
-- The jobs job_lock_orphans locked go back to their queue now, unless their
-- holder has a worker row after all. A statement of its own, so that this check
-- reads a snapshot taken after the rows were locked: it sees the claim of any
-- worker that took a row before the lock, and nobody can change the rows since.
-- Their attempt stays counted; a job with no tries left is failed as "worker
-- lost" by the next worker that claims it, which runs its failed() hook.
WITH rescued AS (
    UPDATE soleil.jobs j
    SET reserved_by = NULL, reserved_at = NULL, available_at = now()
    WHERE j.id = ANY (%(ids)s::bigint[])
      AND j.reserved_by IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM soleil.workers w WHERE w.id = j.reserved_by)
    RETURNING j.id, j.queue
)
SELECT r.queue, count(*) AS rescued, pg_notify('soleil:' || r.queue, '0') AS notified
FROM rescued r
GROUP BY r.queue;
