-- Statements on soleil.failed_jobs: what operators do with jobs that used up
-- their tries (soleil/runner/failed.py, `soleil-runner failed ...`).

-- name: failed_list :many
-- Newest first, with the exception's first line only (the traceback can be long).
SELECT uuid::text, failed_at, queue, job, attempts, split_part(exception, E'\n', 1) AS error
FROM soleil.failed_jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s;

-- name: failed_count :one
SELECT count(*) FROM soleil.failed_jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(hours)s::float8 IS NULL OR failed_at < now() - make_interval(secs => %(hours)s::float8 * 3600));

-- name: failed_get :one
-- Everything about one failed job, the full traceback and payload included.
SELECT uuid::text, failed_at, queue, job, attempts, max_attempts, priority, job_id, exception, payload
FROM soleil.failed_jobs
WHERE uuid = %(uuid)s::uuid;

-- name: failed_retry_chunk :many
-- Put back the next chunk of failed jobs (of one queue, or all) in one statement:
-- the rows leave failed_jobs and enter jobs together, so a killed command loses
-- and duplicates nothing. SKIP LOCKED, in id order, lets two operators run it
-- at once without taking the same rows or deadlocking. Attempts start again
-- from zero; one wake-up per queue per chunk.
WITH picked AS MATERIALIZED (
    SELECT id
    FROM soleil.failed_jobs
    WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM soleil.failed_jobs f
    USING picked
    WHERE f.id = picked.id
    RETURNING f.id, f.queue, f.job, f.payload, f.priority, f.max_attempts
), inserted AS (
    INSERT INTO soleil.jobs (queue, job, payload, priority, max_attempts)
    SELECT queue, job, payload, priority, max_attempts FROM moved ORDER BY id
    RETURNING queue
)
SELECT queue, count(*) AS retried, pg_notify('soleil:' || queue, '0') AS notified
FROM inserted
GROUP BY queue;

-- name: failed_retry_uuids :many
-- The same move for the failed jobs named by uuid. Waits for rows another
-- operator holds (no SKIP LOCKED), so a uuid is only reported missing when it
-- really is gone. Returns the uuids it put back.
WITH picked AS MATERIALIZED (
    SELECT id
    FROM soleil.failed_jobs
    WHERE uuid = ANY(%(uuids)s::uuid[])
    ORDER BY id
    FOR UPDATE
), moved AS (
    DELETE FROM soleil.failed_jobs f
    USING picked
    WHERE f.id = picked.id
    RETURNING f.id, f.uuid, f.queue, f.job, f.payload, f.priority, f.max_attempts
), inserted AS (
    INSERT INTO soleil.jobs (queue, job, payload, priority, max_attempts)
    SELECT queue, job, payload, priority, max_attempts FROM moved ORDER BY id
    RETURNING queue
), notified AS (
    SELECT queue, pg_notify('soleil:' || queue, '0') FROM inserted GROUP BY queue
)
SELECT moved.uuid::text, (SELECT count(*) FROM notified) AS queues FROM moved;

-- name: failed_forget :one
DELETE FROM soleil.failed_jobs WHERE uuid = %(uuid)s::uuid RETURNING uuid::text;

-- name: failed_delete_chunk :rowcount
-- Delete the next chunk of failed jobs older than %(hours)s (NULL: all), in id
-- order; short statements keep locks and WAL bursts small on big tables.
DELETE FROM soleil.failed_jobs
WHERE id IN (
    SELECT id
    FROM soleil.failed_jobs
    WHERE (%(hours)s::float8 IS NULL OR failed_at < now() - make_interval(secs => %(hours)s::float8 * 3600))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);
