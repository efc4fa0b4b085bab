-- Each worker's own lease, in seconds (two of its heartbeat intervals). Workers
-- may run with different --heartbeat values, so a rescuer judges every worker by
-- the lease that worker promised, not by its own (worker_remove_dead).
-- Rows of workers started before this migration get the default lease, that of
-- the default --heartbeat (10 s); they write their own once restarted.
ALTER TABLE soleil.workers
    ADD COLUMN lease_seconds double precision NOT NULL DEFAULT 20
    CONSTRAINT workers_lease_positive CHECK (lease_seconds > 0);
