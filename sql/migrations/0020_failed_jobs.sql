-- Where health's failed_jobs check finds the recent failures: each job that
-- failed for good, with the time of its latest failure. The check used to
-- read them from qmaint.jobs through the failed-jobs partial index, which
-- meant planning and reading every partition, since a job created long ago can
-- fail now: at 10 million jobs in 1,000 partitions that was 0.47-0.64 s of a
-- 0.84 s health run. Now it takes the failures of its two windows from here
-- and checks only those against qmaint.jobs (02_queue.sql, 05_health.sql).
--
-- The trigger qmaint_job_finished writes the row when a queued or running job
-- becomes failed (a job that fails again gets its new time). Nothing else
-- touches the table: a job retried or deleted keeps its row, and the check
-- leaves it out because the job is no longer failed. So only a failing job
-- writes anything more. The rows of partitions that are gone are removed by
-- the next rotate (advance_low_water).
CREATE TABLE qmaint.failed_jobs (
  job_id     bigint NOT NULL,
  created_at timestamp(3) with time zone NOT NULL,
  failed_at  timestamptz NOT NULL,
  PRIMARY KEY (job_id, created_at)
);
CREATE INDEX failed_jobs_failed_at_idx ON qmaint.failed_jobs (failed_at);

-- The jobs failed so far (read through the failed partial index). No job may
-- fail between this copy and the trigger's new body, which the function files
-- create later in migrate's transaction: until it commits,
-- every write to qmaint.jobs waits, claims included (reads do not).
LOCK TABLE qmaint.jobs IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO qmaint.failed_jobs (job_id, created_at, failed_at)
SELECT id, created_at, updated_at FROM qmaint.jobs WHERE status = 'failed';
