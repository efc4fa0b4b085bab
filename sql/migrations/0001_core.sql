-- Soleil core schema: jobs, failed jobs, workers, per-minute queue statistics.
-- Applied by `soleil-runner migrate`; every migration runs once, in order,
-- inside one transaction, under an advisory lock (see soleil/runner/migrate.py).

CREATE SCHEMA IF NOT EXISTS soleil;

-- Ids are taken from an explicit sequence so the bulk path can reserve a block
-- of ids with one nextval() call and COPY rows with their ids already known.
CREATE SEQUENCE soleil.jobs_id_seq AS bigint;

CREATE TABLE soleil.jobs (
    id           bigint      NOT NULL DEFAULT nextval('soleil.jobs_id_seq') PRIMARY KEY,
    queue        text        NOT NULL,
    job          text        NOT NULL,
    payload      jsonb       NOT NULL,
    priority     integer     NOT NULL DEFAULT 0,
    attempts     integer     NOT NULL DEFAULT 0,
    -- NULL: the worker's --tries applies.
    max_attempts integer     CHECK (max_attempts IS NULL OR max_attempts >= 1),
    available_at timestamptz NOT NULL DEFAULT now(),
    reserved_at  timestamptz,
    -- soleil.workers.id of the worker holding the job; no foreign key, so a claim
    -- does not pay for a lookup per row, and a worker row can vanish first.
    reserved_by  bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    unique_key   text,
    CONSTRAINT jobs_queue_name CHECK (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    CONSTRAINT jobs_reserved_pair CHECK ((reserved_by IS NULL) = (reserved_at IS NULL))
);
ALTER SEQUENCE soleil.jobs_id_seq OWNED BY soleil.jobs.id;

-- The claim index: only waiting rows, in the exact order the claim reads them,
-- so a claim is one short index range scan whatever the backlog.
CREATE INDEX jobs_claim_idx ON soleil.jobs (queue, priority DESC, available_at, id)
    WHERE reserved_by IS NULL;
-- The rescuer and `status` look reserved rows up by worker.
CREATE INDEX jobs_reserved_by_idx ON soleil.jobs (reserved_by) WHERE reserved_by IS NOT NULL;
-- A unique key is unique while its job exists (queued or running).
CREATE UNIQUE INDEX jobs_unique_key_idx ON soleil.jobs (unique_key) WHERE unique_key IS NOT NULL;

-- The jobs table is a queue: rows live for milliseconds. Vacuum it early and
-- without throttling so dead tuples do not pile up in front of the claim index.
ALTER TABLE soleil.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02,
    fillfactor = 90
);

CREATE TABLE soleil.failed_jobs (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid       uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    queue      text        NOT NULL,
    job        text        NOT NULL,
    payload    jsonb       NOT NULL,
    exception  text        NOT NULL,
    attempts   integer     NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    -- Kept so `failed retry` can restore the job as it was dispatched.
    priority     integer   NOT NULL DEFAULT 0,
    max_attempts integer,
    job_id     bigint
);
CREATE INDEX failed_jobs_failed_at_idx ON soleil.failed_jobs (failed_at DESC);
CREATE INDEX failed_jobs_queue_idx ON soleil.failed_jobs (queue, failed_at DESC);

CREATE TABLE soleil.workers (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    running      integer     NOT NULL DEFAULT 0
);
CREATE INDEX workers_heartbeat_idx ON soleil.workers (heartbeat_at);

-- Per-minute, per-queue counters. Workers add to them once per completion batch,
-- never once per job.
CREATE TABLE soleil.queue_stats (
    queue       text        NOT NULL,
    minute      timestamptz NOT NULL,
    completed   bigint      NOT NULL DEFAULT 0,
    failed      bigint      NOT NULL DEFAULT 0,
    retried     bigint      NOT NULL DEFAULT 0,
    runtime_ms  double precision NOT NULL DEFAULT 0,  -- sum over completed jobs
    wait_ms     double precision NOT NULL DEFAULT 0,  -- sum of (started - available)
    PRIMARY KEY (queue, minute)
);

-- Queue control travels through the database: a paused queue is not claimed,
-- and a restart request makes every worker started before it exit gracefully.
CREATE TABLE soleil.queue_control (
    queue      text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE soleil.settings (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Finds the earliest delayed job per queue, so an idle worker sleeps exactly
-- until it is due (job_next_available_at).
CREATE INDEX jobs_available_at_idx ON soleil.jobs (queue, available_at)
    WHERE reserved_by IS NULL;
