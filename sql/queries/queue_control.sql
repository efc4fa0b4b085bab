-- Statements on soleil.queue_control and soleil.settings: pause, resume and
-- restart travel through the database as a durable row plus a NOTIFY on
-- `soleil:control`; workers act on the NOTIFY at once and re-read the rows every
-- second in case their listener missed it (soleil/runner/control.py).

-- name: queue_set_paused :none
-- Pause or resume one queue: the row and the notification commit together.
WITH saved AS (
    INSERT INTO soleil.queue_control (queue, paused, updated_at)
    VALUES (%(queue)s, %(paused)s, now())
    ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, updated_at = now()
    RETURNING queue, paused
)
SELECT pg_notify('soleil:control', CASE WHEN paused THEN 'pause:' ELSE 'resume:' END || queue),
       CASE WHEN paused THEN NULL ELSE pg_notify('soleil:' || queue, '0') END
FROM saved;

-- name: restart_request :one
-- Ask every running worker to exit 0 after its current jobs. The value is new
-- each time; a worker exits when it differs from the one it saw at start.
WITH saved AS (
    INSERT INTO soleil.settings (key, value, updated_at)
    VALUES ('restart_requested_at', clock_timestamp()::text, now())
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()
    RETURNING value
)
SELECT value, pg_notify('soleil:control', 'restart') FROM saved;

-- name: control_state :one
-- A worker's once-a-second read: which of its queues are paused, and the
-- current restart token (NULL: no restart was ever requested).
SELECT ARRAY(SELECT queue FROM soleil.queue_control
             WHERE paused AND queue = ANY(%(queues)s::text[])) AS paused,
       (SELECT value FROM soleil.settings WHERE key = 'restart_requested_at') AS restart_token;

-- name: queue_clear_chunk :rowcount
-- Delete the next chunk of a queue's jobs, reserved ones included (as Laravel's
-- queue:clear); a worker still running one finds its completion fenced out.
DELETE FROM soleil.jobs
WHERE id IN (
    SELECT id FROM soleil.jobs
    WHERE queue = %(queue)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);
