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
-- qmaint_job_finished on qmaint.jobs). The job is found by id only: a straggler
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

-- Recurring jobs (qmaint cron add): one row per definition. The expression is
-- checked by the TypeScript cron library (croner) before it is stored, and
-- ticks are computed there, in the definition's time zone (see cron_ticks).
-- missed: 'skip' or 'backfill' with backfill = N, the most missed ticks to
-- enqueue after downtime.
CREATE TABLE qmaint.cron_schedules (
  name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
  expression  text NOT NULL,
  tz          text NOT NULL DEFAULT 'UTC',
  queue       text NOT NULL CHECK (queue <> '' AND length(queue) <= 128),
  payload     jsonb NOT NULL DEFAULT '{}',
  priority    integer NOT NULL DEFAULT 0,
  max_retries integer NOT NULL DEFAULT 5 CHECK (max_retries >= 0),
  missed      text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'backfill')),
  backfill    integer NOT NULL DEFAULT 0 CHECK (backfill >= 0 AND backfill <= 10000),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The ticks of each schedule, computed ahead by TypeScript (qmaint cron add,
-- cron refill, schedule install, and the daemon before each run of the
-- recurring task) and consumed by qmaint.cron_enqueue_due(), which pg_cron and
-- the daemon both run through qmaint.run_task('recurring'). (name, tick) is
-- the key of exactly-once: a tick row is locked and marked by the one run that
-- enqueues its job (state pending -> enqueued | missed).
CREATE TABLE qmaint.cron_ticks (
  name    text NOT NULL REFERENCES qmaint.cron_schedules (name) ON DELETE CASCADE,
  tick    timestamptz NOT NULL,
  state   text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'enqueued', 'missed')),
  job_id  bigint,
  done_at timestamptz,
  PRIMARY KEY (name, tick)
);
CREATE INDEX cron_ticks_pending_idx ON qmaint.cron_ticks (tick) WHERE state = 'pending';
