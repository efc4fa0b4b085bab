-- Queue names are validated by the runner before any SQL (soleil/runner/names.py).
-- The character check repeated here cost a regular-expression match per row: a
-- fifth of the bulk path's server time. The table keeps what PostgreSQL itself
-- needs: a name that fits a LISTEN channel ('soleil:' + queue, at most 63 bytes).
-- A row written behind the runner's back with any other name is inert: no worker
-- can be started on an invalid queue name, so none claims it.
ALTER TABLE soleil.jobs DROP CONSTRAINT jobs_queue_name;
ALTER TABLE soleil.jobs ADD CONSTRAINT jobs_queue_name CHECK (octet_length(queue) BETWEEN 1 AND 56);
