-- qmaint vacuum: churn measured from a history of pg_stat_user_tables samples,
-- hot thresholds derived from it, per-partition reloptions planned and applied,
-- and the one freeze of drained (cold) partitions tracked.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- Fallback "auto" thresholds before any churn has been measured.
CREATE OR REPLACE FUNCTION qmaint.vacuum_auto_default(p_key text) RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE p_key WHEN 'autovacuum_vacuum_threshold' THEN 1000 WHEN 'autovacuum_analyze_threshold' THEN 5000 END $$;

-- The default profiles, defined here only (TypeScript reads them through
-- defaultVacuumProfiles(); docs/vacuum.md documents them and a test holds
-- this function to that). A policy's profile is laid over these key by key.
-- hot: vacuum on an absolute number of dead tuples derived from the measured
-- churn (scale factor 0), fast (raised cost limit, short delay), analyze
-- likewise so the claim plan sees the real queued count. warm: moderate, it
-- still holds live jobs. cold: nothing changes any more; every vacuum freezes
-- all it sees, and autovacuum is otherwise relaxed.
-- hot also leaves 30% of each heap page free (fillfactor 70): a job is updated
-- twice (claim, complete), neither update can be HOT (status is in the partial
-- indexes' predicates), and on a full page each new row version goes to another
-- page, which logs an extra row lock and touches two pages. With room on the
-- page the new version stays beside the old one: the drain wrote 10% less WAL
-- per job (about 960 bytes instead of 1,070, one heap record fewer) and the
-- partition ended no larger (docs/vacuum.md, "Fillfactor of hot partitions").
CREATE OR REPLACE FUNCTION qmaint.vacuum_default_profiles() RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT '{"hot":  {"autovacuum_vacuum_scale_factor": 0, "autovacuum_vacuum_threshold": "auto",
                    "autovacuum_vacuum_insert_scale_factor": 0, "autovacuum_vacuum_insert_threshold": 10000,
                    "autovacuum_analyze_scale_factor": 0, "autovacuum_analyze_threshold": "auto",
                    "autovacuum_vacuum_cost_limit": 2000, "autovacuum_vacuum_cost_delay": 1,
                    "fillfactor": 70},
           "warm": {"autovacuum_vacuum_scale_factor": 0.02, "autovacuum_vacuum_threshold": 1000,
                    "autovacuum_analyze_scale_factor": 0.05, "autovacuum_analyze_threshold": 1000,
                    "autovacuum_vacuum_cost_limit": 1000},
           "cold": {"autovacuum_vacuum_scale_factor": 0.2, "autovacuum_vacuum_threshold": 10000,
                    "autovacuum_vacuum_insert_threshold": -1,
                    "autovacuum_analyze_scale_factor": 0.2, "autovacuum_analyze_threshold": 10000,
                    "autovacuum_freeze_min_age": 0, "autovacuum_freeze_table_age": 0}}'::jsonb
$$;

-- A policy's profile laid over the default one, with "auto" replaced by the
-- given thresholds (NULL: the fallback) and anything that is not a number or
-- boolean left out.
CREATE OR REPLACE FUNCTION qmaint.vacuum_profile_with(p_parent_table text, p_profile text, p_vacuum_threshold integer, p_analyze_threshold integer)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(jsonb_object_agg(e.key, CASE
           WHEN e.value = '"auto"'::jsonb THEN to_jsonb(coalesce(
             CASE e.key WHEN 'autovacuum_vacuum_threshold' THEN p_vacuum_threshold
                        WHEN 'autovacuum_analyze_threshold' THEN p_analyze_threshold END,
             qmaint.vacuum_auto_default(e.key)))
           ELSE e.value END ORDER BY e.key), '{}'::jsonb)
    FROM qmaint.partition_policy pp
    CROSS JOIN LATERAL jsonb_each(coalesce(qmaint.vacuum_default_profiles() -> p_profile, '{}'::jsonb)
                                  || CASE WHEN jsonb_typeof(pp.vacuum -> p_profile) = 'object' THEN pp.vacuum -> p_profile ELSE '{}'::jsonb END) e
   WHERE pp.parent_table = p_parent_table
     AND (jsonb_typeof(e.value) IN ('number', 'boolean')
          OR (e.value = '"auto"'::jsonb AND e.key IN ('autovacuum_vacuum_threshold', 'autovacuum_analyze_threshold')))
$$;

