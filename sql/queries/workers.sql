-- Statements on soleil.workers: registration, heartbeat (the lease of every job
-- a worker holds) and the removal of workers that stopped heartbeating.

-- name: worker_register :one
-- lease_seconds: how long this worker may stay silent before others rescue its jobs.
INSERT INTO soleil.workers (host, pid, queues, concurrency, lease_seconds)
VALUES (%(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(lease_seconds)s)
RETURNING id;

-- name: worker_heartbeat :one
-- Renews the lease of every job this worker holds. Re-inserts the row (same id)
-- when another worker removed it for being silent: this worker's old jobs were
-- rescued already and their completions are fenced out.
INSERT INTO soleil.workers (id, host, pid, queues, concurrency, running, heartbeat_at, lease_seconds)
OVERRIDING SYSTEM VALUE
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(running)s, now(), %(lease_seconds)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), running = excluded.running, lease_seconds = excluded.lease_seconds
RETURNING (xmax = 0) AS was_missing;

-- name: worker_remove_dead :many
-- Workers silent for longer than their own lease are gone; job_rescue_orphans
-- then frees their jobs in the same transaction. Silence proves death only while
-- the database could be reached all along, so a worker is kept:
-- - while the server has been up for less than its lease: after a restart (or
--   crash) nobody could heartbeat, whether or not this rescuer noticed it;
-- - while its lease is longer than %(healthy_seconds)s, how long this rescuer
--   itself has heartbeated without a break (Worker._rescue): a rescuer back
--   from an outage or a network cut cannot tell a dead worker from one that was
--   cut off too, until that worker has had a whole lease to heartbeat again.
-- A worker of the code before migration 0006 has no lease of its own written:
-- it is judged by the rescuer's, %(own_lease)s, as before.
DELETE FROM soleil.workers w
WHERE w.heartbeat_at < now() - make_interval(secs => COALESCE(w.lease_seconds, %(own_lease)s))
  AND COALESCE(w.lease_seconds, %(own_lease)s) <= %(healthy_seconds)s
  AND pg_postmaster_start_time() < now() - make_interval(secs => COALESCE(w.lease_seconds, %(own_lease)s))
RETURNING w.id, w.host, w.pid;

-- name: worker_unregister :none
-- A worker that stops removes itself and gives back what it still holds, but only
-- the rows it can lock at once. A row locked now is held by an outcome of this
-- worker still being written at a hard stop (a failed() hook that is slow or
-- hangs); waiting for it would hang the stop. That outcome is fenced by worker and
-- attempt and still moves or retries the job when it commits; if it never does
-- (the process exits and its transaction rolls back), the row is left reserved by
-- a worker without a row here, and the next rescue of any worker gives it back
-- (job_lock_orphans, job_rescue_orphans).
WITH gone AS (
    DELETE FROM soleil.workers WHERE id = %(id)s
), free AS (
    SELECT id FROM soleil.jobs WHERE reserved_by = %(id)s
    FOR UPDATE SKIP LOCKED
)
UPDATE soleil.jobs j SET reserved_by = NULL, reserved_at = NULL, available_at = now()
FROM free
WHERE j.id = free.id AND j.reserved_by = %(id)s;

-- name: backend_terminate :many
-- End these sessions: their open transactions roll back and release the job rows
-- they hold (an abandoned job's, or those of jobs still running at a hard stop).
-- Returns those it could not signal: pg_terminate_backend returns false, with a
-- warning, for a pid that is no client session, one that has ended by itself
-- among them (backend_alive tells those apart). A role not allowed to signal
-- one makes the statement fail.
SELECT pid FROM unnest(%(pids)s::int[]) AS pid WHERE NOT pg_terminate_backend(pid);

-- name: backend_alive :many
-- Which of these sessions have not ended yet. A session leaves pg_stat_activity
-- only once its transaction has rolled back and its row locks are released.
SELECT pid FROM pg_stat_activity WHERE pid = ANY (%(pids)s::int[]);
