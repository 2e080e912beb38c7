-- Queue features: unique job keys, the cancelled status, pause and resume,
-- dead-letter queues. See docs/queue.md ("Unique jobs", "Job control").
--
-- cancelled: a job stopped on purpose ends here, apart from failed (which the
-- failed-jobs health check and the failure counts watch). A value added to an
-- enum cannot be used in the transaction that adds it, and `qmaint migrate`
-- runs migrations and function files in one transaction: nothing created in
-- that transaction may read 'cancelled' as a job_status (function bodies
-- compare status::text, or are PL/pgSQL, parsed when first run).
ALTER TYPE qmaint.job_status ADD VALUE IF NOT EXISTS 'cancelled';

-- job_key: the unique key a job holds while it is live (queued or running),
-- NULL for a job without one. Nullable without a default: metadata only, no
-- rewrite of any partition.
ALTER TABLE qmaint.jobs ADD COLUMN job_key text;

-- The keys held by live jobs, one row per (queue, key). A unique index on the
-- partitioned qmaint.jobs would have to include created_at (the partition
-- key), so it could not say "one live job per key" across partitions. This
-- table is not partitioned: its primary key is the uniqueness, taken by
-- INSERT ... ON CONFLICT in the enqueue's own transaction (qmaint.enqueue_keyed),
-- and a row leaves when its job leaves queued/running (trigger
-- qmaint_release_key on qmaint.jobs). The job is found by id only: a straggler
-- move changes a queued job's created_at.
CREATE TABLE qmaint.job_keys (
  queue      text NOT NULL,
  key        text NOT NULL CHECK (key <> '' AND length(key) <= 512),
  job_id     bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (queue, key)
);
CREATE INDEX job_keys_job_idx ON qmaint.job_keys (job_id);

-- paused: consumers claim nothing from the queue (running jobs finish).
-- dead_letter: the queue a job of this queue is moved to when it fails for
-- good (status stays failed; qmaint jobs redrive puts it back).
ALTER TABLE qmaint.queues
  ADD COLUMN paused boolean NOT NULL DEFAULT false,
  ADD COLUMN dead_letter text CHECK (dead_letter <> '' AND length(dead_letter) <= 128 AND dead_letter <> queue);