-- The storage parameters a partition in this profile carries: the policy's
-- profile with the tuned hot thresholds filled in.
CREATE OR REPLACE FUNCTION qmaint.effective_profile(p_parent_table text, p_profile text) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT qmaint.vacuum_profile_with(pp.parent_table, p_profile, t.vacuum_threshold, t.analyze_threshold)
    FROM qmaint.partition_policy pp
    LEFT JOIN qmaint.vacuum_tuning t ON t.parent_table = pp.parent_table
   WHERE pp.parent_table = p_parent_table
$$;

-- Current counters of every partition of every policy, stamped p_now.
CREATE OR REPLACE FUNCTION qmaint.vacuum_counters(p_now timestamptz)
RETURNS TABLE (parent_table text, relid oid, partition text, sampled_at timestamptz,
               n_tup_ins bigint, n_tup_upd bigint, n_tup_del bigint, n_dead_tup bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT pp.parent_table, p.partition::oid, format('%I.%I', p.schema_name, p.table_name), p_now,
         s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_dead_tup
    FROM qmaint.partition_policy pp
    CROSS JOIN LATERAL qmaint.partitions_of(to_regclass(pp.parent_table)) p
    JOIN pg_stat_user_tables s ON s.relid = p.partition::oid
$$;

-- Record one sample and drop history older than a day, and cold-tracking rows
-- of partitions that no longer exist.
CREATE OR REPLACE FUNCTION qmaint.vacuum_record_sample(p_now timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_rows integer;
BEGIN
  INSERT INTO qmaint.vacuum_samples (parent_table, relid, partition, sampled_at, n_tup_ins, n_tup_upd, n_tup_del, n_dead_tup)
  SELECT * FROM qmaint.vacuum_counters(p_now)
  ON CONFLICT (parent_table, sampled_at, relid) DO UPDATE
     SET n_tup_ins = EXCLUDED.n_tup_ins, n_tup_upd = EXCLUDED.n_tup_upd,
         n_tup_del = EXCLUDED.n_tup_del, n_dead_tup = EXCLUDED.n_dead_tup;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  DELETE FROM qmaint.vacuum_samples WHERE sampled_at < p_now - interval '1 day';
  DELETE FROM qmaint.vacuum_cold c
   WHERE NOT EXISTS (SELECT 1 FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
                      WHERE r.oid = c.relid AND format('%I.%I', n.nspname, r.relname) = c.partition);
  RETURN v_rows;
END;
$$;

-- Churn of one parent over (p_now - p_window, p_now]: the stored samples, an
-- optional baseline the caller read earlier (jsonb array of vacuum_counters
-- rows), and the counters right now. Consecutive samples are differenced per
-- partition; a partition first seen in the later sample counts from zero, a
-- counter that went down (stats reset) counts as zero.
CREATE OR REPLACE FUNCTION qmaint.vacuum_churn(p_parent_table text, p_now timestamptz, p_baseline jsonb DEFAULT NULL, p_window interval DEFAULT interval '1 hour')
RETURNS TABLE (dead_per_sec double precision, changes_per_sec double precision, window_start timestamptz, window_end timestamptz, samples integer)
LANGUAGE sql STABLE
ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$
  WITH pts AS (
    SELECT s.relid, s.sampled_at, s.n_tup_upd + s.n_tup_del AS dead, s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS changes
      FROM qmaint.vacuum_samples s
     WHERE s.parent_table = p_parent_table AND s.sampled_at > p_now - p_window AND s.sampled_at < p_now
    UNION ALL
    SELECT (e ->> 'relid')::oid, (e ->> 'sampled_at')::timestamptz,
           (e ->> 'n_tup_upd')::bigint + (e ->> 'n_tup_del')::bigint,
           (e ->> 'n_tup_ins')::bigint + (e ->> 'n_tup_upd')::bigint + (e ->> 'n_tup_del')::bigint
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_baseline) = 'array' THEN p_baseline ELSE '[]'::jsonb END) e
     WHERE e ->> 'parent_table' = p_parent_table
       AND (e ->> 'sampled_at')::timestamptz > p_now - p_window AND (e ->> 'sampled_at')::timestamptz < p_now
    UNION ALL
    SELECT c.relid, c.sampled_at, c.n_tup_upd + c.n_tup_del, c.n_tup_ins + c.n_tup_upd + c.n_tup_del
      FROM qmaint.vacuum_counters(p_now) c WHERE c.parent_table = p_parent_table
  ),
  times AS (SELECT DISTINCT sampled_at FROM pts),
  pairs AS (SELECT sampled_at AS t1, lead(sampled_at) OVER (ORDER BY sampled_at) AS t2 FROM times),
  deltas AS (
    SELECT pr.t1, pr.t2,
           sum(greatest(b.dead - coalesce(a.dead, 0), 0)) AS dead,
           sum(greatest(b.changes - coalesce(a.changes, 0), 0)) AS changes
      FROM pairs pr
      JOIN pts b ON b.sampled_at = pr.t2
      LEFT JOIN pts a ON a.sampled_at = pr.t1 AND a.relid = b.relid
     WHERE pr.t2 IS NOT NULL
     GROUP BY pr.t1, pr.t2
  )
  SELECT sum(dead)::double precision / extract(epoch FROM max(t2) - min(t1))::double precision,
         sum(changes)::double precision / extract(epoch FROM max(t2) - min(t1))::double precision,
         min(t1), max(t2), count(*)::integer + 1
    FROM deltas
  HAVING count(*) > 0
