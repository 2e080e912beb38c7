-- qmaint partition lifecycle: the runway made ahead, re-profiling as
-- partitions age, straggler moves, retirement by DETACH (+ DROP or archive),
-- the low-water mark, and rotate_all(), the server-side rotate pg_cron and
-- the daemon call. Every function that changes something either returns a
-- plan (SETOF qmaint.plan_step) or runs one.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- How long ago a partition's upper bound must lie before the low-water mark
-- may pass it: a transaction that started before the boundary can still
-- insert a row stamped with its older now().
CREATE OR REPLACE FUNCTION qmaint.low_water_margin() RETURNS interval
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT interval '10 minutes' $$;

-- The one retry policy of a plan step that hit lock_timeout, for both
-- executors (qmaint.run_steps here, executeSteps in src/plan.ts, which reads
-- these two functions): how many retries by default (the CLI's lockRetries
-- setting defaults to the same number, a test holds them equal), and the
-- delay before retry n: exponential from 200 ms, capped at 5 s, equal jitter.
CREATE OR REPLACE FUNCTION qmaint.lock_retries() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 3 $$;

CREATE OR REPLACE FUNCTION qmaint.lock_retry_delay(p_retry integer) RETURNS interval
  LANGUAGE sql VOLATILE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT qmaint.retry_delay(p_retry, interval '200 milliseconds', interval '5 seconds') $$;

-- Straggler moves: rows per batch, and batches per server-side run (the rest
-- moves on the next run, so one run never holds a long transaction).
CREATE OR REPLACE FUNCTION qmaint.move_batch_size() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 1000 $$;

CREATE OR REPLACE FUNCTION qmaint.move_batches_per_run() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 20 $$;

-- The policy row of a parent given as a regclass.
CREATE OR REPLACE FUNCTION qmaint.policy_of(p_parent regclass) RETURNS qmaint.partition_policy
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT pol.* FROM qmaint.partition_policy pol
   WHERE to_regclass(pol.parent_table) = p_parent
$$;

-- "schema.table" of a relation, unquoted (how partition_policy names tables).
CREATE OR REPLACE FUNCTION qmaint.relation_text(p_rel regclass) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_rel
$$;

-- The partition key column of a range-partitioned table.
CREATE OR REPLACE FUNCTION qmaint.partition_key(p_parent regclass) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT a.attname::text
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_parent AND pt.partstrat = 'r' AND pt.partnatts = 1
$$;

-- Quoted, comma-separated column list of a table (same order as its tuples).
CREATE OR REPLACE FUNCTION qmaint.column_list(p_rel regclass) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = p_rel AND attnum > 0 AND NOT attisdropped
$$;

-- The job-column mapping of a policy row (migration 0015) as the JSON a
-- policy file carries under "columns"; {} (qmaint's own layout) for no policy.
CREATE OR REPLACE FUNCTION qmaint.policy_columns(p_pol qmaint.partition_policy) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN p_pol.parent_table IS NULL THEN '{}'::jsonb
              ELSE jsonb_build_object('time', p_pol.time_column, 'status', p_pol.status_column, 'live', to_jsonb(p_pol.live_values),
                                      'key', to_jsonb(p_pol.key_columns), 'touch', p_pol.touch_column) END
$$;

-- Why a table cannot be managed by qmaint, or NULL when it can: it must exist,
-- be range-partitioned on one timestamptz column, and have the job columns
-- maintenance reads. p_columns is the policy's mapping ({"time", "status",
-- "live", "key", "touch"}); a key left out means qmaint's own column (status
-- with queued/running, key id, touched updated_at); "touch": null means none.
CREATE OR REPLACE FUNCTION qmaint.check_managed_table(p_table text, p_columns jsonb) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rel regclass := to_regclass(p_table);
  v_cols jsonb := coalesce(p_columns, '{}'::jsonb);
  v_key text;
  v_need text[];
  v_missing text;
BEGIN
  IF v_rel IS NULL THEN
    RETURN format('table %s does not exist', p_table);
  END IF;
  v_key := qmaint.partition_key(v_rel);
  IF v_key IS NULL THEN
    RETURN format('table %s is not range-partitioned on one column (PARTITION BY RANGE (created_at))', p_table);
  END IF;
  IF (SELECT atttypid FROM pg_attribute WHERE attrelid = v_rel AND attname = v_key) <> 'timestamptz'::regtype THEN
    RETURN format('table %s is partitioned on %s, which is not a timestamptz column', p_table, v_key);
  END IF;
  IF v_cols ->> 'time' IS NOT NULL AND v_cols ->> 'time' <> v_key THEN
    RETURN format('table %s is partitioned on %s, not on its time column %s', p_table, v_key, v_cols ->> 'time');
  END IF;
  v_need := ARRAY[coalesce(v_cols ->> 'status', 'status')]
            || CASE WHEN v_cols ? 'key' THEN ARRAY(SELECT jsonb_array_elements_text(v_cols -> 'key')) ELSE ARRAY['id'] END
            || CASE WHEN v_cols ? 'touch' THEN ARRAY[v_cols ->> 'touch'] ELSE ARRAY['updated_at'] END;
  SELECT string_agg(DISTINCT c, ', ') INTO v_missing
    FROM unnest(v_need) AS c
   WHERE c IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = c AND attnum > 0 AND NOT attisdropped);
  IF v_missing IS NOT NULL THEN
    RETURN format('table %s lacks the job column(s) %s that qmaint reads', p_table, v_missing);
  END IF;
  IF v_cols ? 'key' AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(v_cols -> 'key') k WHERE k <> v_key) THEN
    RETURN format('the key columns of %s must name a column besides the time column %s', p_table, v_key);
  END IF;
  RETURN NULL;
END;
$$;

