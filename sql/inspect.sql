-- Soleil inspection queries for operators: paste any of them into psql.
--
--   psql "$SOLEIL_DATABASE_URL" -f sql/inspect.sql     (runs them all)
--
-- They only read, never lock a job row, and need no parameters (edit the
-- literals marked "adjust"). Each is documented in docs/operations.md and run
-- against a real database by tests/integration/test_ops_inspect.py.

-- name: queue_depth :many
-- Depth per queue: jobs ready now, delayed (available later) and reserved by a
-- worker, plus the age of the oldest ready job.
SELECT queue,
       count(*) FILTER (WHERE reserved_by IS NULL AND available_at <= now()) AS ready,
       count(*) FILTER (WHERE reserved_by IS NULL AND available_at > now()) AS delayed,
       count(*) FILTER (WHERE reserved_by IS NOT NULL) AS reserved,
       date_trunc('second', now() - min(available_at)
                 FILTER (WHERE reserved_by IS NULL AND available_at <= now())) AS oldest_ready_age
FROM soleil.jobs
GROUP BY queue
ORDER BY queue;

-- name: oldest_waiting_job :many
-- The job that has waited longest in each queue (ready, not yet claimed): the
-- next one a worker takes is the highest priority, so a high age here means a
-- starved low-priority job or no worker on that queue.
SELECT DISTINCT ON (queue)
       queue, id, job, priority, attempts, available_at,
       date_trunc('second', now() - available_at) AS waiting_for
FROM soleil.jobs
WHERE reserved_by IS NULL AND available_at <= now()
ORDER BY queue, available_at, id;

-- name: jobs_of_silent_workers :many
-- Jobs reserved by a worker silent for longer than its own lease (two of its
-- heartbeat intervals, as the rescuers judge it) or whose worker row is gone.
-- A live worker rescues these on its own; rows here for minutes mean no
-- worker runs at all for that queue.
SELECT j.id, j.queue, j.job, j.attempts, j.reserved_at, j.reserved_by,
       w.host, w.pid, date_trunc('second', now() - w.heartbeat_at) AS silent_for,
       w.lease_seconds
FROM soleil.jobs j
LEFT JOIN soleil.workers w ON w.id = j.reserved_by
WHERE j.reserved_by IS NOT NULL
  -- no lease_seconds: a worker of the code before migration 0006, default --heartbeat assumed
  AND (w.id IS NULL OR w.heartbeat_at < now() - make_interval(secs => COALESCE(w.lease_seconds, 20)))
ORDER BY j.reserved_at, j.id;

-- name: failed_by_exception :many
-- Failed jobs grouped by queue, job and the exception's first line
-- ("Type: message"), the biggest groups first, with one uuid to pass to
-- `soleil-runner failed show`.
SELECT queue, job, split_part(exception, E'\n', 1) AS error, count(*) AS failed,
       min(failed_at) AS first_failed_at, max(failed_at) AS last_failed_at,
       (array_agg(uuid ORDER BY failed_at DESC))[1] AS latest_uuid
FROM soleil.failed_jobs
GROUP BY queue, job, split_part(exception, E'\n', 1)
ORDER BY count(*) DESC, queue, job
LIMIT 50;

-- name: throughput_per_minute :many
-- Jobs completed, failed and retried per minute and queue over the last hour
-- (adjust the interval), with average runtime and wait (ready -> started).
SELECT minute, queue, completed, failed, retried,
       round((runtime_ms / NULLIF(completed, 0))::numeric, 1) AS avg_runtime_ms,
       round((wait_ms / NULLIF(completed, 0))::numeric, 1) AS avg_wait_ms
FROM soleil.queue_stats
WHERE minute >= date_trunc('minute', now()) - interval '1 hour'
ORDER BY minute DESC, queue;

-- name: paused_queues :many
-- Queues that workers do not claim from (`soleil-runner queue resume Q` undoes it).
SELECT queue, updated_at AS paused_since
FROM soleil.queue_control
WHERE paused
ORDER BY queue;
