-- qmaint core schema: the partitioned jobs table, partition policies, plans,
-- and the partition-creation step every other piece builds on.
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

-- Partitions of a parent with bounds read from the catalog, never from names.
CREATE FUNCTION qmaint.partitions_of(p_parent regclass)
RETURNS TABLE (partition regclass, schema_name text, table_name text, lower_bound timestamptz, upper_bound timestamptz, is_default boolean)
LANGUAGE plpgsql STABLE
SET datestyle = 'ISO, YMD' SET timezone = 'UTC'
AS $$
BEGIN
  RETURN QUERY
  SELECT c.oid::regclass, n.nspname::text, c.relname::text,
         CASE WHEN m[1] IS NULL OR m[1] = 'MINVALUE' THEN '-infinity'::timestamptz ELSE m[1]::timestamptz END,
         CASE WHEN m[2] IS NULL OR m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz ELSE m[2]::timestamptz END,
         pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                   $re$FROM \('?([^')]*)'?\) TO \('?([^')]*)'?\)$re$) AS m ON true
   WHERE i.inhparent = p_parent
   ORDER BY 4, 3;
END;
$$;

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

-- The vacuum profile a partition in the given profile should carry, as a JSON
-- object of storage parameters. The vacuum migration refines this (tuned values).
CREATE FUNCTION qmaint.effective_profile(p_parent_table text, p_profile text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(vacuum -> p_profile, '{}'::jsonb) FROM qmaint.partition_policy WHERE parent_table = p_parent_table
$$;

-- Every partition of a parent with its lifecycle state at p_now:
--   future  - starts after p_now;            profile hot
--   hot     - holds p_now;                   profile hot
--   warm    - in the past, holds queued or running jobs; profile warm
--   drained - in the past, no queued or running job;     profile cold
CREATE FUNCTION qmaint.partition_states(p_parent regclass, p_now timestamptz)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz, is_default boolean, state text, profile text, live_jobs bigint)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_live jsonb;
BEGIN
  EXECUTE format('SELECT coalesce(jsonb_object_agg(t::text, n), ''{}'') FROM (SELECT tableoid::oid AS t, count(*) AS n FROM %s WHERE status IN (''queued'', ''running'') GROUP BY 1) s', p_parent)
    INTO v_live;
  RETURN QUERY
  SELECT p.partition, p.lower_bound, p.upper_bound, p.is_default,
         s.state,
         CASE s.state WHEN 'warm' THEN 'warm' WHEN 'drained' THEN 'cold' ELSE 'hot' END,
         coalesce((v_live ->> p.partition::oid::text)::bigint, 0)
    FROM qmaint.partitions_of(p_parent) p
    CROSS JOIN LATERAL (SELECT CASE
        WHEN p.is_default THEN CASE WHEN coalesce((v_live ->> p.partition::oid::text)::bigint, 0) > 0 THEN 'warm' ELSE 'hot' END
        WHEN p.lower_bound > p_now THEN 'future'
        WHEN p.upper_bound > p_now THEN 'hot'
        WHEN coalesce((v_live ->> p.partition::oid::text)::bigint, 0) > 0 THEN 'warm'
        ELSE 'drained' END AS state) s
   ORDER BY p.lower_bound;
END;
$$;

-- The steps that create one partition [p_from, p_to) of p_parent: a standalone
-- table with the parent's columns, defaults, constraints and indexes, a CHECK
-- matching the bounds (so ATTACH skips its validation scan), the profile's
-- reloptions; then ATTACH, which takes only SHARE UPDATE EXCLUSIVE on the
-- parent. All in one step so nothing is left half done.
CREATE FUNCTION qmaint.partition_create_steps(p_parent regclass, p_from timestamptz, p_to timestamptz, p_profile text DEFAULT 'hot')
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
AS $$
DECLARE
  v_schema text;
  v_table text;
  v_key text;
  v_name text;
  v_opts text;
  v_sql text;
BEGIN
  SELECT n.nspname, c.relname INTO v_schema, v_table
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_parent;
  SELECT a.attname INTO v_key
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_parent;
  IF v_key IS NULL THEN
    RAISE EXCEPTION '% is not a range-partitioned table', p_parent USING ERRCODE = '22023';
  END IF;
  IF p_from >= p_to THEN
    RAISE EXCEPTION 'partition bounds [%, %) are empty', p_from, p_to USING ERRCODE = '22023';
  END IF;
  v_opts := qmaint.reloptions_sql(qmaint.effective_profile(format('%s.%s', v_schema, v_table), p_profile));
  v_name := qmaint.partition_name(v_table, p_from, p_to);
  v_sql := format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING STORAGE)%s; ',
                  v_schema, v_name, v_schema, v_table, CASE WHEN v_opts IS NULL THEN '' ELSE format(' WITH (%s)', v_opts) END)
        || format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L); ',
                  v_schema, v_name, v_name || '_bounds', v_key, v_key, p_from, v_key, p_to)
        || format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L); ',
                  v_schema, v_table, v_schema, v_name, p_from, p_to)
        || format('ALTER TABLE %I.%I DROP CONSTRAINT %I', v_schema, v_name, v_name || '_bounds');
  RETURN NEXT ROW(1, 'create', format('%I.%I', v_schema, v_name), v_sql,
                  format('SHARE UPDATE EXCLUSIVE on %I.%I', v_schema, v_table),
                  format('partition for [%s, %s) with the %s profile', p_from, p_to, p_profile), true)::qmaint.plan_step;
