-- The next-due look-up now reads jobs_claim_idx (one descent per waiting
-- priority), so this index only cost every insert, claim and completion one more
-- btree entry to maintain.
DROP INDEX IF EXISTS soleil.jobs_available_at_idx;
