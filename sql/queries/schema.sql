-- Statements of the migrator (soleil/runner/migrate.py).

-- name: migration_lock :none
-- Two hosts running `migrate` at once queue up here; the lock ends with the transaction.
SELECT pg_advisory_xact_lock(hashtext('soleil.migrate'));

-- name: migration_table_create :none
CREATE SCHEMA IF NOT EXISTS soleil;
CREATE TABLE IF NOT EXISTS soleil.migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_applied :many
SELECT version FROM soleil.migrations ORDER BY version;

-- name: migration_record :none
INSERT INTO soleil.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: schema_version :one
-- The newest applied migration (NULL when the schema was never migrated).
SELECT CASE WHEN to_regclass('soleil.migrations') IS NULL THEN NULL
            ELSE (SELECT max(version) FROM soleil.migrations) END AS version;