$$;

-- Hot thresholds from churn. The launcher visits a database once per
-- autovacuum_naptime, so a vacuum can start at most that often: the vacuum
-- threshold is the dead tuples half a naptime of churn makes (a vacuum every
-- visit even when churn halves), the analyze threshold one naptime of changes.
-- Floors keep a near-idle partition from being vacuumed for a handful of rows;
-- ceilings keep a burst from postponing vacuum for long.
CREATE OR REPLACE FUNCTION qmaint.vacuum_derive_thresholds(p_dead_per_sec double precision, p_changes_per_sec double precision, p_naptime_seconds integer)
RETURNS TABLE (vacuum_threshold integer, analyze_threshold integer)
LANGUAGE sql IMMUTABLE
ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT least(greatest(ceil(p_dead_per_sec * p_naptime_seconds / 2.0), 200), 1000000)::integer,
         least(greatest(ceil(p_changes_per_sec * p_naptime_seconds), 500), 2000000)::integer
$$;

CREATE OR REPLACE FUNCTION qmaint.autovacuum_naptime_seconds() RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT setting::integer FROM pg_settings WHERE name = 'autovacuum_naptime' $$;

-- What a cold partition needs until it is frozen, when the profile does not
-- say otherwise: every vacuum freezes everything (min_age 0, table_age 0), and
-- a freeze_max_age at PostgreSQL's minimum makes autovacuum start that vacuum
-- itself within 100,000 transactions. Removed again once frozen, so the
-- relaxed cold profile does not bring anti-wraparound vacuums back (they are
-- not cancelled by lock waits and would block retention's DETACH).
CREATE OR REPLACE FUNCTION qmaint.vacuum_freeze_override() RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '{"autovacuum_freeze_min_age": 0, "autovacuum_freeze_table_age": 0, "autovacuum_freeze_max_age": 100000}'::jsonb $$;

-- The stored threshold while a new derivation stays within 20% of it: churn
-- wobbles, and every changed value is an ALTER TABLE on each hot partition
-- (which also cancels an autovacuum running there).
CREATE OR REPLACE FUNCTION qmaint.vacuum_keep_close(p_stored integer, p_derived integer) RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN p_derived IS NULL THEN p_stored
              WHEN p_stored IS NOT NULL AND abs(p_derived - p_stored) <= 0.2 * p_stored THEN p_stored
              ELSE p_derived END
$$;

-- Churn and thresholds per policy at p_now.
--
-- vacuum_measure, vacuum_targets and vacuum_tune_steps run with JIT off. They
-- read the catalog and the statistics for every partition of every policy,
-- and the planner multiplies its guesses for the policy table (180 rows for a
-- table never analysed) by a thousand rows per set-returning function: a
-- PostgreSQL built with LLVM then compiled each statement, and a dry-run tune
-- at 1,000 partitions took 2.7 s on PostgreSQL 15 instead of 0.5 s.
CREATE OR REPLACE FUNCTION qmaint.vacuum_measure(p_now timestamptz, p_baseline jsonb DEFAULT NULL)
RETURNS TABLE (parent_table text, dead_per_sec double precision, changes_per_sec double precision,
               window_start timestamptz, window_end timestamptz, samples integer, naptime_seconds integer,
               vacuum_threshold integer, analyze_threshold integer, measured boolean)
LANGUAGE sql STABLE
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT pp.parent_table, c.dead_per_sec, c.changes_per_sec, c.window_start, c.window_end, coalesce(c.samples, 1),
         qmaint.autovacuum_naptime_seconds(),
         coalesce(qmaint.vacuum_keep_close(t.vacuum_threshold, d.vacuum_threshold), qmaint.vacuum_auto_default('autovacuum_vacuum_threshold')),
         coalesce(qmaint.vacuum_keep_close(t.analyze_threshold, d.analyze_threshold), qmaint.vacuum_auto_default('autovacuum_analyze_threshold')),
         c.dead_per_sec IS NOT NULL
    FROM qmaint.partition_policy pp
    LEFT JOIN qmaint.vacuum_tuning t ON t.parent_table = pp.parent_table
    LEFT JOIN LATERAL qmaint.vacuum_churn(pp.parent_table, p_now, p_baseline) c ON true
    LEFT JOIN LATERAL qmaint.vacuum_derive_thresholds(c.dead_per_sec, c.changes_per_sec, qmaint.autovacuum_naptime_seconds()) d
           ON c.dead_per_sec IS NOT NULL
   ORDER BY pp.parent_table
$$;

-- Every partition of every policy: state, current reloptions, the ones tune
-- would give it, and where it stands on freezing. p_client_vacuum: the caller
-- can run VACUUM (FREEZE) itself, so unfrozen cold partitions get the relaxed
-- profile at once instead of the freeze override.
CREATE OR REPLACE FUNCTION qmaint.vacuum_targets(p_now timestamptz, p_baseline jsonb DEFAULT NULL, p_client_vacuum boolean DEFAULT false)
RETURNS TABLE (parent_table text, relid oid, partition text, state text, profile text,
               current_options jsonb, target_options jsonb, tracked boolean, frozen boolean,
               freeze_needed boolean, modifications bigint, relfrozenxid_age integer)
LANGUAGE sql STABLE
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
  WITH m AS (SELECT * FROM qmaint.vacuum_measure(p_now, p_baseline)),
  parts AS (
    SELECT pp.parent_table, st.partition::oid AS relid, format('%I.%I', n.nspname, c.relname) AS partition,
           st.state, st.profile, qmaint.reloptions_json(c.reloptions) AS current_options,
           qmaint.vacuum_profile_with(pp.parent_table, st.profile, m.vacuum_threshold, m.analyze_threshold) AS base,
           coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0) AS modifications,
           age(c.relfrozenxid) AS relfrozenxid_age, vc.relid IS NOT NULL AS tracked,
           vc.relid IS NOT NULL AND vc.modifications = coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)
             AND age(c.relfrozenxid) < age(vc.cold_xid::xid) AS frozen
      FROM qmaint.partition_policy pp
      JOIN m ON m.parent_table = pp.parent_table
      CROSS JOIN LATERAL qmaint.partition_states(to_regclass(pp.parent_table), p_now) st
      JOIN pg_class c ON c.oid = st.partition::oid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
      LEFT JOIN qmaint.vacuum_cold vc ON vc.relid = c.oid
  )
  SELECT p.parent_table, p.relid, p.partition, p.state, p.profile, p.current_options,
         CASE WHEN p.profile = 'cold' AND NOT p.frozen AND NOT p_client_vacuum
              THEN (qmaint.vacuum_freeze_override() - ARRAY(SELECT jsonb_object_keys(p.base))) || p.base
              ELSE p.base END,
         p.tracked, p.frozen, p.profile = 'cold' AND NOT p.frozen, p.modifications, p.relfrozenxid_age
    FROM parts p
   ORDER BY p.parent_table, p.partition
