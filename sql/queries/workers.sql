-- Statements on soleil.workers: registration, heartbeat (the lease of every job
-- a worker holds) and the removal of workers that stopped heartbeating.

-- name: worker_register :one
INSERT INTO soleil.workers (host, pid, queues, concurrency)
VALUES (%(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
RETURNING id;

-- name: worker_heartbeat :one
-- Renews the lease of every job this worker holds. Re-inserts the row (same id)
-- when another worker removed it for being silent: this worker's old jobs were
-- rescued already and their completions are fenced out.
INSERT INTO soleil.workers (id, host, pid, queues, concurrency, running, heartbeat_at)
OVERRIDING SYSTEM VALUE
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(running)s, now())
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), running = excluded.running
RETURNING (xmax = 0) AS was_missing;

-- name: worker_remove_dead :many
-- Workers silent for longer than the lease are gone; job_rescue_orphans then
-- frees their jobs in the same transaction.
DELETE FROM soleil.workers
WHERE heartbeat_at < now() - make_interval(secs => %(lease_seconds)s)
RETURNING id, host, pid;

-- name: worker_unregister :none
-- A worker that stops gracefully removes itself and gives back what it still holds.
WITH gone AS (
    DELETE FROM soleil.workers WHERE id = %(id)s
)
UPDATE soleil.jobs SET reserved_by = NULL, reserved_at = NULL, available_at = now()
WHERE reserved_by = %(id)s;

-- name: backend_terminate :none
-- End these sessions: their open transactions roll back and release the job rows
-- they hold (an abandoned job's, or those of jobs still running at a hard stop).
SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid;
