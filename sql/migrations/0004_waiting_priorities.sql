-- The priorities that have waiting jobs in a queue, highest first, each found by
-- one descent of jobs_claim_idx (a loose index scan). The claim reads each
-- priority's range on its own with available_at as a bound, so delayed jobs of a
-- higher priority are stepped over instead of read on every claim; the next-due
-- look-up takes each priority's first entry. A plain SQL function, so the planner
-- inlines it into both statements.
CREATE FUNCTION soleil.waiting_priorities(queue_name text) RETURNS SETOF integer
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH RECURSIVE levels(priority) AS (
        (SELECT j.priority FROM soleil.jobs j
         WHERE j.queue = queue_name AND j.reserved_by IS NULL
         ORDER BY j.priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT j.priority FROM soleil.jobs j
                WHERE j.queue = queue_name AND j.reserved_by IS NULL AND j.priority < levels.priority
                ORDER BY j.priority DESC LIMIT 1)
        FROM levels
        WHERE levels.priority IS NOT NULL
    )
    SELECT levels.priority FROM levels WHERE levels.priority IS NOT NULL
$$;