$$;

-- The tune plan: record the sample, store the derived thresholds, track newly
-- cold partitions, freeze them (client only: VACUUM cannot run in a function),
-- then set/reset each partition's reloptions where they differ from the target.
CREATE OR REPLACE FUNCTION qmaint.vacuum_tune_steps(p_now timestamptz DEFAULT now(), p_baseline jsonb DEFAULT NULL, p_client_vacuum boolean DEFAULT false)
RETURNS SETOF qmaint.plan_step
LANGUAGE plpgsql STABLE
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_seq integer := 0;
  m record;
  t record;
  v_set text;
  v_reset text[];
  v_sql text;
BEGIN
  v_seq := v_seq + 1;
  RETURN NEXT ROW(v_seq, 'sample', 'qmaint.vacuum_samples',
                  format('SELECT qmaint.vacuum_record_sample(%L)', p_now),
                  'ROW EXCLUSIVE on qmaint.vacuum_samples',
                  'keep the churn history the hot thresholds are derived from', true, ARRAY['qmaint.vacuum_samples'])::qmaint.plan_step;
  FOR m IN SELECT * FROM qmaint.vacuum_measure(p_now, p_baseline) WHERE measured LOOP
    v_seq := v_seq + 1;
    RETURN NEXT ROW(v_seq, 'tune', m.parent_table,
      format('INSERT INTO qmaint.vacuum_tuning AS t (parent_table, dead_per_sec, changes_per_sec, naptime_seconds, vacuum_threshold, analyze_threshold, window_start, window_end, tuned_at) '
             'VALUES (%L, %s, %s, %s, %s, %s, %L, %L, %L) ON CONFLICT (parent_table) DO UPDATE SET '
             'dead_per_sec = EXCLUDED.dead_per_sec, changes_per_sec = EXCLUDED.changes_per_sec, naptime_seconds = EXCLUDED.naptime_seconds, '
             'vacuum_threshold = EXCLUDED.vacuum_threshold, analyze_threshold = EXCLUDED.analyze_threshold, '
             'window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, tuned_at = EXCLUDED.tuned_at',
             m.parent_table, round(m.dead_per_sec::numeric, 3), round(m.changes_per_sec::numeric, 3), m.naptime_seconds,
             m.vacuum_threshold, m.analyze_threshold, m.window_start, m.window_end, p_now),
      'ROW EXCLUSIVE on qmaint.vacuum_tuning',
      format('%s dead tuples/s over %s samples; autovacuum_naptime %ss => vacuum threshold %s, analyze threshold %s',
             round(m.dead_per_sec::numeric, 1), m.samples, m.naptime_seconds, m.vacuum_threshold, m.analyze_threshold),
      true, ARRAY['qmaint.vacuum_tuning'])::qmaint.plan_step;
  END LOOP;

  FOR t IN SELECT * FROM qmaint.vacuum_targets(p_now, p_baseline, p_client_vacuum) LOOP
    IF t.profile = 'cold' AND NOT t.frozen THEN
      -- (Re)track: first time cold, or written to since it was tracked.
      IF NOT t.tracked OR NOT EXISTS (SELECT 1 FROM qmaint.vacuum_cold WHERE relid = t.relid AND modifications = t.modifications) THEN
        v_seq := v_seq + 1;
        RETURN NEXT ROW(v_seq, 'track', t.partition,
          format('INSERT INTO qmaint.vacuum_cold (relid, partition, cold_since, cold_xid, modifications) VALUES (%s, %L, %L, pg_current_xact_id(), %s) '
                 'ON CONFLICT (relid) DO UPDATE SET partition = EXCLUDED.partition, cold_since = EXCLUDED.cold_since, cold_xid = EXCLUDED.cold_xid, modifications = EXCLUDED.modifications',
                 t.relid, t.partition, p_now, t.modifications),
          'ROW EXCLUSIVE on qmaint.vacuum_cold', 'drained: remember the transaction before which all its rows were written', true,
          ARRAY['qmaint.vacuum_cold'])::qmaint.plan_step;
      END IF;
      IF p_client_vacuum THEN
        v_seq := v_seq + 1;
        RETURN NEXT ROW(v_seq, 'freeze', t.partition, format('VACUUM (FREEZE) %s', t.partition),
          format('SHARE UPDATE EXCLUSIVE on %s', t.partition), 'drained and not frozen yet: freeze it once', false,
          ARRAY[t.partition])::qmaint.plan_step;
      END IF;
    ELSIF t.tracked AND t.profile <> 'cold' THEN
      v_seq := v_seq + 1;
      RETURN NEXT ROW(v_seq, 'untrack', t.partition, format('DELETE FROM qmaint.vacuum_cold WHERE relid = %s', t.relid),
        'ROW EXCLUSIVE on qmaint.vacuum_cold', format('holds live jobs again (%s)', t.state), true, ARRAY['qmaint.vacuum_cold'])::qmaint.plan_step;
    END IF;

    v_set := qmaint.reloptions_sql((SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
                                      FROM jsonb_each(t.target_options)
                                     WHERE t.current_options -> key IS DISTINCT FROM value));
    -- fillfactor too: the hot profile sets it, and it means nothing once a
    -- partition takes no more inserts.
    v_reset := ARRAY(SELECT k FROM jsonb_object_keys(t.current_options) k
                      WHERE (k LIKE 'autovacuum\_%' OR k = 'fillfactor') AND NOT t.target_options ? k ORDER BY k);
    IF v_set IS NOT NULL OR cardinality(v_reset) > 0 THEN
      v_sql := format('ALTER TABLE %s ', t.partition)
            || concat_ws(', ',
                 CASE WHEN v_set IS NOT NULL THEN format('SET (%s)', v_set) END,
                 CASE WHEN cardinality(v_reset) > 0 THEN format('RESET (%s)', array_to_string(v_reset, ', ')) END);
      v_seq := v_seq + 1;
      RETURN NEXT ROW(v_seq, 'profile', t.partition, v_sql, format('SHARE UPDATE EXCLUSIVE on %s', t.partition),
        CASE WHEN t.profile = 'cold' AND NOT t.frozen AND NOT p_client_vacuum
             THEN 'cold, not frozen yet: relaxed profile plus the freeze override'
             ELSE format('%s partition: %s profile', t.state, t.profile) END, true, ARRAY[t.partition])::qmaint.plan_step;
    END IF;
  END LOOP;
