-- The claim moves into a function so that its plan is made once per session.
-- As a plain prepared statement, PostgreSQL re-planned it on every call (its
-- custom plans looked cheaper than the generic one): 0.25–0.3 ms of an idle
-- worker's pickup and of every claim under load. The SET clause fixes the
-- generic plan, an index plan like the custom ones (tests/integration/test_claim.py);
-- it applies inside the function only. The generic plan cannot know how many
-- jobs `picked` holds, so the UPDATE looks them up by primary key through an
-- array: a join let it hash-join against a scan of the whole table. For the
-- same reason its estimated cost grows with the queue (LIMIT p_limit is
-- costed as a tenth of the rows), and past jit_above_cost PostgreSQL compiled
-- the statement with JIT on every call: 10-12 ms per claim behind 300,000
-- queued jobs, 140 ms behind a million. jit = off keeps it at its 0.3 ms.
--
-- What the statement does:
-- Reserve up to p_limit ready jobs for a worker, queues in strict priority
-- order (the lateral scan only reaches the next queue when the one before it
-- ran dry), each queue read through jobs_claim_idx. The attempt counts now, as
-- in Laravel, so a run killed by SIGKILL still counts. The effective tries are
-- written on the row so a rescuer knows them without the worker's settings.
-- Within a queue, each priority that has waiting jobs is read on its own,
-- highest first (soleil.waiting_priorities, a loose index scan): delayed jobs of
-- a higher priority are stepped over, not read one by one on every claim.
-- The claim commits without waiting for its WAL flush (synchronous_commit off
-- for the caller's transaction, which set_config's is_local keeps beyond this
-- function): that flush is most of an idle pickup's time. A claim can only be
-- lost if the server crashes before the next durable commit (the job's
-- completion flushes it too); the job is then simply claimed again and the
-- first run's completion is fenced out. See docs/guarantees.md.
CREATE FUNCTION soleil.claim_jobs(p_queues text[], p_limit integer, p_worker_id bigint, p_default_tries integer)
RETURNS TABLE (
    id bigint, queue text, job text, payload text, priority integer, attempt integer,
    max_attempts integer, available_epoch double precision, reserved_epoch double precision
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT ready.id
        FROM unnest(p_queues) WITH ORDINALITY AS q(name, position)
        CROSS JOIN LATERAL soleil.waiting_priorities(q.name) AS level(priority)
        CROSS JOIN LATERAL (
            SELECT j.id
            FROM soleil.jobs j
            WHERE j.queue = q.name
              AND j.priority = level.priority
              AND j.reserved_by IS NULL
              AND j.available_at <= now()
            ORDER BY j.available_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) ready
        LIMIT p_limit
    )
    UPDATE soleil.jobs j
    SET attempts = j.attempts + 1,
        reserved_at = now(),
        reserved_by = p_worker_id,
        max_attempts = COALESCE(j.max_attempts, p_default_tries)
    WHERE j.id = ANY (ARRAY(SELECT picked.id FROM picked))
    RETURNING j.id, j.queue, j.job, j.payload::text, j.priority, j.attempts, j.max_attempts,
              extract(epoch FROM j.available_at)::float8,
              extract(epoch FROM j.reserved_at)::float8;
END
$$;
