-- Statements behind `soleil-runner status` and `monitor` (soleil/runner/status.py).
-- They read; they never lock a job row.

-- name: status_queues :many
-- One row per known queue: its jobs by state, its failed jobs, its pause flag,
-- and its counters from queue_stats. "Last minute" counts the previous full
-- minute and the current one so far; "last hour" the same way in hours.
-- Averages cover the last hour. Times are in seconds (ages) and ms (averages).
WITH jobs AS (
    SELECT queue,
           count(*) FILTER (WHERE reserved_by IS NULL AND available_at <= now()) AS ready,
           count(*) FILTER (WHERE reserved_by IS NULL AND available_at > now()) AS delayed,
           count(*) FILTER (WHERE reserved_by IS NOT NULL) AS reserved,
           min(available_at) FILTER (WHERE reserved_by IS NULL AND available_at <= now()) AS oldest_ready
    FROM soleil.jobs
    GROUP BY queue
), failed AS (
    SELECT queue, count(*) AS failed FROM soleil.failed_jobs GROUP BY queue
), stats AS (
    SELECT queue,
           sum(completed) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '1 minute')
               AS completed_1m,
           sum(failed) FILTER (WHERE minute >= date_trunc('minute', now()) - interval '1 minute')
               AS failed_1m,
           sum(completed) AS completed_1h,
           sum(failed) AS failed_1h,
           (sum(runtime_ms) / NULLIF(sum(completed), 0))::float8 AS avg_runtime_ms,
           (sum(wait_ms) / NULLIF(sum(completed), 0))::float8 AS avg_wait_ms
    FROM soleil.queue_stats
    WHERE minute >= date_trunc('minute', now()) - interval '1 hour'
    GROUP BY queue
), known AS (
    SELECT queue FROM jobs
    UNION SELECT queue FROM failed
    UNION SELECT queue FROM stats
    UNION SELECT queue FROM soleil.queue_control
    UNION SELECT unnest(queues) FROM soleil.workers
)
SELECT k.queue,
       COALESCE(j.ready, 0) AS ready,
       COALESCE(j.delayed, 0) AS delayed,
       COALESCE(j.reserved, 0) AS reserved,
       COALESCE(f.failed, 0) AS failed,
       extract(epoch FROM now() - j.oldest_ready)::float8 AS oldest_ready_age_s,
       COALESCE(s.completed_1m, 0)::bigint AS completed_1m,
       COALESCE(s.failed_1m, 0)::bigint AS failed_1m,
       COALESCE(s.completed_1h, 0)::bigint AS completed_1h,
       COALESCE(s.failed_1h, 0)::bigint AS failed_1h,
       s.avg_runtime_ms,
       s.avg_wait_ms,
       COALESCE(c.paused, false) AS paused
FROM known k
LEFT JOIN jobs j USING (queue)
LEFT JOIN failed f USING (queue)
LEFT JOIN stats s USING (queue)
LEFT JOIN soleil.queue_control c USING (queue)
ORDER BY k.queue;

-- name: status_workers :many
-- The registered workers; `paused` lists those of its queues that are paused
-- (workers read soleil.queue_control every second, so this is what they obey).
-- A worker whose heartbeat is older than its lease is about to be rescued.
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.running, w.started_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_s,
       w.lease_seconds AS lease_s,
       ARRAY(SELECT c.queue FROM soleil.queue_control c
             WHERE c.paused AND c.queue = ANY(w.queues) ORDER BY c.queue) AS paused
FROM soleil.workers w
ORDER BY w.host, w.pid, w.id;

-- name: status_ready_counts :many
-- Ready jobs of the given queues (monitor); each count is one claim-index range scan.
SELECT q.name AS queue,
       (SELECT count(*) FROM soleil.jobs j
        WHERE j.queue = q.name AND j.reserved_by IS NULL AND j.available_at <= now()) AS ready
FROM unnest(%(queues)s::text[]) AS q(name);

-- name: status_queue_job_count :one
-- Every job of one queue, whatever its state (the size of `queue clear`).
SELECT count(*) FROM soleil.jobs WHERE queue = %(queue)s;
