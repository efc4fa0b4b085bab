-- Each worker's own lease, in seconds (two of its heartbeat intervals). Workers
-- may run with different --heartbeat values, so a rescuer judges every worker by
-- the lease that worker promised, not by its own (worker_remove_dead).
-- Workers started before this migration do not write it: NULL, and a rescuer
-- judges them by its own lease, as every rescuer did before (a default would
-- misjudge a fleet running another --heartbeat). They write theirs once restarted.
ALTER TABLE soleil.workers
    ADD COLUMN lease_seconds double precision
    CONSTRAINT workers_lease_positive CHECK (lease_seconds > 0);