-- The same check with the mapping of the table's own policy (qmaint's
-- layout when it has none).
CREATE OR REPLACE FUNCTION qmaint.check_managed_table(p_table text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT qmaint.check_managed_table(p_table, coalesce((SELECT qmaint.policy_columns(pol) FROM qmaint.partition_policy pol WHERE pol.parent_table = p_table), '{}'::jsonb))
$$;

-- One SELECT per live value of the table's status column, joined by UNION
-- ALL: each arm can use its own partial index (claim and rescue on
-- qmaint.jobs, an adopted table's own), where one "status IN (...)" arm
-- would match none and read every row. p_which: live (every live value),
-- waiting (the first: the state a straggler move carries forward) or held
-- (the others: a consumer owns those rows). p_where is SQL the caller built
-- (quoted identifiers, literals or $n parameters). No policy: qmaint's own
-- status column and values.
CREATE OR REPLACE FUNCTION qmaint.live_arms(p_pol qmaint.partition_policy, p_rel regclass, p_select text, p_where text, p_which text DEFAULT 'live')
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(string_agg(format('SELECT %s FROM %s WHERE %I = %L AND %s', p_select, p_rel, coalesce(p_pol.status_column, 'status'), u.v, p_where),
                             ' UNION ALL ' ORDER BY u.n),
                  format('SELECT %s FROM %s WHERE false', p_select, p_rel))
    FROM unnest(coalesce(p_pol.live_values, ARRAY['queued', 'running'])) WITH ORDINALITY AS u(v, n)
   WHERE p_which = 'live' OR (p_which = 'waiting') = (u.n = 1)
$$;

-- The policy of the table a partition belongs to (all NULL when it has none).
CREATE OR REPLACE FUNCTION qmaint.policy_of_partition(p_partition regclass) RETURNS qmaint.partition_policy
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT qmaint.policy_of(i.inhparent) FROM pg_inherits i WHERE i.inhrelid = p_partition
$$;

-- Waiting jobs (status = the first live value) in one partition: what a
-- straggler move will carry forward (the TypeScript executor's progress total).
CREATE OR REPLACE FUNCTION qmaint.waiting_jobs(p_partition regclass) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM (%s) w', qmaint.live_arms(qmaint.policy_of_partition(p_partition), p_partition, '1', 'true', 'waiting')) INTO v_n;
  RETURN v_n;
END;
$$;

-- The policy of a managed table, for the plan functions: refuses (SQLSTATE
-- 22023, exit 2 in the CLI) a table with no policy or one qmaint cannot manage.
CREATE OR REPLACE FUNCTION qmaint.require_policy(p_parent_table text) RETURNS qmaint.partition_policy
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy;
  v_problem text;
BEGIN
  SELECT * INTO v_pol FROM qmaint.partition_policy WHERE parent_table = p_parent_table;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no partition policy for %', p_parent_table USING ERRCODE = '22023', HINT = 'run qmaint partitions apply';
  END IF;
  v_problem := qmaint.check_managed_table(p_parent_table);
  IF v_problem IS NOT NULL THEN
    RAISE EXCEPTION '%', v_problem USING ERRCODE = '22023', HINT = 'fix the table or remove its policy';
  END IF;
  RETURN v_pol;
END;
$$;

-- Every partition of a parent with its bounds read from the catalog, never
-- from names (pg_get_expr of relpartbound, once per partition), ordered by
-- lower bound. A plain query: with a thousand partitions, building the rows
-- through an array of composites cost a cold connection twice as much.
CREATE OR REPLACE FUNCTION qmaint.partitions_of(p_parent regclass)
RETURNS TABLE (partition regclass, schema_name text, table_name text, lower_bound timestamptz, upper_bound timestamptz, is_default boolean)
LANGUAGE sql STABLE
SET datestyle = 'ISO, YMD' SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
  -- "FOR VALUES FROM ('a') TO ('b')", MINVALUE/MAXVALUE unquoted, or "DEFAULT".
  -- Split with plain string functions: a regular expression here costs more
  -- than everything else a rotate with nothing to do spends.
  SELECT t.oid::regclass, t.nspname::text, t.relname::text, t.l, t.h, t.expr = 'DEFAULT'
    FROM (SELECT b.oid, b.nspname, b.relname, b.expr,
                 CASE WHEN b.expr = 'DEFAULT' OR b.lo = 'MINVALUE' THEN '-infinity'::timestamptz ELSE b.lo::timestamptz END AS l,
                 CASE WHEN b.expr = 'DEFAULT' OR b.hi = 'MAXVALUE' THEN 'infinity'::timestamptz ELSE b.hi::timestamptz END AS h
            FROM (SELECT e.*,
                         btrim(substr(split_part(e.expr, ') TO (', 1), length('FOR VALUES FROM (') + 1), '''') AS lo,
                         btrim(rtrim(split_part(e.expr, ') TO (', 2), ')'), '''') AS hi
                    FROM (SELECT c.oid, n.nspname, c.relname, pg_get_expr(c.relpartbound, 0) AS expr
                            FROM pg_inherits i
                            JOIN pg_class c ON c.oid = i.inhrelid
                            JOIN pg_namespace n ON n.oid = c.relnamespace
                           WHERE i.inhparent = p_parent
                          OFFSET 0) e) b) t
   ORDER BY t.l, t.relname
$$;

-- The same as an array: planning functions fetch it once and pass it around
-- (with a thousand partitions the deparsing is the expensive part of a rotate
-- that has nothing to do).
CREATE OR REPLACE FUNCTION qmaint.bounds_of(p_parent regclass) RETURNS qmaint.partition_bound[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT ARRAY(SELECT ROW(p.*)::qmaint.partition_bound FROM qmaint.partitions_of(p_parent) p ORDER BY p.lower_bound, p.table_name)
$$;

-- The default partition of a parent, or NULL.
CREATE OR REPLACE FUNCTION qmaint.default_partition_of(p_parent regclass) RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT nullif(partdefid, 0)::regclass FROM pg_partitioned_table WHERE partrelid = p_parent
$$;

-- How many partitions ahead of the hot one the policy wants at p_now. A number
-- in the policy is taken as is. "auto" (premake NULL) sizes it from the
-- measured insert rate: the rows per interval of the last full partition, or
-- of the hot one extrapolated, whichever is higher; every tenfold above 1,000
-- rows per interval keeps one more partition ahead of the floor, so a busy
-- queue gets more lead time before producers would have to make a partition
-- on the spot (and wait on each other while one does).
CREATE OR REPLACE FUNCTION qmaint.runway_target_of(p_pol qmaint.partition_policy, p_parts qmaint.partition_bound[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_span double precision := extract(epoch FROM p_pol.partition_interval);
  v_prev double precision;
  v_hot double precision;
  v_rate double precision;
BEGIN
  IF p_pol.premake IS NOT NULL THEN
    RETURN p_pol.premake;
  END IF;
  -- Inserts recorded by the statistics system, per partition.
  SELECT coalesce(max(s.n_tup_ins) FILTER (WHERE p.upper_bound <= p_now), 0),
         coalesce(max(s.n_tup_ins * v_span / greatest(extract(epoch FROM p_now - p.lower_bound), v_span / 10))
                    FILTER (WHERE p.lower_bound <= p_now AND p_now < p.upper_bound), 0)
    INTO v_prev, v_hot
    FROM unnest(p_parts) p
    JOIN pg_stat_user_tables s ON s.relid = p.partition
   WHERE NOT p.is_default
     AND p.upper_bound > p_now - p_pol.partition_interval
     AND p.lower_bound <= p_now;
  v_rate := greatest(v_prev, v_hot);
  IF v_rate < 10000 THEN
    RETURN p_pol.premake_floor;
  END IF;
  RETURN p_pol.premake_floor + least(6, floor(log(v_rate)) - 3)::integer;
END;
$$;

CREATE OR REPLACE FUNCTION qmaint.runway_target(p_parent_table text, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy;
BEGIN
  SELECT * INTO v_pol FROM qmaint.partition_policy WHERE parent_table = p_parent_table;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF v_pol.premake IS NOT NULL OR to_regclass(p_parent_table) IS NULL THEN
    RETURN coalesce(v_pol.premake, v_pol.premake_floor);
  END IF;
  RETURN qmaint.runway_target_of(v_pol, qmaint.bounds_of(to_regclass(p_parent_table)), p_now);
END;
$$;

-- ---------------------------------------------------------------------------
-- Guards used while a partition is retired.

-- Row trigger on a partition being retired: no job may become live in it
-- between the check that it is drained and the end of its detach (the
-- concurrent detach spans several transactions). TG_ARGV[0] names the parent,
-- TG_ARGV[1] the status column and the rest the live values (the policy's
-- mapping, given when the guard is made, so a writer needs no right to read
-- the policy; a guard made before migration 0015 has only the parent: qmaint's
-- own status column and values).
CREATE OR REPLACE FUNCTION qmaint.refuse_live_jobs() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_column text := CASE WHEN TG_NARGS >= 3 THEN TG_ARGV[1] ELSE 'status' END;
  v_live text[] := CASE WHEN TG_NARGS >= 3 THEN TG_ARGV[2:TG_NARGS - 1] ELSE ARRAY['queued', 'running'] END;
BEGIN
  IF to_jsonb(NEW) ->> v_column = ANY (v_live) THEN
    RAISE EXCEPTION 'partition % of % is being retired and takes no queued or running job', TG_TABLE_NAME, TG_ARGV[0]
      USING ERRCODE = '55000', HINT = 'retry: a job made live again belongs in a newer partition';
  END IF;
  RETURN NEW;
END;
$$;

-- Raise QM001 when a partition holds a queued or running job. Each arm
-- matches a partial index (claim, rescue), so this is cheap at any size.
CREATE OR REPLACE FUNCTION qmaint.assert_drained(p_partition regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_live boolean;
BEGIN
  EXECUTE format('SELECT EXISTS (%s)', qmaint.live_arms(qmaint.policy_of_partition(p_partition), p_partition, '1', 'true')) INTO v_live;
  IF v_live THEN
    RAISE EXCEPTION '% holds queued or running jobs; it is not retired', p_partition
      USING ERRCODE = 'QM001', HINT = 'its jobs must finish or be moved (qmaint partitions compact) first';
  END IF;
END;
$$;

-- Sessions other than this one holding granted locks on the relations (or
-- their parents): who made a maintenance statement wait.
CREATE OR REPLACE FUNCTION qmaint.lock_blockers(p_relations regclass[]) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH rels AS (
    SELECT r AS oid FROM unnest(p_relations) r WHERE r IS NOT NULL
    UNION
    SELECT i.inhparent FROM unnest(p_relations) r JOIN pg_inherits i ON i.inhrelid = r
  )
  SELECT coalesce(jsonb_agg(b ORDER BY b.pid), '[]'::jsonb)
    FROM (SELECT DISTINCT ON (a.pid) a.pid, a.state, coalesce(a.xact_start, a.state_change) AS since,
                 a.application_name, l.mode, l.relation::regclass::text AS relation,
                 upper(substring(a.query FROM '^\s*([A-Za-z]+)')) AS command
            FROM pg_locks l
            JOIN rels ON rels.oid = l.relation
            JOIN pg_stat_activity a ON a.pid = l.pid
           -- Relation oids are per database (and equal in clones of one template).
           WHERE l.granted AND l.pid <> pg_backend_pid()
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           ORDER BY a.pid, l.mode) b
$$;

-- One line naming blockers, for messages.
CREATE OR REPLACE FUNCTION qmaint.describe_blockers(p_blockers jsonb) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(string_agg(format('pid %s (%s since %s, holds %s on %s, last statement %s)', b ->> 'pid', coalesce(b ->> 'state', 'unknown state'),
                                    coalesce(b ->> 'since', '?'), b ->> 'mode', b ->> 'relation', coalesce(b ->> 'command', 'unknown')), '; '),
                  'no blocking session is visible any more')
    FROM jsonb_array_elements(coalesce(p_blockers, '[]'::jsonb)) b
$$;

-- ---------------------------------------------------------------------------
-- Creation.

-- The steps that create one partition [p_from, p_to): a standalone table with
-- the parent's columns, defaults, constraints and indexes, a CHECK matching
-- the bounds (so ATTACH skips its validation scan) and the profile's
-- reloptions; rows of that range sitting in a default partition are moved in;
-- then ATTACH, which takes only SHARE UPDATE EXCLUSIVE on the parent (plus
-- ACCESS EXCLUSIVE on a default partition, which PostgreSQL scans). One step,
-- one transaction: nothing is left half done. A free name is picked when a
-- kept (detached) table already has the natural one.
CREATE OR REPLACE FUNCTION qmaint.partition_create_steps(p_parent regclass, p_from timestamptz, p_to timestamptz, p_profile text DEFAULT 'hot')
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_schema text;
  v_table text;
  v_key text := qmaint.partition_key(p_parent);
  v_name text;
  v_base text;
  v_n integer := 0;
  v_opts text;
  v_default regclass;
  v_cols text;
  v_moving bigint := 0;
  v_sql text;
  v_lock text;
  v_locks text[];
  v_owner text;
BEGIN
  SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) INTO v_schema, v_table, v_owner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_parent;
  IF v_key IS NULL THEN
    RAISE EXCEPTION '% is not a range-partitioned table', p_parent USING ERRCODE = '22023';
  END IF;
  IF p_from >= p_to THEN
    RAISE EXCEPTION 'partition bounds [%, %) are empty', p_from, p_to USING ERRCODE = '22023';
  END IF;
  v_opts := qmaint.reloptions_sql(qmaint.effective_profile(format('%s.%s', v_schema, v_table), p_profile));
  v_base := qmaint.partition_name(v_table, p_from, p_to);
  v_name := v_base;
  WHILE to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL LOOP
    v_n := v_n + 1;
    v_name := v_base || '_' || v_n;
  END LOOP;
  v_default := qmaint.default_partition_of(p_parent);
  v_lock := format('SHARE UPDATE EXCLUSIVE on %I.%I', v_schema, v_table);
  v_locks := ARRAY[format('%I.%I', v_schema, v_table)];
  v_sql := format('SELECT qmaint.lock_slot(%L, %L, %L); ', format('%I.%I', v_schema, v_table), p_from, p_to)
        || format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING STORAGE)%s; ',
                  v_schema, v_name, v_schema, v_table, CASE WHEN v_opts IS NULL THEN '' ELSE format(' WITH (%s)', v_opts) END)
        || format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L); ',
                  v_schema, v_name, left(v_name, 56) || '_bounds', v_key, v_key, p_from, v_key, p_to)
        -- The parent's owner owns every partition, whoever creates it (a
        -- member of qmaint_admin, a superuser's pg_cron job): any other member
        -- can then tune, detach and drop it. A no-op when they are the same.
        || format('ALTER TABLE %I.%I OWNER TO %I; ', v_schema, v_name, v_owner);
  IF v_default IS NOT NULL THEN
    -- Rows of this range in the default partition would make ATTACH fail: move them in first.
    v_cols := qmaint.column_list(p_parent);
    EXECUTE format('SELECT count(*) FROM %s WHERE %I >= $1 AND %I < $2', v_default, v_key, v_key) INTO v_moving USING p_from, p_to;
    v_sql := v_sql
        || format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; ', v_default)
        || format('WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING %s) INSERT INTO %I.%I (%s) SELECT %s FROM moved; ',
                  v_default, v_key, p_from, v_key, p_to, v_cols, v_schema, v_name, v_cols, v_cols)
        -- Moved rows may be live: keep the low-water mark below them.
        || format('UPDATE qmaint.partition_policy SET low_water = %L WHERE parent_table = %L AND low_water > %L; ',
                  p_from, format('%s.%s', v_schema, v_table), p_from);
    v_lock := v_lock || format(', ACCESS EXCLUSIVE on %s', v_default);
    v_locks := v_locks || v_default::text;
  END IF;
  v_sql := v_sql
        || format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L); ',
                  v_schema, v_table, v_schema, v_name, p_from, p_to)
        || format('ALTER TABLE %I.%I DROP CONSTRAINT %I', v_schema, v_name, left(v_name, 56) || '_bounds');
  RETURN NEXT ROW(1, 'create', format('%I.%I', v_schema, v_name), v_sql, v_lock,
                  format('partition for [%s, %s) with the %s profile%s', p_from, p_to, p_profile,
                         CASE WHEN v_moving > 0 THEN format('; moves %s rows out of the default partition %s', v_moving, v_default) ELSE '' END),
                  true, v_locks)::qmaint.plan_step;
END;
$$;

-- The per-parent partition-creation lock (transaction-scoped), taken by
-- enqueue's self-healing (ensure_partition) and by every create step, then a
-- re-check: when a partition overlapping [p_from, p_to) exists by now (a
-- concurrent enqueue made it), raise QM002, which the executors treat as
-- "skip this step", not as a failure.
CREATE OR REPLACE FUNCTION qmaint.lock_slot(p_parent regclass, p_from timestamptz, p_to timestamptz) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- (29037, parent oid): distinct from the maintenance lock.
  PERFORM pg_advisory_xact_lock(29037, p_parent::oid::integer);
  IF EXISTS (SELECT 1 FROM qmaint.partitions_of(p_parent) p
              WHERE NOT p.is_default AND p.lower_bound < p_to AND p.upper_bound > p_from) THEN
    RAISE EXCEPTION 'a partition of % covering [%, %) exists already: another session made it meanwhile', p_parent, p_from, p_to
      USING ERRCODE = 'QM002';
  END IF;
END;
$$;

-- Make sure a partition covers p_ts, creating one if missing. Safe with many
-- concurrent callers (one transaction-scoped advisory lock per parent) and
-- idempotent. The new partition fills the aligned slot around p_ts, trimmed so
-- it never overlaps a neighbour. Returns the covering partition.
CREATE OR REPLACE FUNCTION qmaint.ensure_partition(p_parent regclass, p_ts timestamptz)
RETURNS regclass
LANGUAGE plpgsql
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (plpgsql_check: the EXECUTEd text is a plan step's statement, built by qmaint's
-- planning functions with every identifier through %I/%s of a regclass and every
-- value through %L; no caller text reaches it unquoted)
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
  -- The per-parent creation lock (see lock_slot), then look again.
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

-- The self-healing path of producers: make sure a partition of qmaint.jobs
-- covers p_ts. SECURITY DEFINER so that a producer (qmaint roles install)
-- needs no CREATE on the schema and no ownership of qmaint.jobs; it is fixed
-- to qmaint.jobs and to ensure_partition's rules (the policy's interval,
-- trimmed to the neighbours, hot profile), so all a caller chooses is the
-- timestamp, as it already does through created_at. The partition is made
-- by, and handed to, the owner of qmaint.jobs. Not executable by PUBLIC.
CREATE OR REPLACE FUNCTION qmaint.ensure_jobs_partition(p_ts timestamptz) RETURNS regclass
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT qmaint.ensure_partition('qmaint.jobs', p_ts) $$;
REVOKE ALL ON FUNCTION qmaint.ensure_jobs_partition(timestamptz) FROM PUBLIC;

-- Create steps for the parts of [p_from, p_to) no partition covers yet (a
-- slot can be partly covered after a change of interval or a self-made
-- partition trimmed around its neighbours).
CREATE OR REPLACE FUNCTION qmaint.gap_create_steps(p_parent regclass, p_from timestamptz, p_to timestamptz, p_profile text, p_parts qmaint.partition_bound[])
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_cursor timestamptz := p_from;
  v_part record;
BEGIN
  FOR v_part IN SELECT lower_bound, upper_bound FROM unnest(p_parts)
                 WHERE NOT is_default AND lower_bound < p_to AND upper_bound > p_from
                 ORDER BY lower_bound LOOP
    IF v_part.lower_bound > v_cursor THEN
      RETURN QUERY SELECT * FROM qmaint.partition_create_steps(p_parent, v_cursor, v_part.lower_bound, p_profile);
    END IF;
    v_cursor := greatest(v_cursor, v_part.upper_bound);
  END LOOP;
  IF v_cursor < p_to THEN
    RETURN QUERY SELECT * FROM qmaint.partition_create_steps(p_parent, v_cursor, p_to, p_profile);
  END IF;
END;
$$;

-- ---------------------------------------------------------------------------
-- Stragglers and the low-water mark.

-- Move one batch of queued jobs out of an old partition into the partition
-- holding p_now (their created_at becomes its lower bound), through the
-- parent so the rows are routed. Running jobs stay: their consumer finishes
-- them or their lease runs out and they become queued. Rows a consumer is
-- claiming right now are skipped (SKIP LOCKED); a consumer whose FOR UPDATE
-- meets a moved row gets SQLSTATE 40001 and retries its claim. Returns the
-- number of jobs moved (0: nothing left to move).
CREATE OR REPLACE FUNCTION qmaint.move_stragglers(p_partition regclass, p_now timestamptz, p_batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (plpgsql_check: the column lists and conditions in the EXECUTEd text are
-- built here with quote_ident/%I from the policy's column names and %L from
-- its status value; no caller text reaches it unquoted)
DECLARE
  v_parent regclass;
  v_key text;
  v_parts qmaint.partition_bound[];
  v_src record;
  v_target timestamptz;
  v_moved integer;
  v_pol qmaint.partition_policy;
  v_status text;
  v_keys text;
  v_join text;
  v_touch text;
BEGIN
  SELECT inhparent INTO v_parent FROM pg_inherits WHERE inhrelid = p_partition;
  IF v_parent IS NULL THEN
    RAISE EXCEPTION '% is not a partition', p_partition USING ERRCODE = '22023';
  END IF;
  v_key := qmaint.partition_key(v_parent);
  v_pol := qmaint.policy_of(v_parent);
  v_status := format('%I = %L', coalesce(v_pol.status_column, 'status'), coalesce(v_pol.live_values[1], 'queued'));
  SELECT string_agg(quote_ident(k), ', ' ORDER BY n), string_agg(format('j.%1$I = s.%1$I', k), ' AND ' ORDER BY n) INTO v_keys, v_join
    FROM unnest(coalesce(v_pol.key_columns, ARRAY['id'])) WITH ORDINALITY AS u(k, n) WHERE k <> v_key;
  v_touch := CASE WHEN v_pol.parent_table IS NULL THEN ', updated_at = now()'
                  WHEN v_pol.touch_column IS NOT NULL THEN format(', %I = now()', v_pol.touch_column) ELSE '' END;
  v_parts := qmaint.bounds_of(v_parent);
  SELECT lower_bound, upper_bound INTO v_src FROM unnest(v_parts) WHERE partition = p_partition;
  SELECT lower_bound INTO v_target FROM unnest(v_parts) WHERE NOT is_default AND lower_bound <= p_now AND p_now < upper_bound;
  IF v_target IS NULL THEN
    PERFORM qmaint.ensure_partition(v_parent, p_now);
    SELECT lower_bound INTO v_target FROM qmaint.partitions_of(v_parent) WHERE NOT is_default AND lower_bound <= p_now AND p_now < upper_bound;
  END IF;
  IF v_target < v_src.upper_bound THEN
    RAISE EXCEPTION 'cannot move jobs of % forward: it is not older than the partition holding %', p_partition, p_now USING ERRCODE = '22023';
  END IF;
  EXECUTE format(
    'WITH s AS (SELECT %5$s, %1$I FROM %2$s WHERE %6$s ORDER BY %5$s LIMIT %3$s FOR UPDATE SKIP LOCKED) '
    'UPDATE %4$s j SET %1$I = $1%7$s FROM s '
    'WHERE %8$s AND j.%1$I = s.%1$I AND j.%1$I >= $2 AND j.%1$I < $3 AND j.%6$s',
    v_key, p_partition, greatest(1, p_batch), v_parent, v_keys, v_status, v_touch, v_join)
    USING v_target, v_src.lower_bound, v_src.upper_bound;
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END;
$$;

-- Queued and running jobs per partition (partition oid as text -> count)
-- with a partition key from p_from on. One arm per status, so each arm reads
-- its partial index (claim, rescue): a single "status IN (...)" arm matches
-- neither and reads every row from p_from on, completed history included.
-- p_from travels as a parameter: the one-shot plan still prunes by it.
CREATE OR REPLACE FUNCTION qmaint.live_jobs_by_partition(p_parent regclass, p_from timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_live jsonb;
BEGIN
  EXECUTE format('SELECT coalesce(jsonb_object_agg(t::text, n), ''{}'') FROM (SELECT t, count(*) AS n FROM (%s) a GROUP BY 1) s',
                 qmaint.live_arms(qmaint.policy_of(p_parent), p_parent, 'tableoid::oid AS t', format('%I >= $1', qmaint.partition_key(p_parent))))
    INTO v_live USING p_from;
  RETURN v_live;
END;
$$;

-- Where the low-water mark belongs at p_now: the lower bound of the oldest
-- partition holding a queued or running job, but never past a partition whose
-- upper bound is newer than p_now minus the safety margin. Live rows in a
-- default partition hold it at their own created_at.
CREATE OR REPLACE FUNCTION qmaint.low_water_target(p_parent regclass, p_now timestamptz, p_parts qmaint.partition_bound[] DEFAULT NULL) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_parts qmaint.partition_bound[] := coalesce(p_parts, qmaint.bounds_of(p_parent));
  v_key text := qmaint.partition_key(p_parent);
  v_pol qmaint.partition_policy := qmaint.policy_of(p_parent);
  v_mark timestamptz := coalesce(v_pol.low_water, '-infinity');
  v_recent timestamptz;
  v_live oid[];
  v_oldest timestamptz;
  v_default regclass := qmaint.default_partition_of(p_parent);
  v_default_live timestamptz;
BEGIN
  SELECT min(lower_bound) INTO v_recent FROM unnest(v_parts)
   WHERE NOT is_default AND upper_bound > p_now - qmaint.low_water_margin();
  v_recent := coalesce(v_recent, qmaint.partition_floor(p_now - qmaint.low_water_margin(), coalesce(v_pol.partition_interval, interval '1 day')));
  -- Only partitions from the current mark on are searched: whoever makes a job
  -- live below the mark lowers it in the same transaction (enqueue, retry,
  -- rescue), and rescue_expired searches below it as a safety net.
  IF v_mark < v_recent THEN
    EXECUTE format('SELECT array_agg(DISTINCT t) FROM (%s) s',
                   qmaint.live_arms(v_pol, p_parent, 'tableoid AS t', format('%1$I >= %2$L AND %1$I < %3$L', v_key, v_mark, v_recent)))
      INTO v_live;
    SELECT min(lower_bound) INTO v_oldest FROM unnest(v_parts) WHERE partition::oid = ANY (v_live) AND NOT is_default;
  END IF;
  IF v_default IS NOT NULL THEN
    EXECUTE format('SELECT min(m) FROM (%s) s', qmaint.live_arms(v_pol, v_default, format('min(%I) AS m', v_key), 'true')) INTO v_default_live;
  END IF;
  RETURN least(v_recent, v_oldest, v_default_live);
END;
$$;

-- Set the low-water mark to where it belongs now. The policy row is locked
-- first and the target computed afterwards with a fresh snapshot, so a job
-- made live by a transaction that lowered the mark is always seen; one that
-- lowers it later waits for this one and lowers it again. Returns the mark.
-- For qmaint.jobs it also forgets the failed jobs (qmaint.failed_jobs) of
-- partitions that are gone: those older than its oldest partition, when no
-- default partition could still hold them.
CREATE OR REPLACE FUNCTION qmaint.advance_low_water(p_parent_table text, p_now timestamptz) RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_old timestamptz;
  v_new timestamptz;
BEGIN
  SELECT low_water INTO v_old FROM qmaint.partition_policy WHERE parent_table = p_parent_table FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no partition policy for %', p_parent_table USING ERRCODE = '22023';
  END IF;
  v_new := qmaint.low_water_target(to_regclass(p_parent_table), p_now);
  IF v_new IS DISTINCT FROM v_old THEN
    UPDATE qmaint.partition_policy SET low_water = v_new, updated_at = now() WHERE parent_table = p_parent_table;
  END IF;
  IF to_regclass(p_parent_table) = 'qmaint.jobs'::regclass THEN
    DELETE FROM qmaint.failed_jobs f
     WHERE f.created_at < (SELECT min(b.lower_bound) FROM unnest(qmaint.bounds_of('qmaint.jobs')) b HAVING NOT bool_or(b.is_default));
  END IF;
  RETURN v_new;
END;
$$;

-- A partition's lifecycle state at p_now (see partition_states below for the
-- states), and the vacuum profile a state gets: the one definition that
-- partition_states() and rotate_plan() both use.
CREATE OR REPLACE FUNCTION qmaint.partition_state(p_is_default boolean, p_lower timestamptz, p_upper timestamptz, p_live_jobs bigint, p_now timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN p_is_default THEN CASE WHEN p_live_jobs > 0 THEN 'warm' ELSE 'hot' END
    WHEN p_lower > p_now THEN 'future'
    WHEN p_upper > p_now THEN 'hot'
    WHEN p_live_jobs > 0 THEN 'warm'
    ELSE 'drained' END
$$;

CREATE OR REPLACE FUNCTION qmaint.state_profile(p_state text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE p_state WHEN 'warm' THEN 'warm' WHEN 'drained' THEN 'cold' ELSE 'hot' END $$;

-- Every partition of a parent with its lifecycle state at p_now:
--   future  - starts after p_now;            profile hot
--   hot     - holds p_now;                   profile hot
--   warm    - in the past, holds queued or running jobs; profile warm
--   drained - in the past, no queued or running job;     profile cold
-- Live jobs are counted only from the low-water mark on: below it no queued
-- or running job exists (whoever makes one lowers the mark), so a long
-- history of drained partitions costs nothing here.
CREATE OR REPLACE FUNCTION qmaint.partition_states(p_parent regclass, p_now timestamptz)
RETURNS TABLE (partition regclass, lower_bound timestamptz, upper_bound timestamptz, is_default boolean, state text, profile text, live_jobs bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_live jsonb := qmaint.live_jobs_by_partition(p_parent, coalesce((qmaint.policy_of(p_parent)).low_water, '-infinity'));
BEGIN
  RETURN QUERY
  SELECT p.partition, p.lower_bound, p.upper_bound, p.is_default, s.state, qmaint.state_profile(s.state), s.live
    FROM qmaint.partitions_of(p_parent) p
    CROSS JOIN LATERAL (SELECT coalesce((v_live ->> p.partition::oid::text)::bigint, 0) AS live) l
    CROSS JOIN LATERAL (SELECT qmaint.partition_state(p.is_default, p.lower_bound, p.upper_bound, l.live, p_now) AS state, l.live) s
   ORDER BY p.lower_bound;
END;
$$;

-- The part of a wanted profile a relation does not carry yet (only the keys
-- the profile names are compared; the vacuum engineer's tune owns the rest).
CREATE OR REPLACE FUNCTION qmaint.profile_diff(p_wanted jsonb, p_reloptions text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(jsonb_object_agg(w.key, w.value), '{}'::jsonb)
    FROM jsonb_each(coalesce(p_wanted, '{}'::jsonb)) w
    LEFT JOIN LATERAL (SELECT qmaint.reloptions_json(p_reloptions) ->> w.key AS cur) c ON true
   WHERE jsonb_typeof(w.value) IN ('number', 'boolean')
     AND (c.cur IS NULL
          OR (jsonb_typeof(w.value) = 'number' AND (c.cur !~ '^-?[0-9.]+([eE][-+]?[0-9]+)?$' OR c.cur::numeric <> w.value::text::numeric))
          OR (jsonb_typeof(w.value) = 'boolean' AND lower(c.cur) NOT IN (CASE WHEN w.value = 'true' THEN 'true' ELSE 'false' END,
                                                                         CASE WHEN w.value = 'true' THEN 'on' ELSE 'off' END)))
$$;

-- ---------------------------------------------------------------------------
-- Retirement.

-- What happens to a detached table, per retention mode, as SQL.
CREATE OR REPLACE FUNCTION qmaint.dispose_sql(p_table text, p_parent_text text, p_mode text, p_archive_schema text, p_now timestamptz) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_note text := format('qmaint: detached from %s at %s', p_parent_text, p_now);
  v_name text;
  v_schema text;
  v_suffix text;
  v_renames text;
  v_free text;
BEGIN
  CASE p_mode
    WHEN 'drop' THEN
      RETURN format('DROP TABLE %s', p_table);
    WHEN 'detach' THEN
      RETURN format('DROP TRIGGER IF EXISTS qmaint_retire ON %s; COMMENT ON TABLE %s IS %L', p_table, p_table, v_note);
    WHEN 'archive' THEN
      -- A slot can get a partition again after its first one was archived (a
      -- late job): the archive then already holds the name (of the table or of
      -- one of its indexes), so this table and its indexes move under their
      -- names with the retirement time appended.
      SELECT c.relname, n.nspname INTO v_name, v_schema
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(p_table);
      IF v_name IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_class a JOIN pg_namespace an ON an.oid = a.relnamespace
            WHERE an.nspname = p_archive_schema
              AND a.relname IN (SELECT v_name UNION ALL SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                                                          WHERE x.indrelid = to_regclass(p_table))) THEN
        v_suffix := to_char(p_now AT TIME ZONE 'UTC', '"_a"YYYYMMDDHH24MISS');
        SELECT string_agg(format('ALTER INDEX %I.%I RENAME TO %I', v_schema, i.relname, left(i.relname, 63 - length(v_suffix)) || v_suffix), '; ' ORDER BY i.relname)
          INTO v_renames
          FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = to_regclass(p_table);
        v_free := left(v_name, 63 - length(v_suffix)) || v_suffix;
        RETURN format('DROP TRIGGER IF EXISTS qmaint_retire ON %1$s; COMMENT ON TABLE %1$s IS %2$L; CREATE SCHEMA IF NOT EXISTS %3$I; '
                      '%6$s; ALTER TABLE %1$s RENAME TO %4$I; ALTER TABLE %5$I.%4$I SET SCHEMA %3$I',
                      p_table, v_note, p_archive_schema, v_free, v_schema, v_renames);
      END IF;
      RETURN format('DROP TRIGGER IF EXISTS qmaint_retire ON %1$s; COMMENT ON TABLE %1$s IS %2$L; CREATE SCHEMA IF NOT EXISTS %3$I; ALTER TABLE %1$s SET SCHEMA %3$I',
                    p_table, v_note, p_archive_schema);
    ELSE
      RAISE EXCEPTION 'unknown retention mode %', p_mode USING ERRCODE = '22023', HINT = 'use drop, detach or archive';
  END CASE;
END;
$$;

-- The steps that retire one drained partition.
--   concurrent: a guard trigger plus the drained check in one transaction
--     (SHARE ROW EXCLUSIVE on the partition only), DETACH ... CONCURRENTLY
--     (SHARE UPDATE EXCLUSIVE; runs outside a transaction), then the disposal.
--   plain: one transaction that locks the partition, checks it is drained,
--     detaches it (ACCESS EXCLUSIVE on the parent, held only to the commit
--     that follows) and disposes of it.
CREATE OR REPLACE FUNCTION qmaint.retire_steps(p_parent regclass, p_partition regclass, p_mode text, p_concurrent boolean, p_now timestamptz, p_reason text)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy := qmaint.policy_of(p_parent);
  v_parent_text text := qmaint.relation_text(p_parent);
  v_dispose text := qmaint.dispose_sql(p_partition::text, v_parent_text, p_mode, coalesce(v_pol.archive_schema, 'qmaint_archive'), p_now);
  v_what text := CASE p_mode WHEN 'drop' THEN 'drop it' WHEN 'archive' THEN format('move it to schema %s', coalesce(v_pol.archive_schema, 'qmaint_archive')) ELSE 'keep it as a table' END;
BEGIN
  IF p_concurrent THEN
    RETURN NEXT ROW(0, 'guard', p_partition::text,
      format('CREATE OR REPLACE TRIGGER qmaint_retire BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION qmaint.refuse_live_jobs(%L, %L, %s); SELECT qmaint.assert_drained(%L)',
             p_partition, v_parent_text, coalesce(v_pol.status_column, 'status'),
             (SELECT string_agg(quote_literal(v), ', ' ORDER BY n) FROM unnest(coalesce(v_pol.live_values, ARRAY['queued', 'running'])) WITH ORDINALITY AS u(v, n)),
             p_partition::text),
      format('SHARE ROW EXCLUSIVE on %s', p_partition),
      p_reason || '; no job may become live in it from here on', true, ARRAY[p_partition::text])::qmaint.plan_step;
    RETURN NEXT ROW(0, 'detach', p_partition::text,
      format('ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY', p_parent, p_partition),
      format('SHARE UPDATE EXCLUSIVE on %s, %s', p_parent, p_partition),
      'detach without blocking queries on the parent', false, ARRAY[p_parent::text, p_partition::text])::qmaint.plan_step;
    RETURN NEXT ROW(0, p_mode, p_partition::text, v_dispose,
      format('ACCESS EXCLUSIVE on %s (detached)', p_partition),
      format('retention mode %s: %s', p_mode, v_what), true, ARRAY[p_partition::text])::qmaint.plan_step;
  ELSE
    RETURN NEXT ROW(0, 'detach', p_partition::text,
      format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; SELECT qmaint.assert_drained(%L); ALTER TABLE %s DETACH PARTITION %s; %s',
             p_partition, p_partition::text, p_parent, p_partition, v_dispose),
      format('ACCESS EXCLUSIVE on %s, %s', p_parent, p_partition),
      format('%s; plain DETACH (no CONCURRENTLY here), then %s, in one transaction', p_reason, v_what), true,
      ARRAY[p_parent::text, p_partition::text])::qmaint.plan_step;
  END IF;
END;
$$;

-- Tables this parent's retirement detached that still await their disposal
-- (an interrupted run): they carry the guard trigger naming the parent.
CREATE OR REPLACE FUNCTION qmaint.retired_leftovers(p_parent regclass)
RETURNS TABLE (rel regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.tgrelid::regclass
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
   WHERE t.tgname = 'qmaint_retire'
     AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = p_parent)
     AND NOT c.relispartition
     AND split_part(encode(t.tgargs, 'escape'), '\000', 1) = qmaint.relation_text(p_parent)
   ORDER BY 1
$$;

-- ---------------------------------------------------------------------------
-- Plans.

-- Renumber steps 1..n in the order given.
CREATE OR REPLACE FUNCTION qmaint.numbered(p_steps qmaint.plan_step[]) RETURNS SETOF qmaint.plan_step
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT (ROW(o.n::integer, o.action, o.target, o.statement, o.lock_level, o.reason, o.transactional, o.locks))::qmaint.plan_step
    FROM unnest(p_steps) WITH ORDINALITY AS o(seq, action, target, statement, lock_level, reason, transactional, locks, n)
   ORDER BY o.n
$$;

-- The ordered steps rotate takes for one policy at p_now:
--   1. finish interrupted retirements (pending detach, undisposed tables);
--   2. make the runway: the hot partition and runway_target() ahead, plus the
--      slots of rows waiting in a default partition (at most 100 a run);
--      one odd far-future row never widens this, it is measured from p_now;
--   3. re-profile partitions whose state changed;
--   4. move stragglers out of expired partitions (stragglers = move);
--   5. advance the low-water mark;
--   6. retire expired drained partitions (DETACH, then drop/keep/archive).
-- p_concurrent: the caller runs steps one by one from a client and may use
-- DETACH ... CONCURRENTLY (ignored while a default partition exists).
CREATE OR REPLACE FUNCTION qmaint.rotate_plan(p_parent_table text, p_now timestamptz, p_concurrent boolean DEFAULT false)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy;
  v_parent regclass;
  v_parts qmaint.partition_bound[];
  v_steps qmaint.plan_step[] := '{}'::qmaint.plan_step[];
  v_default regclass;
  v_default_name text;
  v_concurrent boolean;
  v_floor timestamptz;
  v_target integer;
  v_cutoff timestamptz;
  v_key text;
  v_live jsonb;
  v_guarded oid[];
  v_pending oid[];
  v_wanted jsonb := '{}'::jsonb;
  v_hot_text text[];
  v_warm_text text[];
  v_cold_text text[];
  v_wanted_now text[];
  v_diff jsonb;
  v_mark_target timestamptz;
  v_queued bigint;
  v_running bigint;
  v_retiring regclass[] := '{}'::regclass[];
  v_slot timestamptz;
  r record;
BEGIN
  v_pol := qmaint.require_policy(p_parent_table);
  v_parent := to_regclass(p_parent_table);
  v_key := qmaint.partition_key(v_parent);
  v_parts := qmaint.bounds_of(v_parent);
  v_default := qmaint.default_partition_of(v_parent);
  -- PostgreSQL refuses DETACH ... CONCURRENTLY while a default partition exists
  -- (or is about to: this plan creates it when the policy asks).
  v_concurrent := p_concurrent AND v_default IS NULL AND NOT v_pol.default_partition;
  v_cutoff := p_now - v_pol.retention;
  v_pending := ARRAY(SELECT inhrelid FROM pg_inherits WHERE inhparent = v_parent AND inhdetachpending);
  v_guarded := ARRAY(SELECT t.tgrelid FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
                      WHERE i.inhparent = v_parent AND t.tgname = 'qmaint_retire');

  -- 1. Interrupted retirements.
  FOR r IN SELECT x::regclass AS rel FROM unnest(v_pending) x ORDER BY 1 LOOP
    v_steps := v_steps || ROW(0, 'finalize', r.rel::text, format('ALTER TABLE %s DETACH PARTITION %s FINALIZE', v_parent, r.rel),
      format('SHARE UPDATE EXCLUSIVE on %s, %s', v_parent, r.rel), 'an interrupted DETACH ... CONCURRENTLY is pending: finish it', true,
      ARRAY[v_parent::text, r.rel::text])::qmaint.plan_step;
    IF r.rel::oid = ANY (v_guarded) THEN
      v_steps := v_steps || ROW(0, v_pol.retention_mode, r.rel::text,
        qmaint.dispose_sql(r.rel::text, p_parent_table, v_pol.retention_mode, v_pol.archive_schema, p_now),
        format('ACCESS EXCLUSIVE on %s (detached)', r.rel), format('retention mode %s for the partition just finalized', v_pol.retention_mode), true,
        ARRAY[r.rel::text])::qmaint.plan_step;
    END IF;
  END LOOP;
  FOR r IN SELECT rel FROM qmaint.retired_leftovers(v_parent) LOOP
    v_steps := v_steps || ROW(0, v_pol.retention_mode, r.rel::text,
      qmaint.dispose_sql(r.rel::text, p_parent_table, v_pol.retention_mode, v_pol.archive_schema, p_now),
      format('ACCESS EXCLUSIVE on %s (detached)', r.rel), format('detached by an interrupted run; retention mode %s', v_pol.retention_mode), true,
      ARRAY[r.rel::text])::qmaint.plan_step;
  END LOOP;

  -- The default partition, when the policy asks for one (built standalone,
  -- then attached: SHARE UPDATE EXCLUSIVE on the parent).
  IF v_pol.default_partition AND v_default IS NULL THEN
    SELECT format('%I.%I', n.nspname, left(c.relname, 55) || '_default') INTO v_default_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_parent;
    v_steps := v_steps || ROW(0, 'create', v_default_name,
      format('CREATE TABLE %1$s (LIKE %2$s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING STORAGE); ALTER TABLE %2$s ATTACH PARTITION %1$s DEFAULT',
             v_default_name, v_parent),
      format('SHARE UPDATE EXCLUSIVE on %s', v_parent), 'the policy asks for a default partition', true, ARRAY[v_parent::text])::qmaint.plan_step;
  END IF;

  -- 2. The runway, from the slot holding p_now.
  v_floor := qmaint.partition_floor(p_now, v_pol.partition_interval);
  v_target := qmaint.runway_target_of(v_pol, v_parts, p_now);
  FOR i IN 0 .. v_target LOOP
    v_steps := v_steps || ARRAY(SELECT qmaint.gap_create_steps(v_parent, v_floor + v_pol.partition_interval * i,
                                                               v_floor + v_pol.partition_interval * (i + 1), 'hot', v_parts));
  END LOOP;
  IF v_default IS NOT NULL THEN
    FOR v_slot IN EXECUTE format('SELECT DISTINCT qmaint.partition_floor(%I, $1) FROM %s ORDER BY 1 LIMIT 100', v_key, v_default)
             USING v_pol.partition_interval LOOP
      IF v_slot < v_floor OR v_slot > v_floor + v_pol.partition_interval * v_target THEN
        v_steps := v_steps || ARRAY(SELECT qmaint.gap_create_steps(v_parent, v_slot, v_slot + v_pol.partition_interval,
                                      CASE WHEN v_slot + v_pol.partition_interval <= p_now THEN 'warm' ELSE 'hot' END, v_parts));
      END IF;
    END LOOP;
  END IF;

  -- 3. and 4.: one pass over the partitions. Live jobs are counted from the
  -- low-water mark on (below it there are none, see low_water_target).
  v_live := qmaint.live_jobs_by_partition(v_parent, coalesce(v_pol.low_water, '-infinity'));
  -- Wanted profiles, also as reloptions text, so an up-to-date partition is
  -- recognised by one array containment test.
  SELECT jsonb_object_agg(p, coalesce(qmaint.effective_profile(p_parent_table, p), '{}'::jsonb)) INTO v_wanted
    FROM unnest(ARRAY['hot', 'warm', 'cold']) p;
  v_hot_text := ARRAY(SELECT format('%s=%s', k, v) FROM jsonb_each_text(v_wanted -> 'hot') x(k, v));
  v_warm_text := ARRAY(SELECT format('%s=%s', k, v) FROM jsonb_each_text(v_wanted -> 'warm') x(k, v));
  v_cold_text := ARRAY(SELECT format('%s=%s', k, v) FROM jsonb_each_text(v_wanted -> 'cold') x(k, v));
  FOR r IN SELECT b.partition, b.lower_bound, b.upper_bound, b.is_default, c.reloptions,
                  coalesce((v_live ->> b.partition::oid::text)::bigint, 0) AS live_jobs
             FROM unnest(v_parts) b JOIN pg_class c ON c.oid = b.partition
            WHERE NOT b.partition::oid = ANY (v_pending)
            ORDER BY b.lower_bound LOOP
    IF NOT r.is_default AND r.upper_bound <= v_cutoff THEN
      IF r.live_jobs = 0 THEN
        v_retiring := v_retiring || r.partition;
      ELSIF v_pol.stragglers = 'move' THEN
        EXECUTE format('SELECT (SELECT count(*) FROM (%s) w), (SELECT count(*) FROM (%s) h)',
                       qmaint.live_arms(v_pol, r.partition, '1', 'true', 'waiting'), qmaint.live_arms(v_pol, r.partition, '1', 'true', 'held'))
          INTO v_queued, v_running;
        IF v_queued > 0 THEN
          v_steps := v_steps || ROW(0, 'move', r.partition::text,
            format('SELECT qmaint.move_stragglers(%L, %L, %s)', r.partition::text, p_now, qmaint.move_batch_size()),
            format('ROW EXCLUSIVE on %s (row locks, batches of %s)', v_parent, qmaint.move_batch_size()),
            format('expired (before %s) but holds %s queued job(s): move them into the partition holding now, a batch at a time until none is left%s',
                   v_cutoff, v_queued, CASE WHEN v_running > 0 THEN format('; %s running job(s) stay until done', v_running) ELSE '' END),
            true, ARRAY[v_parent::text, r.partition::text])::qmaint.plan_step;
          -- Once moved it is drained: retire it in this run too (the guard
          -- re-checks, and skips it if a job was claimed meanwhile).
          IF v_running = 0 THEN
            v_retiring := v_retiring || r.partition;
          END IF;
        END IF;
      END IF;
      CONTINUE;
    END IF;
    IF r.partition::oid = ANY (v_guarded) THEN
      v_steps := v_steps || ROW(0, 'unguard', r.partition::text, format('DROP TRIGGER qmaint_retire ON %s', r.partition),
        format('ACCESS EXCLUSIVE on %s', r.partition), 'no longer retiring (policy changed or jobs came back): lift the guard', true,
        ARRAY[r.partition::text])::qmaint.plan_step;
    END IF;
    DECLARE
      v_state text := qmaint.partition_state(r.is_default, r.lower_bound, r.upper_bound, r.live_jobs, p_now);
      v_profile text := qmaint.state_profile(v_state);
    BEGIN
      v_wanted_now := CASE v_profile WHEN 'hot' THEN v_hot_text WHEN 'warm' THEN v_warm_text ELSE v_cold_text END;
      IF NOT coalesce(r.reloptions, '{}') @> v_wanted_now THEN
        v_diff := qmaint.profile_diff(v_wanted -> v_profile, r.reloptions);
        IF v_diff <> '{}'::jsonb THEN
          v_steps := v_steps || ROW(0, 'profile', r.partition::text, format('ALTER TABLE %s SET (%s)', r.partition, qmaint.reloptions_sql(v_diff)),
            format('SHARE UPDATE EXCLUSIVE on %s', r.partition), format('%s partition: %s profile', v_state, v_profile), true,
            ARRAY[r.partition::text])::qmaint.plan_step;
        END IF;
      END IF;
    END;
  END LOOP;

  -- 5. The low-water mark (recomputed when the step runs).
  v_mark_target := qmaint.low_water_target(v_parent, p_now, v_parts);
  IF v_mark_target IS DISTINCT FROM v_pol.low_water OR cardinality(v_steps) > 0 OR cardinality(v_retiring) > 0 THEN
    v_steps := v_steps || ROW(0, 'advance', p_parent_table, format('SELECT qmaint.advance_low_water(%L, %L)', p_parent_table, p_now),
      'ROW SHARE on qmaint.partition_policy (its row locked)',
      format('claims skip partitions wholly before the oldest live job (mark now %s, wants %s)', v_pol.low_water, v_mark_target), true,
      ARRAY['qmaint.partition_policy'])::qmaint.plan_step;
  END IF;

  -- 6. Retire, oldest first.
  IF cardinality(v_retiring) > 0 AND NOT v_concurrent THEN
    -- Take every partition's lock before the first DETACH takes the parent's,
    -- so no DETACH waits for a partition while claims wait for the parent.
    v_steps := v_steps || ROW(0, 'lock', v_retiring[1]::text,
      format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', (SELECT string_agg(x::text, ', ') FROM unnest(v_retiring) x)),
      format('ACCESS EXCLUSIVE on %s', (SELECT string_agg(x::text, ', ') FROM unnest(v_retiring) x)),
      'when the plan runs as one transaction: lock the expired partitions (drained, pruned from claims) before the first DETACH locks the parent', true,
      v_retiring::text[])::qmaint.plan_step;
  END IF;
  FOR i IN 1 .. coalesce(cardinality(v_retiring), 0) LOOP
    v_steps := v_steps || ARRAY(SELECT qmaint.retire_steps(v_parent, v_retiring[i], v_pol.retention_mode, v_concurrent, p_now,
                                                           format('expired (wholly before %s) and drained', v_cutoff)));
  END LOOP;

  RETURN QUERY SELECT * FROM qmaint.numbered(v_steps);
END;
$$;

-- Plan for `qmaint partitions create --until`: the slots from the one holding
-- p_now through the one holding p_until that no partition covers yet.
-- Refuses more than p_max new partitions (a typo in --until is no reason to
-- make ten thousand tables).
CREATE OR REPLACE FUNCTION qmaint.create_plan(p_parent_table text, p_now timestamptz, p_until timestamptz, p_max integer DEFAULT 1000)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy;
  v_parent regclass;
  v_floor timestamptz;
  v_slots bigint;
  v_parts qmaint.partition_bound[];
  v_steps qmaint.plan_step[] := '{}'::qmaint.plan_step[];
BEGIN
  v_pol := qmaint.require_policy(p_parent_table);
  IF p_until < p_now THEN
    RAISE EXCEPTION '--until % lies before now (%)', p_until, p_now USING ERRCODE = '22023', HINT = 'give a time in the future';
  END IF;
  v_parent := to_regclass(p_parent_table);
  v_parts := qmaint.bounds_of(v_parent);
  v_floor := qmaint.partition_floor(p_now, v_pol.partition_interval);
  v_slots := CASE WHEN qmaint.is_month(v_pol.partition_interval)
                  THEN (extract(year FROM age(qmaint.partition_floor(p_until, v_pol.partition_interval), v_floor)) * 12
                        + extract(month FROM age(qmaint.partition_floor(p_until, v_pol.partition_interval), v_floor)))::bigint
                  ELSE floor(extract(epoch FROM p_until - v_floor) / extract(epoch FROM v_pol.partition_interval))::bigint END + 1;
  IF v_slots > p_max THEN
    RAISE EXCEPTION 'creating partitions until % would make up to % partitions of %, more than the limit of %', p_until, v_slots, v_pol.partition_interval, p_max
      USING ERRCODE = '22023', HINT = 'pick a nearer --until or raise --max';
  END IF;
  FOR i IN 0 .. v_slots - 1 LOOP
    v_steps := v_steps || ARRAY(SELECT qmaint.gap_create_steps(v_parent, v_floor + v_pol.partition_interval * i,
                                                               v_floor + v_pol.partition_interval * (i + 1), 'hot', v_parts));
  END LOOP;
  RETURN QUERY SELECT * FROM qmaint.numbered(v_steps);
END;
$$;

-- The parent (managed by a policy) a partition is attached to, or NULL.
CREATE OR REPLACE FUNCTION qmaint.managed_parent_of(p_partition regclass) RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT i.inhparent::regclass FROM pg_inherits i
   WHERE i.inhrelid = p_partition AND (qmaint.policy_of(i.inhparent::regclass)).parent_table IS NOT NULL
$$;

-- Plan for `qmaint partitions detach NAME` (p_drop false: keep the table) and
-- `drop NAME` (p_drop true). Only a past partition with no queued or running
-- job is accepted; `drop` also takes a table qmaint detached earlier.
CREATE OR REPLACE FUNCTION qmaint.detach_plan(p_partition text, p_now timestamptz, p_concurrent boolean DEFAULT false, p_drop boolean DEFAULT false)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rel regclass := to_regclass(p_partition);
  v_parent regclass;
  v_state record;
  v_pending boolean;
  v_has_default boolean;
  v_comment text;
  v_steps qmaint.plan_step[] := '{}'::qmaint.plan_step[];
  v_mode text := CASE WHEN p_drop THEN 'drop' ELSE 'detach' END;
BEGIN
  IF v_rel IS NULL THEN
    RAISE EXCEPTION 'no table named %', p_partition USING ERRCODE = '22023', HINT = 'see qmaint partitions list for the names';
  END IF;
  v_parent := qmaint.managed_parent_of(v_rel);
  IF v_parent IS NULL THEN
    v_comment := obj_description(v_rel, 'pg_class');
    IF p_drop AND (v_comment LIKE 'qmaint: detached from %' OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_rel AND tgname = 'qmaint_retire'))
       AND NOT (SELECT relispartition FROM pg_class WHERE oid = v_rel) THEN
      RETURN NEXT ROW(1, 'drop', v_rel::text, format('DROP TABLE %s', v_rel), format('ACCESS EXCLUSIVE on %s (detached)', v_rel),
                      coalesce(v_comment, 'detached by qmaint') || '; drop it', true, ARRAY[v_rel::text])::qmaint.plan_step;
      RETURN;
    END IF;
    RAISE EXCEPTION '% is not a partition of a table with a partition policy%', v_rel,
      CASE WHEN p_drop THEN ' nor a table qmaint detached' ELSE '' END
      USING ERRCODE = '22023', HINT = 'see qmaint partitions list';
  END IF;
  SELECT inhdetachpending INTO v_pending FROM pg_inherits WHERE inhrelid = v_rel;
  IF v_pending THEN
    v_steps := v_steps || ROW(0, 'finalize', v_rel::text, format('ALTER TABLE %s DETACH PARTITION %s FINALIZE', v_parent, v_rel),
      format('SHARE UPDATE EXCLUSIVE on %s, %s', v_parent, v_rel), 'an interrupted DETACH ... CONCURRENTLY is pending: finish it', true,
      ARRAY[v_parent::text, v_rel::text])::qmaint.plan_step;
    v_steps := v_steps || ROW(0, v_mode, v_rel::text, qmaint.dispose_sql(v_rel::text, qmaint.relation_text(v_parent), v_mode, 'qmaint_archive', p_now),
      format('ACCESS EXCLUSIVE on %s (detached)', v_rel), CASE WHEN p_drop THEN 'drop it' ELSE 'keep it as a table' END, true,
      ARRAY[v_rel::text])::qmaint.plan_step;
    RETURN QUERY SELECT * FROM qmaint.numbered(v_steps);
    RETURN;
  END IF;
  SELECT * INTO v_state FROM qmaint.partition_states(v_parent, p_now) s WHERE s.partition = v_rel;
  IF v_state.state IN ('hot', 'future') AND NOT v_state.is_default THEN
    RAISE EXCEPTION '% is a % partition (it holds or follows %); only past partitions can be detached', v_rel, v_state.state, p_now
      USING ERRCODE = '22023', HINT = 'wait until it lies in the past';
  END IF;
  IF v_state.live_jobs > 0 OR EXISTS (SELECT 1 WHERE v_state.is_default) AND v_state.state = 'warm' THEN
    RAISE EXCEPTION '% holds % queued or running job(s); a partition with live jobs is never detached', v_rel, v_state.live_jobs
      USING ERRCODE = '22023', HINT = 'let them finish, or move queued ones forward with qmaint partitions compact';
  END IF;
  v_has_default := qmaint.default_partition_of(v_parent) IS NOT NULL;
  RETURN QUERY SELECT * FROM qmaint.numbered(ARRAY(
    SELECT qmaint.retire_steps(v_parent, v_rel, v_mode, p_concurrent AND NOT v_has_default, p_now,
                               format('%s partition with no queued or running job', v_state.state))));
END;
$$;

-- Plan for `qmaint partitions compact`: move queued jobs out of every
-- partition wholly before the retention cut-off, whatever the policy's
-- stragglers setting, so retention can retire them.
CREATE OR REPLACE FUNCTION qmaint.compact_plan(p_parent_table text, p_now timestamptz)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol qmaint.partition_policy;
  v_parent regclass;
  v_steps qmaint.plan_step[] := '{}'::qmaint.plan_step[];
  v_queued bigint;
  r record;
BEGIN
  v_pol := qmaint.require_policy(p_parent_table);
  v_parent := to_regclass(p_parent_table);
  FOR r IN SELECT * FROM qmaint.partition_states(v_parent, p_now) s
            WHERE NOT s.is_default AND s.upper_bound <= p_now - v_pol.retention AND s.live_jobs > 0 ORDER BY s.lower_bound LOOP
    v_queued := qmaint.waiting_jobs(r.partition);
    IF v_queued > 0 THEN
      v_steps := v_steps || ROW(0, 'move', r.partition::text,
        format('SELECT qmaint.move_stragglers(%L, %L, %s)', r.partition::text, p_now, qmaint.move_batch_size()),
        format('ROW EXCLUSIVE on %s (row locks, batches of %s)', v_parent, qmaint.move_batch_size()),
        format('expired, holds %s queued job(s): move them into the partition holding now, a batch at a time until none is left', v_queued),
        true, ARRAY[v_parent::text, r.partition::text])::qmaint.plan_step;
    END IF;
  END LOOP;
  RETURN QUERY SELECT * FROM qmaint.numbered(v_steps);
END;
$$;

-- ---------------------------------------------------------------------------
-- Server-side execution.

-- The relations a step locks, from its own data (qmaint.plan_step.locks):
-- what qmaint.lock_blockers() is asked about when the step gives up.
CREATE OR REPLACE FUNCTION qmaint.step_relations(p_step qmaint.plan_step) RETURNS regclass[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(array_agg(DISTINCT to_regclass(l)) FILTER (WHERE to_regclass(l) IS NOT NULL), '{}'::regclass[])
    FROM unnest(p_step.locks) l
$$;

-- What running one step came to, the same shape the TypeScript executor
-- reports (StepResult in src/plan.ts): seq, action, target, attempts (1 + the
-- retries it took), outcome (done | skipped | gave_up), blockers (the sessions
-- that made it give up, else []), ms.
CREATE OR REPLACE FUNCTION qmaint.step_result(p_step qmaint.plan_step, p_attempts integer, p_outcome text, p_blockers jsonb, p_started timestamptz)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object('seq', p_step.seq, 'action', p_step.action, 'target', p_step.target, 'attempts', p_attempts,
                            'outcome', p_outcome, 'blockers', coalesce(p_blockers, '[]'::jsonb),
                            'ms', round(extract(epoch FROM clock_timestamp() - p_started) * 1000))
$$;

-- The one SQL executor of plan steps (rotate_all, vacuum_tune_all, and so
-- pg_cron, the daemon and the CLI through a transaction pooler): run them in
-- the current transaction, each in its own subtransaction under
-- p_lock_timeout, retrying one that hit the timeout after
-- qmaint.lock_retry_delay(n), at most p_retries times. A 'move' step is
-- repeated until it moves nothing (at most p_move_batches batches). A retire
-- step that finds live jobs again (QM001) is skipped with the rest of its
-- partition's steps. On giving up, the failed step leaves no trace, the steps
-- before it stay done, and the result says {"status": "lock_timeout"} with
-- the sessions holding locks on the step's relations (plan_step.locks).
-- Result: {"status", "done": [step_result], "skipped": [step_result + reason],
-- and on a give-up "failed" (step_result + statement, lock_level), "blockers",
-- "message"}.
CREATE OR REPLACE FUNCTION qmaint.run_steps(p_steps qmaint.plan_step[], p_lock_timeout interval, p_retries integer DEFAULT qmaint.lock_retries(),
                                 p_move_batches integer DEFAULT qmaint.move_batches_per_run())
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (plpgsql_check: the EXECUTEd text is a plan step's statement, built by qmaint's
-- planning functions with every identifier through %I/%s of a regclass and every
-- value through %L; no caller text reaches it unquoted)
DECLARE
  v_step qmaint.plan_step;
  v_prev text := current_setting('lock_timeout');
  v_attempt integer;
  v_moved integer;
  v_total integer;
  v_batches integer;
  v_done jsonb := '[]'::jsonb;
  v_skipped jsonb := '[]'::jsonb;
  v_skip text[] := '{}'::text[];
  v_blockers jsonb;
  v_started timestamptz;
BEGIN
  PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint || 'ms', true);
  FOREACH v_step IN ARRAY coalesce(p_steps, '{}') LOOP
    IF v_step.target = ANY (v_skip) THEN
      CONTINUE;
    END IF;
    IF NOT v_step.transactional THEN
      RAISE EXCEPTION 'step % (%) cannot run inside a transaction', v_step.seq, v_step.action USING ERRCODE = '22023';
    END IF;
    v_attempt := 0;
    v_started := clock_timestamp();
    LOOP
      v_attempt := v_attempt + 1;
      BEGIN
        v_total := 0;
        IF v_step.action = 'move' THEN
          v_batches := 0;
          LOOP
            EXECUTE v_step.statement INTO v_moved;
            v_total := v_total + v_moved;
            v_batches := v_batches + 1;
            EXIT WHEN v_moved = 0 OR v_batches >= p_move_batches;
          END LOOP;
        ELSE
          EXECUTE v_step.statement;
        END IF;
        v_done := v_done || jsonb_build_array(qmaint.step_result(v_step, v_attempt, 'done', NULL, v_started)
                    || CASE WHEN v_step.action = 'move' THEN jsonb_build_object('moved', v_total) ELSE '{}'::jsonb END);
        EXIT;
      EXCEPTION
        WHEN lock_not_available THEN
          IF v_attempt > p_retries THEN
            v_blockers := qmaint.lock_blockers(qmaint.step_relations(v_step));
            PERFORM set_config('lock_timeout', v_prev, true);
            RETURN jsonb_build_object('status', 'lock_timeout', 'done', v_done, 'skipped', v_skipped,
              'failed', qmaint.step_result(v_step, v_attempt, 'gave_up', v_blockers, v_started)
                        || jsonb_build_object('statement', v_step.statement, 'lock_level', v_step.lock_level),
              'blockers', v_blockers,
              'message', format('gave up on "%s %s" after %s tries of lock_timeout %s: blocked by %s; end or wait for those sessions, then run it again',
                                v_step.action, v_step.target, v_attempt, p_lock_timeout, qmaint.describe_blockers(v_blockers)));
          END IF;
          PERFORM pg_sleep(extract(epoch FROM qmaint.lock_retry_delay(v_attempt)));
        WHEN SQLSTATE 'QM001' OR SQLSTATE 'QM002' THEN
          v_skip := v_skip || v_step.target;
          v_skipped := v_skipped || jsonb_build_array(qmaint.step_result(v_step, v_attempt, 'skipped', NULL, v_started)
                                                      || jsonb_build_object('reason', SQLERRM));
          EXIT;
      END;
    END LOOP;
  END LOOP;
  PERFORM set_config('lock_timeout', v_prev, true);
  RETURN jsonb_build_object('status', 'ok', 'done', v_done, 'skipped', v_skipped);
END;
$$;

-- The server-side rotate of every policy: what pg_cron and the daemon run
-- (through qmaint.run_task('rotate')). One transaction under the transaction
-- advisory maintenance lock; plain DETACH under each policy's lock_timeout.
-- Returns {"status": "ok" | "skipped" | "lock_timeout", "message", "tables"}.
-- A lock give-up does not raise: the work before it (the runway above all)
-- commits, the failed step left nothing behind, the message names blockers.
CREATE OR REPLACE FUNCTION qmaint.rotate_all(p_now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_pol record;
  v_problem text;
  v_result jsonb;
  v_tables jsonb := '{}'::jsonb;
  v_status text := 'ok';
  v_messages text[] := '{}'::text[];
  v_holder integer;
BEGIN
  IF NOT pg_try_advisory_xact_lock(qmaint.maintenance_lock_key()) THEN
    SELECT l.pid INTO v_holder FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = ((qmaint.maintenance_lock_key() >> 32) & 4294967295)::oid
       AND l.objid = (qmaint.maintenance_lock_key() & 4294967295)::oid
     LIMIT 1;
    RETURN jsonb_build_object('status', 'skipped', 'skipped', true,
      'message', format('another maintenance run holds the lock%s; nothing done', coalesce(format(' (pid %s)', v_holder), '')));
  END IF;
  FOR v_pol IN SELECT parent_table, lock_timeout FROM qmaint.partition_policy ORDER BY parent_table LOOP
    v_problem := qmaint.check_managed_table(v_pol.parent_table);
    IF v_problem IS NOT NULL THEN
      v_tables := v_tables || jsonb_build_object(v_pol.parent_table, jsonb_build_object('status', 'error', 'message', v_problem));
      v_messages := v_messages || format('%s: %s', v_pol.parent_table, v_problem);
      CONTINUE;
    END IF;
    v_result := qmaint.run_steps(ARRAY(SELECT qmaint.rotate_plan(v_pol.parent_table, p_now, false)), v_pol.lock_timeout);
    v_result := v_result || jsonb_build_object('low_water', (SELECT low_water FROM qmaint.partition_policy WHERE parent_table = v_pol.parent_table));
    v_tables := v_tables || jsonb_build_object(v_pol.parent_table, v_result);
    IF v_result ->> 'status' = 'lock_timeout' THEN
      v_status := 'lock_timeout';
      v_messages := v_messages || format('%s: %s', v_pol.parent_table, v_result ->> 'message');
    ELSE
      v_messages := v_messages || format('%s: %s', v_pol.parent_table, coalesce((
        SELECT string_agg(format('%s %s', n, a), ', ' ORDER BY a)
          FROM (SELECT d ->> 'action' AS a, count(*) AS n FROM jsonb_array_elements(v_result -> 'done') d GROUP BY 1) s), 'nothing to do'));
    END IF;
  END LOOP;
  RETURN jsonb_build_object('status', v_status, 'skipped', false, 'now', p_now,
                            'message', coalesce(nullif(array_to_string(v_messages, '; '), ''), 'no partition policy'),
                            'tables', v_tables);
END;
$$;

-- ---------------------------------------------------------------------------
-- Policy checks PostgreSQL has to make (interval text is PostgreSQL's), for
-- `qmaint partitions apply`: every problem of one policy document, or none.
CREATE OR REPLACE FUNCTION qmaint.check_policy(p_policy jsonb) RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_problems text[] := '{}'::text[];
  v_interval interval;
  v_retention interval;
  v_lock interval;
  v_problem text;
BEGIN
  IF jsonb_typeof(p_policy -> 'table') = 'string' THEN
    v_problem := qmaint.check_managed_table(p_policy ->> 'table', CASE WHEN jsonb_typeof(p_policy -> 'columns') = 'object' THEN p_policy -> 'columns' ELSE '{}'::jsonb END);
    IF v_problem IS NOT NULL THEN
      v_problems := v_problems || v_problem;
    END IF;
  END IF;
  IF jsonb_typeof(p_policy -> 'interval') = 'string' THEN
    BEGIN
      v_interval := (p_policy ->> 'interval')::interval;
      v_problem := qmaint.check_partition_interval(v_interval);
      IF v_problem IS NOT NULL THEN
        v_problems := v_problems || format('interval %s: %s', p_policy ->> 'interval', v_problem);
        v_interval := NULL;
      END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR syntax_error THEN
      v_problems := v_problems || format('interval %s is not a PostgreSQL interval (e.g. "1 day", "6 hours")', p_policy -> 'interval');
    END;
  END IF;
  IF jsonb_typeof(p_policy -> 'retention') = 'string' THEN
    BEGIN
      v_retention := (p_policy ->> 'retention')::interval;
      IF v_interval IS NOT NULL AND v_retention < v_interval THEN
        v_problems := v_problems || format('retention %s is shorter than the interval %s; keep at least one whole partition', p_policy ->> 'retention', p_policy ->> 'interval');
      END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR syntax_error THEN
      v_problems := v_problems || format('retention %s is not a PostgreSQL interval (e.g. "7 days")', p_policy -> 'retention');
    END;
  END IF;
  IF jsonb_typeof(p_policy -> 'lockTimeout') = 'string' THEN
    BEGIN
      v_lock := (p_policy ->> 'lockTimeout')::interval;
      IF v_lock <= interval '0' OR v_lock > interval '10 minutes' THEN
        v_problems := v_problems || format('lockTimeout %s must be more than 0 and at most 10 minutes', p_policy ->> 'lockTimeout');
      END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR syntax_error THEN
      v_problems := v_problems || format('lockTimeout %s is not a PostgreSQL interval (e.g. "2s", "500ms")', p_policy -> 'lockTimeout');
    END;
  END IF;
  RETURN v_problems;
END;
$$;
