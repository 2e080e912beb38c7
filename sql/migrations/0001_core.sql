-- qmaint core schema: the partitioned jobs table, partition policies, plans,
-- the maintenance run log, and the small helpers the partition functions (0003)
-- build on. The first partitions are made by the last migration, once every
-- function a partition's creation uses exists.
-- Applied by `qmaint migrate` inside one transaction; never edit after it lands.

CREATE TYPE qmaint.job_status AS ENUM ('queued', 'running', 'completed', 'failed');

-- A plain sequence rather than an identity column: partitions are built as
-- standalone tables and attached, and a sequence default behaves the same on
-- every supported PostgreSQL version whether a row arrives via the parent or not.
CREATE SEQUENCE qmaint.jobs_id_seq AS bigint;

-- created_at and run_at (the partition key and the claim key) keep millisecond
-- precision, exactly what a JavaScript Date carries, so a key read back by a
-- client finds its row again. Defaults truncate (a rounded-up run_at would lie
-- in the future for a moment).
CREATE TABLE qmaint.jobs (
  id           bigint NOT NULL DEFAULT nextval('qmaint.jobs_id_seq'),
  queue        text NOT NULL CHECK (queue <> '' AND length(queue) <= 128),
  payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
  status       qmaint.job_status NOT NULL DEFAULT 'queued',
  priority     integer NOT NULL DEFAULT 0,
  run_at       timestamptz(3) NOT NULL DEFAULT date_trunc('milliseconds', now()),
  retry_count  integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
  max_retries  integer NOT NULL DEFAULT 5 CHECK (max_retries >= 0),
  created_at   timestamptz(3) NOT NULL DEFAULT date_trunc('milliseconds', now()),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  locked_by    text,
  locked_until timestamptz,
  last_error   text,
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

ALTER SEQUENCE qmaint.jobs_id_seq OWNED BY qmaint.jobs.id;

-- The claim index: only queued jobs, in the claim's order. Partitioned, so every
-- partition carries it (built on the standalone table before ATTACH).
CREATE INDEX jobs_claim_idx ON qmaint.jobs (queue, priority DESC, run_at, id) WHERE status = 'queued';
-- The rescue index: running jobs by lease expiry.
CREATE INDEX jobs_rescue_idx ON qmaint.jobs (locked_until) WHERE status = 'running';

-- One row per managed partitioned table: what `qmaint partitions apply` writes
-- and what server-side maintenance reads.
CREATE TABLE qmaint.partition_policy (
  parent_table      text PRIMARY KEY,                  -- schema-qualified, as in the policy file
  partition_interval interval NOT NULL,
  premake           integer CHECK (premake IS NULL OR premake >= 0),  -- NULL = auto
  premake_floor     integer NOT NULL DEFAULT 3 CHECK (premake_floor >= 1),
  retention         interval NOT NULL,
  retention_mode    text NOT NULL DEFAULT 'drop' CHECK (retention_mode IN ('drop', 'detach', 'archive')),
  archive_schema    text NOT NULL DEFAULT 'qmaint_archive',
  stragglers        text NOT NULL DEFAULT 'move' CHECK (stragglers IN ('move', 'wait')),
  default_partition boolean NOT NULL DEFAULT false,
  lock_timeout      interval NOT NULL DEFAULT '2 seconds',
  vacuum            jsonb NOT NULL DEFAULT '{}'::jsonb,  -- {"hot": {...}, "warm": {...}, "cold": {...}}
  -- Lower bound on the partition key the claim query carries; rotate advances it
  -- past drained partitions so the planner prunes them.
  low_water         timestamptz NOT NULL DEFAULT '-infinity',
  source            jsonb,                               -- the policy document as applied
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- A plan is data: ordered statements with the lock they take and why.
CREATE TYPE qmaint.plan_step AS (
  seq            integer,
  action         text,     -- create, attach, detach, finalize, drop, archive, move, profile, advance, vacuum, ...
  target         text,     -- the relation acted on, schema-qualified
  statement      text,     -- exact SQL, identifiers quoted, values as literals
  lock_level     text,     -- e.g. 'SHARE UPDATE EXCLUSIVE on qmaint.jobs'
  reason         text,
  transactional  boolean   -- false: must run outside a transaction block (CONCURRENTLY, VACUUM)
);

-- The key of the one advisory lock that serialises all maintenance. The
-- TypeScript side uses the same number (MAINTENANCE_LOCK_KEY in src/db.ts).
CREATE FUNCTION qmaint.maintenance_lock_key() RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT 7170514283201::bigint $$;

-- Check that an interval is one qmaint can partition by (1 minute .. 1 month,
-- either whole months or a fixed length with no month part).
CREATE FUNCTION qmaint.check_partition_interval(p_interval interval) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE
    WHEN p_interval IS NULL THEN 'interval is missing'
    WHEN extract(month FROM p_interval) + 12 * extract(year FROM p_interval) > 0
         AND (p_interval <> interval '1 month') THEN 'interval must be at most 1 month, and a month interval must be exactly 1 month'
    WHEN p_interval = interval '1 month' THEN NULL
    WHEN p_interval < interval '1 minute' THEN 'interval must be at least 1 minute'
    WHEN p_interval > interval '31 days' THEN 'interval must be at most 1 month'
    ELSE NULL
  END
$$;

-- Start of the interval-aligned slot holding ts (UTC, anchored at 2000-01-01).
CREATE FUNCTION qmaint.partition_floor(p_ts timestamptz, p_interval interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE WHEN p_interval = interval '1 month'
              THEN date_trunc('month', p_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              ELSE date_bin(p_interval, p_ts, timestamptz '2000-01-01 00:00:00+00') END
$$;

-- Name for a new partition: parent name + UTC start, minutes shown when the
-- slot does not start at midnight or is shorter than a day.
CREATE FUNCTION qmaint.partition_name(p_parent_name text, p_from timestamptz, p_to timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
  SELECT left(p_parent_name, 40) || '_p' ||
         CASE WHEN p_to - p_from >= interval '1 day'
                   AND (p_from AT TIME ZONE 'UTC')::time = time '00:00'
              THEN to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD')
              ELSE to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI') END
$$;

-- Reloptions text for a vacuum profile held in a policy ({"autovacuum_...": value}).
-- Names and values are checked before they are put into DDL.
CREATE FUNCTION qmaint.reloptions_sql(p_profile jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  k text;
  v jsonb;
  parts text[] := '{}';
BEGIN
  IF p_profile IS NULL OR jsonb_typeof(p_profile) <> 'object' THEN
    RETURN NULL;
  END IF;
  FOR k, v IN SELECT key, value FROM jsonb_each(p_profile) ORDER BY key LOOP
    IF k !~ '^(autovacuum_[a-z_]+|toast\.autovacuum_[a-z_]+|fillfactor|toast_tuple_target)$' THEN
      RAISE EXCEPTION 'vacuum profile key % is not a storage parameter qmaint sets', k USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(v) = 'number' THEN
      parts := parts || format('%s = %s', k, v::text);
    ELSIF jsonb_typeof(v) = 'boolean' THEN
      parts := parts || format('%s = %s', k, v::text);
    ELSE
      RAISE EXCEPTION 'vacuum profile value for % must be a number or boolean, got %', k, v USING ERRCODE = '22023';
    END IF;
  END LOOP;
  IF cardinality(parts) = 0 THEN
    RETURN NULL;
  END IF;
  RETURN array_to_string(parts, ', ');
END;
$$;

-- The default policy for qmaint.jobs (the vacuum migration adds its profiles);
-- `qmaint partitions apply` replaces it with partitions/jobs.json.
INSERT INTO qmaint.partition_policy (parent_table, partition_interval, premake, premake_floor, retention)
VALUES ('qmaint.jobs', interval '1 day', NULL, 3, interval '7 days');

-- Every maintenance run, whoever started it (cli, daemon, pg_cron): what health
-- checks and metrics report as "the last maintenance run".
CREATE TABLE qmaint.maintenance_runs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task        text NOT NULL,                 -- rotate, vacuum, rescue, health, ...
  runner      text NOT NULL,                 -- cli, daemon, pg_cron
  started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at timestamptz,
  status      text NOT NULL DEFAULT 'running'
              CHECK (status IN ('running', 'ok', 'skipped', 'failed', 'lock_timeout')),
  message     text,
  details     jsonb
);
CREATE INDEX maintenance_runs_task_idx ON qmaint.maintenance_runs (task, started_at DESC);
