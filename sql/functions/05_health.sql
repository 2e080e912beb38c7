-- qmaint health checks: the server-side checks `qmaint health`, pg_cron and the
-- daemon share. qmaint.health_checks() returns one row per check with status
-- ok | warn | critical; the CLI adds the dequeue verdict (it needs the claim
-- statement from TypeScript). Every time computation takes p_now.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- The documented defaults. Intervals are text, counts and ratios are numbers.
CREATE OR REPLACE FUNCTION qmaint.health_default_thresholds() RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
    'runway_critical_below',         1,
    'retention_grace',               '1 day',
    'dead_tuples_min',               10000,
    'dead_ratio_warn',               0.2,
    'dead_ratio_critical',           0.5,
    'xmin_horizon_warn',             '10 minutes',
    'xmin_horizon_critical',         '1 hour',
    'xmin_xid_age_warn',             10000000,
    'xmin_xid_age_critical',         500000000,
    'idle_in_transaction_warn',      '1 minute',
    'idle_in_transaction_critical',  '30 minutes',
    'oldest_queued_warn',            '15 minutes',
    'oldest_queued_critical',        '1 hour',
    'failed_window',                 '1 hour',
    'failed_rising_min',             10,
    'failed_rising_factor',          2,
    'failed_critical',               1000,
    'maintenance_stale',             '6 hours',
    'maintenance_failures_critical', 3,
    'cron_ticks_ahead_warn',         '1 day',
    'replication_lag_warn',          '30 seconds',
    'replication_lag_critical',      '5 minutes',
    'inactive_slot_wal_warn',        0,
    'inactive_slot_wal_critical',    1073741824
  )
$$;

