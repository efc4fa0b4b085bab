-- Least-privilege group roles (soleil/runner/grants.py, `soleil-runner grant`).
-- The role names are identifiers composed in with psycopg.sql ({dispatcher},
-- {worker}, {operator}); nothing else is interpolated. Roles are NOLOGIN groups:
-- grant them to the login roles the application and the workers use.

-- name: role_exists :one
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s);

-- name: role_create :none
CREATE ROLE {role} NOLOGIN;

-- name: role_revoke_all :none
-- Start from nothing, so that re-running `grant` after an upgrade also removes
-- privileges a newer version no longer gives.
REVOKE ALL ON ALL TABLES IN SCHEMA soleil FROM {dispatcher}, {worker}, {operator};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA soleil FROM {dispatcher}, {worker}, {operator};
REVOKE ALL ON SCHEMA soleil FROM {dispatcher}, {worker}, {operator};

-- name: role_grant_dispatcher :none
-- Dispatch only: insert jobs (one row or COPY) and take ids. The RETURNING of a
-- dispatch needs the id, queue and due time back, and ON CONFLICT (unique_key)
-- needs to read unique_key; payloads stay unreadable, and nothing can be updated
-- or deleted.
GRANT USAGE ON SCHEMA soleil TO {dispatcher};
GRANT SELECT ON soleil.migrations TO {dispatcher};
GRANT INSERT ON soleil.jobs TO {dispatcher};
GRANT SELECT (id, queue, available_at, unique_key) ON soleil.jobs TO {dispatcher};
GRANT USAGE ON SEQUENCE soleil.jobs_id_seq TO {dispatcher};

-- name: role_grant_worker :none
-- Claim, complete, retry and fail jobs; register and heartbeat; add statistics;
-- read queue control. Jobs may dispatch jobs, so workers insert too. No DDL:
-- no CREATE on the schema, and only the owner may ALTER or DROP its tables.
GRANT USAGE ON SCHEMA soleil TO {worker};
GRANT SELECT ON soleil.migrations, soleil.queue_control, soleil.settings TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON soleil.jobs TO {worker};
GRANT USAGE ON SEQUENCE soleil.jobs_id_seq TO {worker};
GRANT INSERT ON soleil.failed_jobs TO {worker};
GRANT SELECT (uuid) ON soleil.failed_jobs TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON soleil.workers TO {worker};
GRANT SELECT, INSERT, UPDATE ON soleil.queue_stats TO {worker};

-- name: role_grant_operator :none
-- Operations: read everything (status, failed jobs), retry, forget and flush
-- failed jobs, clear and pause queues, request restarts, prune statistics. No DDL.
GRANT USAGE ON SCHEMA soleil TO {operator};
GRANT SELECT ON ALL TABLES IN SCHEMA soleil TO {operator};
GRANT INSERT, UPDATE, DELETE ON soleil.jobs, soleil.failed_jobs, soleil.queue_control, soleil.settings
    TO {operator};
GRANT DELETE ON soleil.workers, soleil.queue_stats TO {operator};
GRANT USAGE ON SEQUENCE soleil.jobs_id_seq TO {operator};
