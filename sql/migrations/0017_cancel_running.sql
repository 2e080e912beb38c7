-- qmaint jobs cancel also cancels running jobs, and says how many of each it
-- cancelled: qmaint.cancel_jobs() now returns (job_id, was_running) instead
-- of the bare ids. A function's return type cannot be changed by CREATE OR
-- REPLACE, so the old one goes here; sql/functions/02_queue.sql creates the
-- new one in the same migrate.
DROP FUNCTION IF EXISTS qmaint.cancel_jobs(bigint[], text, timestamptz);