END;
$$;

-- Server-side tune (pg_cron, the daemon): the same plan minus the client-only
-- freeze, run by qmaint.run_steps (the one SQL executor), one step per call so
-- that a partition whose ALTER gives up after the retries is left as it was,
-- reported in "gave_up" with the sessions that blocked it, and the other
-- steps still run. Each step waits at most the lock_timeout of the policy of
-- the table it is for (the shortest of all policies for qmaint's own tables).
-- "steps" lists every step's result as run_steps reports it (seq, action,
-- target, attempts, outcome, blockers, ms). Takes the maintenance lock.
CREATE OR REPLACE FUNCTION qmaint.vacuum_tune_all(p_now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_step qmaint.plan_step;
  v_shortest interval;
  v_timeout interval;
  v_result jsonb;
  v_steps jsonb := '[]'::jsonb;
  v_gave_up jsonb := '[]'::jsonb;
BEGIN
  IF NOT pg_try_advisory_xact_lock(qmaint.maintenance_lock_key()) THEN
    RETURN jsonb_build_object('skipped', true, 'reason', 'another maintenance run holds the maintenance lock');
  END IF;
  SELECT coalesce(min(lock_timeout), interval '2 seconds') INTO v_shortest FROM qmaint.partition_policy;
  FOR v_step IN SELECT * FROM qmaint.vacuum_tune_steps(p_now, NULL, false) LOOP
    SELECT coalesce(min(pp.lock_timeout), v_shortest) INTO v_timeout
      FROM qmaint.partition_policy pp
     WHERE pp.parent_table = v_step.target
        OR to_regclass(pp.parent_table) = (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = to_regclass(v_step.target));
    v_result := qmaint.run_steps(ARRAY[v_step], v_timeout);
    v_steps := v_steps || (v_result -> 'done') || (v_result -> 'skipped');
    IF v_result ->> 'status' = 'lock_timeout' THEN
      v_steps := v_steps || jsonb_build_array((v_result -> 'failed') - 'statement' - 'lock_level');
      v_gave_up := v_gave_up || jsonb_build_array(v_result -> 'failed');
    END IF;
  END LOOP;
  RETURN jsonb_build_object(
    'skipped', false,
    'now', p_now,
    'applied', (SELECT count(*) FROM jsonb_array_elements(v_steps) e WHERE e ->> 'action' = 'profile' AND e ->> 'outcome' = 'done'),
    'tracked', (SELECT count(*) FROM jsonb_array_elements(v_steps) e WHERE e ->> 'action' = 'track' AND e ->> 'outcome' = 'done'),
    'gave_up', v_gave_up,
    'steps', v_steps,
    'tuning', (SELECT coalesce(jsonb_agg(jsonb_build_object('parent_table', t.parent_table, 'dead_per_sec', t.dead_per_sec,
                 'vacuum_threshold', t.vacuum_threshold, 'analyze_threshold', t.analyze_threshold, 'tuned_at', t.tuned_at)
                 ORDER BY t.parent_table), '[]'::jsonb) FROM qmaint.vacuum_tuning t));
END;
$$;