-- A threshold read as an interval or as a number, with a clear error.
CREATE OR REPLACE FUNCTION qmaint.health_interval(p_t jsonb, p_key text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN (p_t ->> p_key)::interval;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR invalid_text_representation THEN
  RAISE EXCEPTION 'health threshold % must be an interval such as ''10 minutes'', got %', p_key, p_t -> p_key
    USING ERRCODE = '22023';
END;
$$;

CREATE OR REPLACE FUNCTION qmaint.health_number(p_t jsonb, p_key text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF jsonb_typeof(p_t -> p_key) = 'number' OR (p_t ->> p_key) ~ '^\s*-?[0-9]+(\.[0-9]+)?\s*$' THEN
    RETURN (p_t ->> p_key)::numeric;
  END IF;
  RAISE EXCEPTION 'health threshold % must be a number, got %', p_key, p_t -> p_key USING ERRCODE = '22023';
END;
$$;

-- Defaults, then the table, then p_thresholds; unknown names are refused.
CREATE OR REPLACE FUNCTION qmaint.health_resolve_thresholds(p_thresholds jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_defaults jsonb := qmaint.health_default_thresholds();
  v_unknown text;
  v_merged jsonb;
  v_key text;
BEGIN
  IF p_thresholds IS NULL OR jsonb_typeof(p_thresholds) <> 'object' THEN
    RAISE EXCEPTION 'health thresholds must be a JSON object' USING ERRCODE = '22023';
  END IF;
  SELECT string_agg(k, ', ' ORDER BY k) INTO v_unknown
    FROM jsonb_object_keys(p_thresholds) AS k WHERE NOT v_defaults ? k;
  IF v_unknown IS NOT NULL THEN
    RAISE EXCEPTION 'unknown health threshold %; known thresholds are %', v_unknown,
      (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(v_defaults) AS k)
      USING ERRCODE = '22023';
  END IF;
  v_merged := v_defaults
      || coalesce((SELECT jsonb_object_agg(name, value) FROM qmaint.health_thresholds), '{}')
      || p_thresholds;
  -- Check every value now, so a bad one fails before any check runs.
  FOR v_key IN SELECT jsonb_object_keys(v_merged) LOOP
    IF jsonb_typeof(v_defaults -> v_key) = 'string' THEN
      PERFORM qmaint.health_interval(v_merged, v_key);
    ELSE
      PERFORM qmaint.health_number(v_merged, v_key);
    END IF;
  END LOOP;
  RETURN v_merged;
END;
$$;

-- An interval as people read it: whole seconds, days split out.
CREATE OR REPLACE FUNCTION qmaint.health_age(p_age interval) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT justify_hours(date_trunc('second', greatest(p_age, interval '0')))::text $$;

-- The worse of two statuses.
CREATE OR REPLACE FUNCTION qmaint.health_worst(a text, b text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN 'critical' IN (a, b) THEN 'critical' WHEN 'warn' IN (a, b) THEN 'warn' ELSE 'ok' END
$$;

-- Runway: partitions ahead of the one holding p_now, contiguous, per policy.
CREATE OR REPLACE FUNCTION qmaint.health_runway(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET timezone = 'UTC'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_policy qmaint.partition_policy;
  v_parent regclass;
  v_hot record;
  v_ahead integer;
  v_until timestamptz;
  v_target integer;
  v_floor integer := qmaint.health_number(p_t, 'runway_critical_below')::integer;
  v_status text := 'ok';
  v_observed text[] := '{}'::text[];
  v_wants text[] := '{}'::text[];
  v_advice text[] := '{}'::text[];
  v_part record;
  v_parts qmaint.partition_bound[];
BEGIN
  FOR v_policy IN SELECT * FROM qmaint.partition_policy ORDER BY parent_table LOOP
    v_parent := to_regclass(v_policy.parent_table);
    IF v_parent IS NULL THEN
      v_status := 'critical';
      v_observed := v_observed || format('%s: table missing', v_policy.parent_table);
      v_advice := v_advice || format('create %s or remove its policy', v_policy.parent_table);
      CONTINUE;
    END IF;
    -- The bounds are read once (each read deparses every partition's bound).
    v_parts := qmaint.bounds_of(v_parent);
    v_target := qmaint.runway_target_of(v_policy, v_parts, p_now);
    v_wants := v_wants || format('%s: >= %s ahead', v_policy.parent_table, v_target);
    SELECT * INTO v_hot FROM unnest(v_parts) p
     WHERE NOT p.is_default AND p.lower_bound <= p_now AND p_now < p.upper_bound;
    IF v_hot IS NULL THEN
      v_status := 'critical';
      v_observed := v_observed || format('%s: no partition holds %s', v_policy.parent_table, p_now);
      v_advice := v_advice || format('run qmaint partitions rotate (or create --until) for %s', v_policy.parent_table);
      CONTINUE;
    END IF;
    v_ahead := 0;
    v_until := v_hot.upper_bound;
    FOR v_part IN SELECT * FROM unnest(v_parts) p
                   WHERE NOT p.is_default AND p.lower_bound >= v_hot.upper_bound ORDER BY p.lower_bound LOOP
      EXIT WHEN v_part.lower_bound <> v_until;
      v_ahead := v_ahead + 1;
      v_until := v_part.upper_bound;
    END LOOP;
    v_observed := v_observed || format('%s: %s ahead, covered until %s', v_policy.parent_table, v_ahead, v_until);
    IF v_ahead < v_floor THEN
      v_status := 'critical';
      v_advice := v_advice || format('run qmaint partitions rotate for %s now, then check that scheduled maintenance runs', v_policy.parent_table);
    ELSIF v_ahead < v_target THEN
      v_status := qmaint.health_worst(v_status, 'warn');
      v_advice := v_advice || format('run qmaint partitions rotate for %s; check that scheduled maintenance runs', v_policy.parent_table);
    END IF;
  END LOOP;
  RETURN QUERY SELECT 'runway'::text, v_status,
    coalesce(nullif(array_to_string(v_observed, '; '), ''), 'no partition policy'),
    format('%s (critical below %s)', coalesce(nullif(array_to_string(v_wants, '; '), ''), 'policy runway'), v_floor),
    CASE WHEN v_status = 'ok' THEN 'partitions are made ahead as the policy asks'
         ELSE array_to_string(v_advice, '; ') END;
END;
$$;

-- Default partitions: rows in one block creating the partitions they overlap;
-- one the policy does not ask for blocks DETACH ... CONCURRENTLY.
CREATE OR REPLACE FUNCTION qmaint.health_default_partition(p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: extra_warnings = false
-- (plpgsql_check: p_t is unused on purpose; every health check takes the thresholds,
-- and this one has none to read)
DECLARE
  v_row record;
  v_rows bigint;
  v_status text := 'ok';
  v_observed text[] := '{}'::text[];
  v_advice text[] := '{}'::text[];
BEGIN
  FOR v_row IN
    SELECT pol.parent_table, pol.default_partition AS wanted, p.partition
      FROM qmaint.partition_policy pol
      CROSS JOIN LATERAL qmaint.partitions_of(to_regclass(pol.parent_table)) p
     WHERE to_regclass(pol.parent_table) IS NOT NULL AND p.is_default
     ORDER BY 1
  LOOP
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s LIMIT 100001) s', v_row.partition) INTO v_rows;
    v_observed := v_observed || format('%s: %s%s rows', v_row.partition, v_rows, CASE WHEN v_rows > 100000 THEN '+' ELSE '' END);
    IF v_rows > 0 THEN
      v_status := 'critical';
      v_advice := v_advice || format('rows in %s block creating the partitions they fall into: run qmaint partitions rotate, which moves them into proper partitions', v_row.partition);
    ELSIF NOT v_row.wanted THEN
      v_status := qmaint.health_worst(v_status, 'warn');
      v_advice := v_advice || format('%s is not asked for by the policy and blocks DETACH CONCURRENTLY: drop it (DROP TABLE %s) or set defaultPartition in the policy', v_row.partition, v_row.partition);
    END IF;
  END LOOP;
  RETURN QUERY SELECT 'default_partition'::text, v_status,
    coalesce(nullif(array_to_string(v_observed, '; '), ''), 'no default partition'),
    '0 rows'::text,
    CASE WHEN v_status = 'ok' THEN 'no rows wait in a default partition' ELSE array_to_string(v_advice, '; ') END;
END;
$$;

-- Retention: drained partitions wholly before p_now - retention - grace that are
-- still attached, and detaches left pending by an interrupted run.
CREATE OR REPLACE FUNCTION qmaint.health_retention(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_grace interval := qmaint.health_interval(p_t, 'retention_grace');
  v_policy qmaint.partition_policy;
  v_part record;
  v_live boolean;
  v_overdue text[] := '{}'::text[];
  v_pending text[];
BEGIN
  FOR v_policy IN SELECT * FROM qmaint.partition_policy
                   WHERE to_regclass(parent_table) IS NOT NULL ORDER BY parent_table LOOP
    FOR v_part IN SELECT p.partition FROM qmaint.partitions_of(to_regclass(v_policy.parent_table)) p
                   WHERE NOT p.is_default AND p.upper_bound <= p_now - v_policy.retention - v_grace
                   ORDER BY p.lower_bound LOOP
      EXECUTE format('SELECT EXISTS (%s)', qmaint.live_arms(v_policy, v_part.partition, '1', 'true')) INTO v_live;
      IF NOT v_live THEN
        v_overdue := v_overdue || v_part.partition::text;
      END IF;
    END LOOP;
  END LOOP;
  SELECT coalesce(array_agg(i.inhrelid::regclass::text ORDER BY 1), '{}') INTO v_pending
    FROM pg_inherits i JOIN qmaint.partition_policy pol ON i.inhparent = to_regclass(pol.parent_table)
   WHERE i.inhdetachpending;
  RETURN QUERY SELECT 'retention'::text,
    CASE WHEN cardinality(v_overdue) + cardinality(v_pending) > 0 THEN 'warn' ELSE 'ok' END,
    format('%s overdue%s; %s pending detach%s', cardinality(v_overdue),
           CASE WHEN cardinality(v_overdue) > 0 THEN ' (' || array_to_string(v_overdue[1:5], ', ') || CASE WHEN cardinality(v_overdue) > 5 THEN ', ...' ELSE '' END || ')' ELSE '' END,
           cardinality(v_pending),
           CASE WHEN cardinality(v_pending) > 0 THEN ' (' || array_to_string(v_pending, ', ') || ')' ELSE '' END),
    format('none drained past retention + %s', p_t ->> 'retention_grace'),
    CASE WHEN cardinality(v_overdue) + cardinality(v_pending) = 0 THEN 'expired partitions are retired on time'
         ELSE 'run qmaint partitions rotate (it retires expired drained partitions and finalizes pending detaches); check that scheduled maintenance runs and is not blocked' END;
END;
$$;

-- Invalid or leftover indexes on qmaint's tables and on managed partitions
-- (a failed CREATE INDEX CONCURRENTLY, an interrupted REINDEX CONCURRENTLY).
CREATE OR REPLACE FUNCTION qmaint.health_invalid_indexes()
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH managed AS (
    SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'qmaint'::regnamespace
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN qmaint.partition_policy pol ON i.inhparent = to_regclass(pol.parent_table)
    UNION
    SELECT to_regclass(parent_table) FROM qmaint.partition_policy WHERE to_regclass(parent_table) IS NOT NULL
  ), bad AS (
    SELECT x.indexrelid::regclass::text AS name,
           CASE WHEN NOT x.indisvalid THEN 'invalid' WHEN NOT x.indisready THEN 'not ready' ELSE 'leftover' END AS why
      FROM pg_index x JOIN managed m ON m.oid = x.indrelid JOIN pg_class ic ON ic.oid = x.indexrelid
     WHERE NOT x.indisvalid OR NOT x.indisready OR NOT x.indislive OR ic.relname ~ '_cc(new|old)[0-9]*$'
  )
  SELECT 'invalid_indexes'::text,
         CASE WHEN count(*) = 0 THEN 'ok' ELSE 'warn' END,
         CASE WHEN count(*) = 0 THEN 'none'
              ELSE count(*) || ': ' || string_agg(name || ' (' || why || ')', ', ' ORDER BY name) END,
         'none'::text,
         CASE WHEN count(*) = 0 THEN 'every index is valid'
              ELSE 'drop each with DROP INDEX CONCURRENTLY and build it again (or REINDEX INDEX CONCURRENTLY); an invalid index serves no read and, once marked ready, still costs every write' END
    FROM bad
$$;

-- Every partition of qmaint.jobs carries a valid, ready child of jobs_claim_idx.
CREATE OR REPLACE FUNCTION qmaint.health_claim_index()
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH parts AS (
    SELECT p.partition FROM qmaint.partitions_of('qmaint.jobs') p
  ), covered AS (
    SELECT x.indrelid
      FROM pg_inherits ih JOIN pg_index x ON x.indexrelid = ih.inhrelid
     WHERE ih.inhparent = to_regclass('qmaint.jobs_claim_idx') AND x.indisvalid AND x.indisready AND x.indislive
  ), missing AS (
    SELECT partition::text AS name FROM parts WHERE partition NOT IN (SELECT indrelid FROM covered)
  )
  SELECT 'claim_index'::text,
         CASE WHEN to_regclass('qmaint.jobs_claim_idx') IS NULL OR (SELECT count(*) FROM missing) > 0 THEN 'critical' ELSE 'ok' END,
         CASE WHEN to_regclass('qmaint.jobs_claim_idx') IS NULL THEN 'qmaint.jobs_claim_idx is missing'
              ELSE format('%s of %s partitions lack a valid claim index%s', (SELECT count(*) FROM missing), (SELECT count(*) FROM parts),
                          coalesce(': ' || (SELECT string_agg(name, ', ' ORDER BY name) FROM missing), '')) END,
         'every partition'::text,
         CASE WHEN to_regclass('qmaint.jobs_claim_idx') IS NULL OR (SELECT count(*) FROM missing) > 0
              THEN 'the claim falls back to scanning those partitions: build the index on each (CREATE INDEX CONCURRENTLY ... ON <partition> (queue, priority DESC, run_at, id) WHERE status = ''queued'', then ALTER INDEX qmaint.jobs_claim_idx ATTACH PARTITION ...), or REINDEX INDEX CONCURRENTLY an invalid one'
              ELSE 'the claim can use its index everywhere' END
$$;

-- Dead tuples in the partitions the claim still scans: at or past the
-- low-water mark and not in the future.
CREATE OR REPLACE FUNCTION qmaint.health_dead_tuples(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_number(p_t, 'dead_tuples_min') AS min_dead,
           qmaint.health_number(p_t, 'dead_ratio_warn') AS warn,
           qmaint.health_number(p_t, 'dead_ratio_critical') AS crit
  ), hot AS (
    SELECT p.partition::text AS name, s.dead, s.live, s.dead::numeric / greatest(s.dead + s.live, 1) AS ratio
      FROM qmaint.partitions_of('qmaint.jobs') p
      CROSS JOIN LATERAL (SELECT pg_stat_get_dead_tuples(p.partition) AS dead, pg_stat_get_live_tuples(p.partition) AS live) s
     WHERE p.lower_bound <= p_now
       AND p.upper_bound > coalesce((SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'), '-infinity')
  ), judged AS (
    SELECT hot.*, CASE WHEN dead < lim.min_dead THEN 'ok' WHEN ratio >= lim.crit THEN 'critical' WHEN ratio >= lim.warn THEN 'warn' ELSE 'ok' END AS verdict
      FROM hot, lim
  ), worst AS (
    SELECT * FROM judged ORDER BY verdict = 'critical' DESC, verdict = 'warn' DESC, ratio DESC LIMIT 1
  )
  SELECT 'dead_tuples'::text,
         coalesce((SELECT verdict FROM worst), 'ok'),
         coalesce((SELECT format('worst %s: %s dead, %s live (%s%%)', name, dead, live, round(ratio * 100, 1)) FROM worst), 'no partition scanned by the claim'),
         (SELECT format('dead ratio < %s (critical %s) where >= %s dead', warn, crit, min_dead) FROM lim),
         CASE coalesce((SELECT verdict FROM worst), 'ok') WHEN 'ok' THEN 'autovacuum keeps up on the partitions the claim scans'
              ELSE 'autovacuum is not keeping up: check the xmin horizon (long transactions), then run qmaint vacuum tune and qmaint vacuum run on that partition' END
$$;

-- What holds the xmin horizon of this database back: sessions (by transaction
-- age and xid age), prepared transactions, replication slots.
CREATE OR REPLACE FUNCTION qmaint.health_xmin_horizon(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_interval(p_t, 'xmin_horizon_warn') AS warn,
           qmaint.health_interval(p_t, 'xmin_horizon_critical') AS crit,
           qmaint.health_number(p_t, 'xmin_xid_age_warn') AS xid_warn,
           qmaint.health_number(p_t, 'xmin_xid_age_critical') AS xid_crit
  ), holders AS (
    SELECT format('pid %s (%s, %s)', a.pid, coalesce(a.state, a.backend_type), coalesce(nullif(a.application_name, ''), 'no application name')) AS who,
           greatest(p_now - a.xact_start, interval '0') AS age,
           greatest(age(a.backend_xmin), coalesce(age(a.backend_xid), 0)) AS xids
      FROM pg_stat_activity a
     WHERE a.pid <> pg_backend_pid()
       AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
       AND a.backend_type NOT IN ('autovacuum worker', 'autovacuum launcher')
       -- A client backend without a database is one still starting (PostgreSQL 18 lists
       -- those, with the xmin of the catalog reads of its authentication): not a holder.
       -- Other processes without one (a walsender's standby feedback) count.
       AND (a.datname = current_database() OR (a.datid IS NULL AND a.backend_type <> 'client backend'))
    UNION ALL
    SELECT format('prepared transaction %L', gid), greatest(p_now - prepared, interval '0'), age(transaction)
      FROM pg_prepared_xacts WHERE database = current_database()
    UNION ALL
    SELECT format('replication slot %L', slot_name), NULL::interval, greatest(age(xmin), coalesce(age(catalog_xmin), 0))
      FROM pg_replication_slots
     WHERE (xmin IS NOT NULL OR catalog_xmin IS NOT NULL) AND (database IS NULL OR database = current_database())
  ), judged AS (
    SELECT h.*, CASE WHEN h.age >= lim.crit OR h.xids >= lim.xid_crit THEN 'critical'
                     WHEN h.age >= lim.warn OR h.xids >= lim.xid_warn THEN 'warn' ELSE 'ok' END AS verdict
      FROM holders h, lim
  ), worst AS (
    SELECT * FROM judged
     ORDER BY verdict = 'critical' DESC, verdict = 'warn' DESC, age DESC NULLS LAST, xids DESC LIMIT 1
  )
  SELECT 'xmin_horizon'::text,
         coalesce((SELECT verdict FROM worst), 'ok'),
         coalesce((SELECT format('oldest: %s, %s%s xids', who, coalesce(qmaint.health_age(age) || ', ', ''), xids) FROM worst), 'nothing holds the horizon'),
         format('< %s and < %s xids (critical %s / %s xids)', p_t ->> 'xmin_horizon_warn', p_t ->> 'xmin_xid_age_warn', p_t ->> 'xmin_horizon_critical', p_t ->> 'xmin_xid_age_critical'),
         CASE coalesce((SELECT verdict FROM worst), 'ok') WHEN 'ok' THEN 'vacuum can remove dead rows as soon as they die'
              ELSE (SELECT format('%s keeps vacuum from removing dead rows: end it (SELECT pg_terminate_backend(pid) for a session, ROLLBACK PREPARED for a prepared transaction, pg_drop_replication_slot for an abandoned slot) and find out why it stays open', who) FROM worst) END
$$;

-- Sessions of this database idle inside an open transaction: they hold locks
-- that make maintenance DDL wait, and often the xmin horizon.
CREATE OR REPLACE FUNCTION qmaint.health_idle_in_transaction(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_interval(p_t, 'idle_in_transaction_warn') AS warn,
           qmaint.health_interval(p_t, 'idle_in_transaction_critical') AS crit
  ), idle AS (
    SELECT a.pid, coalesce(nullif(a.application_name, ''), 'no application name') AS app,
           greatest(p_now - a.state_change, interval '0') AS idle_for
      FROM pg_stat_activity a
     WHERE a.state LIKE 'idle in transaction%' AND a.pid <> pg_backend_pid() AND a.datname = current_database()
  ), over AS (
    SELECT idle.*, CASE WHEN idle_for >= lim.crit THEN 'critical' ELSE 'warn' END AS verdict
      FROM idle, lim WHERE idle_for >= lim.warn
  )
  SELECT 'idle_in_transaction'::text,
         CASE WHEN EXISTS (SELECT 1 FROM over WHERE verdict = 'critical') THEN 'critical'
              WHEN EXISTS (SELECT 1 FROM over) THEN 'warn' ELSE 'ok' END,
         format('%s idle in transaction%s', (SELECT count(*) FROM idle),
                coalesce(', over the limit: ' || (SELECT string_agg(format('pid %s (%s, %s)', pid, app, qmaint.health_age(idle_for)), ', ' ORDER BY idle_for DESC) FROM over), '')),
         format('none idle >= %s (critical %s)', p_t ->> 'idle_in_transaction_warn', p_t ->> 'idle_in_transaction_critical'),
         CASE WHEN EXISTS (SELECT 1 FROM over)
              THEN 'these sessions hold locks and snapshots while doing nothing: fix the application (commit or roll back promptly), end them with pg_terminate_backend(pid), and consider idle_in_transaction_session_timeout'
              ELSE 'no session sits idle inside a transaction' END
$$;

-- How far standbys are behind. On a primary: each walsender's replay_lag
-- (pg_stat_replication; NULL once a standby has caught up and nothing new came).
-- On a standby: this node's replay delay, zero when it has replayed all it received.
CREATE OR REPLACE FUNCTION qmaint.health_replication_lag(p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_interval(p_t, 'replication_lag_warn') AS warn,
           qmaint.health_interval(p_t, 'replication_lag_critical') AS crit
  ), lag AS (
    SELECT coalesce(nullif(r.application_name, ''), host(r.client_addr), 'standby ' || r.pid) AS node,
           coalesce(r.replay_lag, interval '0') AS behind
      FROM pg_stat_replication r
     WHERE NOT pg_is_in_recovery()
    UNION ALL
    SELECT 'this standby',
           CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN interval '0'
                ELSE greatest(clock_timestamp() - pg_last_xact_replay_timestamp(), interval '0') END
     WHERE pg_is_in_recovery()
  ), judged AS (
    SELECT lag.*, CASE WHEN behind >= lim.crit THEN 'critical' WHEN behind >= lim.warn THEN 'warn' ELSE 'ok' END AS verdict
      FROM lag, lim
  )
  SELECT 'replication_lag'::text,
         coalesce((SELECT CASE WHEN bool_or(verdict = 'critical') THEN 'critical' WHEN bool_or(verdict = 'warn') THEN 'warn' ELSE 'ok' END FROM judged), 'ok'),
         coalesce((SELECT string_agg(format('%s %s behind', node, qmaint.health_age(behind)), ', ' ORDER BY behind DESC) FROM judged), 'no standby streams from this server'),
         format('< %s (critical %s)', p_t ->> 'replication_lag_warn', p_t ->> 'replication_lag_critical'),
         CASE WHEN EXISTS (SELECT 1 FROM judged WHERE verdict <> 'ok')
              THEN 'a standby is behind: reads there are stale, and a failover to it would lose (asynchronous) or wait for (synchronous) what it lacks; check its I/O and network, and long queries on it that conflict with replay'
              ELSE 'standbys keep up' END
$$;

-- Replication slots nobody consumes: an inactive slot keeps every WAL segment
-- from its restart_lsn on (pg_wal grows until the disk is full) and, through its
-- xmin or catalog_xmin, holds back the xmin horizon, so vacuum cannot remove the
-- dead rows of claimed and finished jobs.
CREATE OR REPLACE FUNCTION qmaint.health_replication_slots(p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_number(p_t, 'inactive_slot_wal_warn') AS warn,
           qmaint.health_number(p_t, 'inactive_slot_wal_critical') AS crit
  ), slot AS (
    SELECT s.slot_name, s.slot_type,
           CASE WHEN pg_is_in_recovery() OR s.restart_lsn IS NULL THEN NULL
                ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn) END AS retained,
           greatest(age(s.xmin), age(s.catalog_xmin)) AS xmin_age
      FROM pg_replication_slots s
     WHERE NOT s.active
  ), judged AS (
    SELECT slot.*, CASE WHEN coalesce(retained, 0) >= lim.crit THEN 'critical' WHEN coalesce(retained, 0) >= lim.warn THEN 'warn' ELSE 'ok' END AS verdict
      FROM slot, lim
  )
  SELECT 'replication_slots'::text,
         coalesce((SELECT CASE WHEN bool_or(verdict = 'critical') THEN 'critical' WHEN bool_or(verdict = 'warn') THEN 'warn' ELSE 'ok' END FROM judged), 'ok'),
         format('%s slot(s), %s inactive%s', (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM slot),
                coalesce(': ' || (SELECT string_agg(format('%s (%s, %s WAL held%s)', slot_name, slot_type, coalesce(pg_size_pretty(retained), 'unknown'),
                                                           CASE WHEN xmin_age IS NOT NULL THEN format(', xmin %s transactions back', xmin_age) ELSE '' END),
                                                    ', ' ORDER BY retained DESC NULLS LAST) FROM slot), '')),
         format('inactive slots hold < %s bytes of WAL (critical %s)', p_t ->> 'inactive_slot_wal_warn', p_t ->> 'inactive_slot_wal_critical'),
         CASE WHEN EXISTS (SELECT 1 FROM judged WHERE verdict <> 'ok')
              THEN 'an inactive slot keeps WAL and holds the xmin horizon back, so vacuum cannot clean finished jobs: bring its consumer (standby, CDC tool) back, or drop it with pg_drop_replication_slot(name) if it is gone for good'
              ELSE 'every replication slot is in use' END
$$;

-- Age of the oldest queued job that is due (run_at <= p_now). The low-water
-- mark is read first and passed to the statement as a value, so the planner
-- prunes every partition below it (as a subquery it pruned only at run time,
-- after planning all of them); queued jobs are read through the claim index.
CREATE OR REPLACE FUNCTION qmaint.health_oldest_queued(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_warn interval := qmaint.health_interval(p_t, 'oldest_queued_warn');
  v_crit interval := qmaint.health_interval(p_t, 'oldest_queued_critical');
  v_low timestamptz := coalesce((SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'), '-infinity');
  v_queue text;
  v_age interval;
BEGIN
  EXECUTE 'SELECT j.queue, $1 - j.run_at FROM qmaint.jobs j
            WHERE j.status = ''queued'' AND j.run_at <= $1 AND j.created_at >= $2
            ORDER BY j.run_at LIMIT 1'
    INTO v_queue, v_age USING p_now, v_low;
  RETURN QUERY SELECT 'oldest_queued'::text,
    CASE WHEN v_age >= v_crit THEN 'critical' WHEN v_age >= v_warn THEN 'warn' ELSE 'ok' END,
    CASE WHEN v_age IS NULL THEN 'no job is due' ELSE format('%s waiting in queue %L', qmaint.health_age(v_age), v_queue) END,
    format('< %s (critical %s)', p_t ->> 'oldest_queued_warn', p_t ->> 'oldest_queued_critical'),
    CASE WHEN v_age >= v_warn
         THEN 'consumers are not keeping up or not running for that queue: check qmaint status, start more consumers (qmaint work), and run qmaint explain dequeue'
         ELSE 'due jobs are picked up in time' END;
END;
$$;

-- Failed jobs in the last window against the window before it. A job can
-- fail in any partition (an old job retried), so nothing bounds where recent
-- failures sit: the candidates come from qmaint.failed_jobs (0020), where a
-- job's latest failure is recorded with its time, and only those still failed
-- in qmaint.jobs count (one retried or deleted since does not). EXECUTE plans
-- that look-up with the candidates' values, so it reads only the partitions
-- holding them; with no failure in the two windows it reads no partition.
CREATE OR REPLACE FUNCTION qmaint.health_failed_jobs(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_w interval := qmaint.health_interval(p_t, 'failed_window');
  v_min numeric := qmaint.health_number(p_t, 'failed_rising_min');
  v_factor numeric := qmaint.health_number(p_t, 'failed_rising_factor');
  v_crit numeric := qmaint.health_number(p_t, 'failed_critical');
  v_ids bigint[];
  v_created timestamptz[];
  v_at timestamptz[];
  v_cur bigint := 0;
  v_prev bigint := 0;
  v_verdict text;
BEGIN
  SELECT array_agg(f.job_id), array_agg(f.created_at), array_agg(f.failed_at)
    INTO v_ids, v_created, v_at
    FROM qmaint.failed_jobs f
   WHERE f.failed_at > p_now - 2 * v_w AND f.failed_at <= p_now;
  IF v_ids IS NOT NULL THEN
    EXECUTE 'SELECT count(*) FILTER (WHERE e.at > $4 - $5), count(*) FILTER (WHERE e.at <= $4 - $5)
               FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS e(id, created_at, at)
               JOIN qmaint.jobs j ON j.id = e.id AND j.created_at = e.created_at
              WHERE j.status = ''failed'' AND j.created_at = ANY ($2)'
      INTO v_cur, v_prev USING v_ids, v_created, v_at, p_now, v_w;
  END IF;
  v_verdict := CASE WHEN v_cur >= v_crit THEN 'critical'
                    WHEN v_cur >= v_min AND v_cur > v_prev * v_factor THEN 'warn' ELSE 'ok' END;
  RETURN QUERY SELECT 'failed_jobs'::text, v_verdict,
    format('%s failed in the last %s, %s in the %s before', v_cur, p_t ->> 'failed_window', v_prev, p_t ->> 'failed_window'),
    format('not more than %s x the window before once >= %s (critical %s)', v_factor, v_min, v_crit),
    CASE v_verdict WHEN 'ok' THEN 'failures are not rising'
         ELSE 'look at the errors (qmaint jobs list --status failed) and fix the handler or what it depends on; retry them with qmaint jobs retry once fixed' END;
END;
$$;

-- The last scheduled maintenance runs (all tasks but health itself).
CREATE OR REPLACE FUNCTION qmaint.health_maintenance(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_interval(p_t, 'maintenance_stale') AS stale,
           qmaint.health_number(p_t, 'maintenance_failures_critical')::integer AS fails
  ), ranked AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.task ORDER BY r.started_at DESC, r.id DESC) AS n
      FROM qmaint.maintenance_runs r
     WHERE r.task <> 'health' AND r.started_at <= p_now AND r.status <> 'running'
  ), per_task AS (
    SELECT task,
           max(started_at) AS last_at,
           (array_agg(status ORDER BY n))[1] AS last_status,
           (array_agg(runner ORDER BY n))[1] AS last_runner,
           (array_agg(message ORDER BY n))[1] AS last_message,
           count(*) FILTER (WHERE status IN ('failed', 'lock_timeout')) AS failed_in_row,
           count(*) AS considered
      FROM ranked, lim WHERE n <= lim.fails GROUP BY task
  ), judged AS (
    SELECT per_task.*,
           CASE WHEN failed_in_row >= lim.fails AND considered >= lim.fails THEN 'critical'
                WHEN last_status IN ('failed', 'lock_timeout') THEN 'warn' ELSE 'ok' END AS verdict
      FROM per_task, lim
  ), overall AS (
    SELECT (SELECT max(last_at) FROM judged) AS newest,
           coalesce((SELECT CASE WHEN bool_or(verdict = 'critical') THEN 'critical' WHEN bool_or(verdict = 'warn') THEN 'warn' ELSE 'ok' END FROM judged), 'warn') AS v
  )
  SELECT 'maintenance'::text,
         CASE WHEN overall.newest IS NULL THEN 'warn'
              WHEN overall.newest < p_now - lim.stale THEN qmaint.health_worst(overall.v, 'warn')
              ELSE overall.v END,
         coalesce((SELECT string_agg(format('%s %s by %s %s ago', task, last_status, last_runner, qmaint.health_age(p_now - last_at)), '; ' ORDER BY task) FROM judged),
                  'no maintenance run recorded'),
         format('a run within %s, last run not failed (critical after %s failures in a row)', p_t ->> 'maintenance_stale', lim.fails),
         CASE WHEN overall.newest IS NULL THEN 'no maintenance has run: schedule it (qmaint schedule install, or qmaint schedule daemon)'
              WHEN overall.v <> 'ok' THEN 'a maintenance task fails: ' || coalesce((SELECT string_agg(format('%s: %s', task, coalesce(last_message, last_status)), '; ' ORDER BY task) FROM judged WHERE verdict <> 'ok'), '') || '; see qmaint schedule list and fix the cause'
              WHEN overall.newest < p_now - lim.stale THEN 'maintenance has not run recently: check that the schedule (pg_cron or qmaint schedule daemon) is active'
              ELSE 'scheduled maintenance runs and succeeds' END
    FROM overall, lim
$$;

-- Recurring jobs (qmaint cron add) are enqueued only from their stored ticks
-- (qmaint.cron_ticks), and only TypeScript computes ticks (croner; pg_cron runs
-- SQL alone, so it cannot). A refill records how far ahead it computed
-- (cron_schedules.ticks_until; before any recorded refill, the last stored
-- tick). The daemon refills before each recurring run; a pg_cron-only setup
-- must run `qmaint cron refill` itself, or recurring jobs stop when the stored
-- ticks run out. Warn when a schedule is computed less than the threshold
-- ahead, critical when it is computed no further than now.
CREATE OR REPLACE FUNCTION qmaint.health_cron_ticks(p_now timestamptz, p_t jsonb)
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH lim AS (
    SELECT qmaint.health_interval(p_t, 'cron_ticks_ahead_warn') AS warn
  ), schedules AS (
    SELECT c.name, coalesce(c.ticks_until, (SELECT max(t.tick) FROM qmaint.cron_ticks t WHERE t.name = c.name)) AS until
      FROM qmaint.cron_schedules c
  ), judged AS (
    SELECT s.name, s.until,
           CASE WHEN s.until IS NULL OR s.until <= p_now THEN 'critical' WHEN s.until < p_now + lim.warn THEN 'warn' ELSE 'ok' END AS verdict
      FROM schedules s, lim
  ), overall AS (
    SELECT CASE WHEN bool_or(verdict = 'critical') THEN 'critical' WHEN bool_or(verdict = 'warn') THEN 'warn' ELSE 'ok' END AS v,
           count(*) AS n,
           min(until) AS soonest
      FROM judged
  )
  SELECT 'cron_ticks'::text,
         overall.v,
         CASE WHEN overall.n = 0 THEN 'no recurring job'
              WHEN overall.v = 'ok' THEN format('%s recurring job(s), ticks computed at least %s ahead', overall.n, qmaint.health_age(overall.soonest - p_now))
              ELSE (SELECT string_agg(CASE WHEN until IS NULL THEN format('%s: no tick stored', name)
                                           WHEN until <= p_now THEN format('%s: no tick after %s ago', name, qmaint.health_age(p_now - until))
                                           ELSE format('%s: ticks for %s more', name, qmaint.health_age(until - p_now)) END, '; ' ORDER BY until NULLS FIRST, name)
                      FROM judged WHERE verdict <> 'ok') END,
         format('ticks computed >= %s ahead (critical: none ahead)', p_t ->> 'cron_ticks_ahead_warn'),
         CASE WHEN overall.v <> 'ok'
              THEN 'recurring jobs are enqueued only from stored ticks and stop when they run out: run qmaint cron refill now, and keep refilling (qmaint schedule daemon does it before each recurring run; with pg_cron alone, run qmaint cron refill at least daily, e.g. from the system cron)'
              WHEN overall.n = 0 THEN 'no recurring job to enqueue'
              ELSE 'every recurring job has its ticks stored ahead' END
    FROM overall
$$;

-- All server-side checks, in a fixed order. p_thresholds overrides the
-- defaults (qmaint.health_default_thresholds()) and qmaint.health_thresholds.
CREATE OR REPLACE FUNCTION qmaint.health_checks(p_now timestamptz DEFAULT now(), p_thresholds jsonb DEFAULT '{}')
RETURNS TABLE (check_name text, status text, observed text, threshold text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t jsonb := qmaint.health_resolve_thresholds(p_thresholds);
BEGIN
  RETURN QUERY SELECT * FROM qmaint.health_runway(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_default_partition(t);
  RETURN QUERY SELECT * FROM qmaint.health_retention(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_invalid_indexes();
  RETURN QUERY SELECT * FROM qmaint.health_claim_index();
  RETURN QUERY SELECT * FROM qmaint.health_dead_tuples(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_xmin_horizon(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_idle_in_transaction(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_oldest_queued(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_failed_jobs(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_maintenance(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_cron_ticks(p_now, t);
  RETURN QUERY SELECT * FROM qmaint.health_replication_lag(t);
  RETURN QUERY SELECT * FROM qmaint.health_replication_slots(t);
END;
$$;
