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

-- name: schema_migrations_exists :one
-- Asked before schema_version: a statement naming a missing table fails when it
-- is parsed, even in a CASE branch that would never run.
SELECT to_regclass('soleil.migrations') IS NOT NULL;

-- name: schema_version :one
-- The newest applied migration (NULL when none was recorded).
SELECT max(version) AS version FROM soleil.migrations;