END;
$$;

-- Make sure a partition covers p_ts, creating one if missing. Safe with many
-- concurrent callers (one transaction-scoped advisory lock per parent) and
-- idempotent. The new partition fills the aligned slot around p_ts, trimmed so
-- it never overlaps a neighbour. Returns the covering partition.
CREATE FUNCTION qmaint.ensure_partition(p_parent regclass, p_ts timestamptz)
RETURNS regclass
LANGUAGE plpgsql
SET timezone = 'UTC'
AS $$
DECLARE
  v_interval interval;
  v_from timestamptz;
  v_to timestamptz;
  v_hit regclass;
  v_step qmaint.plan_step;
BEGIN
  SELECT partition INTO v_hit FROM qmaint.partitions_of(p_parent)
   WHERE NOT is_default AND lower_bound <= p_ts AND p_ts < upper_bound;
  IF v_hit IS NOT NULL THEN
    RETURN v_hit;
  END IF;
  -- (29037, parent oid): per-parent creation lock, distinct from the maintenance lock.
  PERFORM pg_advisory_xact_lock(29037, p_parent::oid::integer);
  SELECT partition INTO v_hit FROM qmaint.partitions_of(p_parent)
   WHERE NOT is_default AND lower_bound <= p_ts AND p_ts < upper_bound;
  IF v_hit IS NOT NULL THEN
    RETURN v_hit;
  END IF;
  SELECT partition_interval INTO v_interval FROM qmaint.partition_policy
   WHERE parent_table = (SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_parent);
  IF v_interval IS NULL THEN
    RAISE EXCEPTION 'no partition policy for %', p_parent USING ERRCODE = '22023',
      HINT = 'run qmaint partitions apply';
  END IF;
  v_from := qmaint.partition_floor(p_ts, v_interval);
  v_to := v_from + v_interval;
  SELECT greatest(v_from, max(upper_bound)) INTO v_from FROM qmaint.partitions_of(p_parent)
   WHERE NOT is_default AND upper_bound <= p_ts;
  SELECT least(v_to, min(lower_bound)) INTO v_to FROM qmaint.partitions_of(p_parent)
   WHERE NOT is_default AND lower_bound > p_ts;
  FOR v_step IN SELECT * FROM qmaint.partition_create_steps(p_parent, v_from, v_to, 'hot') LOOP
    EXECUTE v_step.statement;
  END LOOP;
  RETURN (SELECT partition FROM qmaint.partitions_of(p_parent)
           WHERE NOT is_default AND lower_bound <= p_ts AND p_ts < upper_bound);
END;
$$;

-- The default policy for qmaint.jobs; `qmaint partitions apply` replaces it
-- with partitions/jobs.json.
INSERT INTO qmaint.partition_policy (parent_table, partition_interval, premake, premake_floor, retention, vacuum)
VALUES ('qmaint.jobs', interval '1 day', NULL, 3, interval '7 days',
        '{"hot":  {"autovacuum_vacuum_scale_factor": 0, "autovacuum_vacuum_threshold": 1000,
                   "autovacuum_vacuum_insert_scale_factor": 0, "autovacuum_vacuum_insert_threshold": 10000,
                   "autovacuum_analyze_scale_factor": 0, "autovacuum_analyze_threshold": 5000,
                   "autovacuum_vacuum_cost_limit": 2000, "autovacuum_vacuum_cost_delay": 1},
          "warm": {"autovacuum_vacuum_scale_factor": 0.05, "autovacuum_vacuum_threshold": 500,
                   "autovacuum_vacuum_cost_limit": 1000},
          "cold": {"autovacuum_vacuum_scale_factor": 0.2, "autovacuum_vacuum_threshold": 50,
                   "autovacuum_vacuum_insert_scale_factor": 0.2, "autovacuum_freeze_min_age": 0}}'::jsonb);

-- Partitions covering now and a short runway, so enqueue works at once.
SELECT qmaint.ensure_partition('qmaint.jobs', now() + n * interval '1 day') FROM generate_series(0, 3) AS n;

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
