-- Statements of the migrator (soleil/runner/migrate.py). `{schema}` is the
-- schema whose migrations are tracked (soleil, or an application's own), filled
-- in as a quoted identifier by migrate.apply_migrations.

-- name: migration_lock :none
-- Two hosts running `migrate` at once queue up here; the lock ends with the transaction.
SELECT pg_advisory_xact_lock(hashtext(%(lock_name)s));

-- name: migration_table_create :none
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_applied :many
SELECT version FROM {schema}.migrations ORDER BY version;

-- name: migration_record :none
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: schema_migrations_exists :one
-- Asked before schema_version: a statement naming a missing table fails when it
-- is parsed, even in a CASE branch that would never run.
SELECT to_regclass('soleil.migrations') IS NOT NULL;

-- name: schema_version :one
-- The newest applied migration (NULL when none was recorded).
SELECT max(version) AS version FROM soleil.migrations;
