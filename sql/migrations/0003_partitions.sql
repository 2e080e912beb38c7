-- qmaint partition lifecycle: the runway made ahead, re-profiling as
-- partitions age, straggler moves, retirement by DETACH (+ DROP or archive),
-- the low-water mark, and rotate_all(), the server-side rotate pg_cron and
-- the daemon call. Every function that changes something either returns a
-- plan (SETOF qmaint.plan_step) or runs one.

-- How long ago a partition's upper bound must lie before the low-water mark
-- may pass it: a transaction that started before the boundary can still
-- insert a row stamped with its older now().
CREATE FUNCTION qmaint.low_water_margin() RETURNS interval
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT interval '10 minutes' $$;

-- Server-side retries of a statement that hit lock_timeout (the CLI has its
-- own setting, lockRetries).
CREATE FUNCTION qmaint.lock_retries() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT 3 $$;

-- Straggler moves: rows per batch, and batches per server-side run (the rest
-- moves on the next run, so one run never holds a long transaction).
CREATE FUNCTION qmaint.move_batch_size() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT 1000 $$;
CREATE FUNCTION qmaint.move_batches_per_run() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT 20 $$;

-- The policy row of a parent given as a regclass.
CREATE FUNCTION qmaint.policy_of(p_parent regclass) RETURNS qmaint.partition_policy
LANGUAGE sql STABLE
AS $$
  SELECT pol.* FROM qmaint.partition_policy pol
   WHERE to_regclass(pol.parent_table) = p_parent
$$;

-- "schema.table" of a relation, unquoted (how partition_policy names tables).
CREATE FUNCTION qmaint.relation_text(p_rel regclass) RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_rel
$$;

-- The partition key column of a range-partitioned table.
CREATE FUNCTION qmaint.partition_key(p_parent regclass) RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT a.attname::text
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
   WHERE pt.partrelid = p_parent AND pt.partstrat = 'r' AND pt.partnatts = 1
$$;

-- Quoted, comma-separated column list of a table (same order as its tuples).
CREATE FUNCTION qmaint.column_list(p_rel regclass) RETURNS text
LANGUAGE sql STABLE
AS $$
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = p_rel AND attnum > 0 AND NOT attisdropped
$$;

-- Why a table cannot be managed by qmaint, or NULL when it can: it must exist,
-- be range-partitioned on one timestamptz column, and have the job columns
-- qmaint reads (id, status with queued/running, updated_at).
CREATE FUNCTION qmaint.check_managed_table(p_table text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_rel regclass := to_regclass(p_table);
  v_key text;
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
  SELECT string_agg(c, ', ') INTO v_missing
    FROM unnest(ARRAY['id', 'status', 'updated_at']) AS c
   WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = v_rel AND attname = c AND NOT attisdropped);
  IF v_missing IS NOT NULL THEN
    RETURN format('table %s lacks the job column(s) %s that qmaint reads', p_table, v_missing);
  END IF;
  RETURN NULL;
END;
$$;

-- How many partitions ahead of the hot one the policy wants at p_now. A number
-- in the policy is taken as is. "auto" (premake NULL) sizes it from the
-- measured insert rate: the rows per interval of the last full partition, or
-- of the hot one extrapolated, whichever is higher; every tenfold above 1,000
-- rows per interval keeps one more partition ahead of the floor, so a busy
-- queue gets more lead time before producers would have to make a partition
-- on the spot (and wait on each other while one does).
CREATE FUNCTION qmaint.runway_target(p_parent_table text, p_now timestamptz) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_pol qmaint.partition_policy;
  v_parent regclass;
  v_span double precision;
  v_prev double precision;
  v_hot double precision;
  v_rate double precision;
BEGIN
  SELECT * INTO v_pol FROM qmaint.partition_policy WHERE parent_table = p_parent_table;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF v_pol.premake IS NOT NULL THEN
    RETURN v_pol.premake;
  END IF;
  v_parent := to_regclass(p_parent_table);
  IF v_parent IS NULL THEN
    RETURN v_pol.premake_floor;
  END IF;
  v_span := extract(epoch FROM v_pol.partition_interval);
  -- Inserts recorded by the statistics system, per partition.
  SELECT coalesce(max(s.n_tup_ins) FILTER (WHERE p.upper_bound <= p_now), 0),
         coalesce(max(s.n_tup_ins * v_span / greatest(extract(epoch FROM p_now - p.lower_bound), v_span / 10))
                    FILTER (WHERE p.lower_bound <= p_now AND p_now < p.upper_bound), 0)
    INTO v_prev, v_hot
    FROM qmaint.partitions_of(v_parent) p
    JOIN pg_stat_user_tables s ON s.relid = p.partition
   WHERE NOT p.is_default
     AND p.upper_bound > p_now - v_pol.partition_interval
     AND p.lower_bound <= p_now;
  v_rate := greatest(v_prev, v_hot);
  IF v_rate < 10000 THEN
    RETURN v_pol.premake_floor;
  END IF;
  RETURN v_pol.premake_floor + least(6, floor(log(v_rate)) - 3)::integer;
END;
$$;
