-- qmaint scheduled maintenance: one entry point, qmaint.run_task(), that pg_cron
-- jobs and the node-cron daemon both call, so a task is recorded, guarded
-- against overlapping itself and dispatched the same way whoever runs it.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- The tasks a schedule can run, in a fixed order: a task's position is its
-- per-task lock number, so never reorder, only append.
CREATE OR REPLACE FUNCTION qmaint.schedule_tasks() RETURNS text[]
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT ARRAY['rotate', 'vacuum', 'rescue', 'health', 'recurring'] $$;

-- Advisory lock class of the per-task locks (two-int form: class, task position).
-- Distinct from the maintenance lock (bigint form) and from 29037 (partition creation).
CREATE OR REPLACE FUNCTION qmaint.task_lock_class() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 29041 $$;

-- Key of the session advisory lock the node-cron daemons elect their leader
-- with (src/schedule/leader.ts uses the same number). Next to the maintenance
-- (…201) and rescue (…202) keys, and distinct from both.
CREATE OR REPLACE FUNCTION qmaint.daemon_leader_lock_key() RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 7170514283207::bigint $$;

-- The SQL function behind each task, as a regprocedure signature.
CREATE OR REPLACE FUNCTION qmaint.task_function(p_task text) RETURNS text
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
  AS $$
    SELECT CASE p_task
      WHEN 'rotate' THEN 'qmaint.rotate_all(timestamp with time zone)'
      WHEN 'vacuum' THEN 'qmaint.vacuum_tune_all(timestamp with time zone)'
      WHEN 'rescue' THEN 'qmaint.rescue_expired(timestamp with time zone)'
      WHEN 'health' THEN 'qmaint.health_checks(timestamp with time zone,jsonb)'
      WHEN 'recurring' THEN 'qmaint.cron_enqueue_due(timestamp with time zone)'
    END
  $$;

-- Call one task's function. Raises whatever the task raises; run_task catches it.
CREATE OR REPLACE FUNCTION qmaint.dispatch_task(p_task text, p_now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_checks jsonb;
BEGIN
  CASE p_task
    WHEN 'rotate' THEN RETURN qmaint.rotate_all(p_now);
    WHEN 'vacuum' THEN RETURN qmaint.vacuum_tune_all(p_now);
    WHEN 'rescue' THEN RETURN qmaint.rescue_expired(p_now);
    WHEN 'recurring' THEN RETURN qmaint.cron_enqueue_due(p_now);
    WHEN 'health' THEN
      SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.check_name), '[]'::jsonb) INTO v_checks
        FROM qmaint.health_checks(p_now, '{}'::jsonb) h;
      RETURN jsonb_build_object('checks', v_checks);
    ELSE
      RAISE EXCEPTION 'unknown maintenance task %', p_task USING ERRCODE = '22023',
        HINT = 'use one of ' || array_to_string(qmaint.schedule_tasks(), ', ');
  END CASE;
END;
$$;

-- One line saying what a task's result means, for maintenance_runs.message.
CREATE OR REPLACE FUNCTION qmaint.task_summary(p_task text, p_result jsonb) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN p_result IS NULL THEN NULL
    WHEN p_task = 'health' THEN (
      SELECT coalesce(string_agg(format('%s: %s', s.status, s.names), '; ' ORDER BY s.worst DESC), 'no checks')
        FROM (SELECT c ->> 'status' AS status,
                     string_agg(c ->> 'check_name', ', ' ORDER BY c ->> 'check_name') AS names,
                     max(CASE c ->> 'status' WHEN 'critical' THEN 2 WHEN 'ok' THEN 0 ELSE 1 END) AS worst
                FROM jsonb_array_elements(p_result -> 'checks') AS c
               GROUP BY 1) s)
    WHEN jsonb_typeof(p_result) <> 'object' THEN NULL
    ELSE coalesce(p_result ->> 'message', p_result ->> 'summary', p_result ->> 'reason',
                  (SELECT left(string_agg(format('%s=%s', e.key, e.value), ', ' ORDER BY e.key), 200)
                     FROM jsonb_each_text(p_result) e
                    WHERE jsonb_typeof(p_result -> e.key) NOT IN ('object', 'array')
                      AND e.key NOT IN ('skipped', 'now', 'status')))
  END
$$;

-- Run one maintenance task and record it in qmaint.maintenance_runs.
--   p_task    rotate | vacuum | rescue | health | recurring
--   p_runner  pg_cron | daemon | cli (who started it)
--   p_now     the time the task acts for (NULL: now())
-- A task never overlaps itself: a second concurrent call records 'skipped' at
-- once. A task that raises is recorded as 'failed' (or 'lock_timeout') and its
-- partial work is rolled back, while the run's row commits with the caller's
-- transaction. Only bad arguments raise.
CREATE OR REPLACE FUNCTION qmaint.run_task(p_task text, p_runner text DEFAULT 'pg_cron', p_now timestamptz DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_slot integer := array_position(qmaint.schedule_tasks(), p_task);
  v_fn text := qmaint.task_function(p_task);
  v_id bigint;
  v_status text;
  v_message text;
  v_state text;
  v_result jsonb;
  v_row qmaint.maintenance_runs;
BEGIN
  IF v_slot IS NULL THEN
    RAISE EXCEPTION 'unknown maintenance task %', coalesce(quote_literal(p_task), 'NULL')
      USING ERRCODE = '22023', HINT = 'use one of ' || array_to_string(qmaint.schedule_tasks(), ', ');
  END IF;
  IF p_runner IS NULL OR p_runner NOT IN ('pg_cron', 'daemon', 'cli') THEN
    RAISE EXCEPTION 'unknown runner %', coalesce(quote_literal(p_runner), 'NULL')
      USING ERRCODE = '22023', HINT = 'use pg_cron, daemon or cli';
  END IF;

  IF NOT pg_try_advisory_xact_lock(qmaint.task_lock_class(), v_slot) THEN
    INSERT INTO qmaint.maintenance_runs (task, runner, finished_at, status, message)
    VALUES (p_task, p_runner, clock_timestamp(), 'skipped', format('the previous %s run is still going', p_task))
    RETURNING * INTO v_row;
    RETURN to_jsonb(v_row);
  END IF;

  INSERT INTO qmaint.maintenance_runs (task, runner) VALUES (p_task, p_runner) RETURNING id INTO v_id;

  IF to_regprocedure(v_fn) IS NULL THEN
    v_status := 'failed';
    v_message := format('%s does not exist; run qmaint migrate', v_fn);
  ELSE
    BEGIN
      v_result := qmaint.dispatch_task(p_task, v_now);
      -- A task reports how it went in its result: {"status": ...} when it says
      -- so, {"skipped": true}, or a non-empty "gave_up" list of lock give-ups.
      v_status := CASE WHEN jsonb_typeof(v_result) <> 'object' THEN 'ok'
                       WHEN v_result ->> 'status' IN ('ok', 'skipped', 'failed', 'lock_timeout') THEN v_result ->> 'status'
                       WHEN v_result @> '{"skipped": true}' THEN 'skipped'
                       WHEN jsonb_typeof(v_result -> 'gave_up') = 'array' AND jsonb_array_length(v_result -> 'gave_up') > 0 THEN 'lock_timeout'
                       ELSE 'ok' END;
      v_message := qmaint.task_summary(p_task, v_result);
      IF jsonb_typeof(v_result -> 'gave_up') = 'array' AND jsonb_array_length(v_result -> 'gave_up') > 0 THEN
        v_message := format('gave up waiting for a lock on %s; %s',
                            (SELECT string_agg(coalesce(g ->> 'target', '?'), ', ') FROM jsonb_array_elements(v_result -> 'gave_up') g),
                            coalesce(v_message, 'the rest was done'));
      END IF;
      IF v_status = 'skipped' AND v_message IS NULL THEN
        v_message := format('another session holds the lock %s needs; it runs again next tick', p_task);
      END IF;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
      v_status := CASE WHEN v_state = '55P03' THEN 'lock_timeout' ELSE 'failed' END;
      v_message := format('%s (SQLSTATE %s)', v_message, v_state);
    END;
  END IF;

  UPDATE qmaint.maintenance_runs
     SET finished_at = clock_timestamp(), status = v_status, message = v_message, details = v_result
   WHERE id = v_id
  RETURNING * INTO v_row;

  -- Keep the run log bounded (a minute-level schedule writes ~6000 rows a
  -- day). started_at is the real clock, so this compares with the real clock.
  DELETE FROM qmaint.maintenance_runs WHERE task = p_task AND started_at < now() - interval '30 days';

  RETURN to_jsonb(v_row);
END;
$$;

-- The end of the unbroken run of partitions that starts with the one holding
-- p_now (NULL when no partition holds p_now): how far ahead enqueue is safe.
CREATE OR REPLACE FUNCTION qmaint.runway_end(p_parent regclass, p_now timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_end timestamptz;
  r record;
BEGIN
  FOR r IN SELECT lower_bound, upper_bound FROM qmaint.partitions_of(p_parent)
            WHERE NOT is_default AND upper_bound > p_now ORDER BY lower_bound LOOP
    IF v_end IS NULL THEN
      EXIT WHEN r.lower_bound > p_now;
    ELSIF r.lower_bound <> v_end THEN
      EXIT;
    END IF;
    v_end := r.upper_bound;
  END LOOP;
  RETURN v_end;
END;
$$;

-- Numbers the daemon's /metrics endpoint serves, one row per sample; also
-- usable from any SQL-speaking exporter. Only cheap queries: live jobs are
-- counted from the low-water mark on (no queued or running job lies below
-- it; status counts the same way), one status at a time so each arm reads
-- that status's partial index; finished jobs are never read. Asked as
-- `status IN ('queued', 'running')` over every partition, the counts could
-- use neither and read the whole table: 4-5 s a scrape at 10M jobs in
-- 1,000 partitions. The two statements that read jobs run through EXECUTE,
-- planned for the mark's value every time, so the partitions below it are
-- pruned before planning; as static statements PL/pgSQL would also make a
-- plan of every partition on a connection's sixth scrape (0.8 s).
CREATE OR REPLACE FUNCTION qmaint.metrics_samples(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_low timestamptz := coalesce((SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'), '-infinity');
  v_policy record;
BEGIN
  -- Queue depth: totals always present, then per queue.
  RETURN QUERY EXECUTE
  'WITH live AS MATERIALIZED (
     SELECT ''queued''::text AS status, j.queue, count(*) AS n
       FROM qmaint.jobs j WHERE j.status = ''queued'' AND j.created_at >= $1 GROUP BY j.queue
     UNION ALL
     SELECT ''running'', j.queue, count(*)
       FROM qmaint.jobs j WHERE j.status = ''running'' AND j.created_at >= $1 GROUP BY j.queue)
   SELECT ''qmaint_jobs''::text, jsonb_build_object(''status'', s.status),
          coalesce((SELECT sum(l.n) FROM live l WHERE l.status = s.status), 0)::double precision
     FROM unnest(ARRAY[''queued'', ''running'']) AS s(status)
   UNION ALL
   SELECT ''qmaint_queue_jobs'', jsonb_build_object(''queue'', l.queue, ''status'', l.status), l.n::double precision
     FROM live l'
  USING v_low;
  -- 1 for a paused queue (qmaint queues pause), 0 for one resumed.
  RETURN QUERY
  SELECT 'qmaint_queue_paused', jsonb_build_object('queue', q.queue), CASE WHEN q.paused THEN 1 ELSE 0 END::double precision
    FROM qmaint.queues q;
  RETURN QUERY EXECUTE
  'SELECT ''qmaint_oldest_queued_seconds''::text, jsonb_build_object(''queue'', queue),
          greatest(0, extract(epoch FROM $1 - min(run_at)))::double precision
     FROM qmaint.jobs WHERE status = ''queued'' AND run_at <= $1 AND created_at >= $2 GROUP BY queue'
  USING v_now, v_low;

  -- Runway and dead tuples, per managed parent.
  FOR v_policy IN SELECT parent_table, to_regclass(parent_table) AS rel FROM qmaint.partition_policy ORDER BY 1 LOOP
    CONTINUE WHEN v_policy.rel IS NULL;
    RETURN QUERY
    SELECT 'qmaint_partitions_ahead', jsonb_build_object('parent', v_policy.parent_table),
           count(*) FILTER (WHERE NOT p.is_default AND p.lower_bound > v_now)::double precision
      FROM qmaint.partitions_of(v_policy.rel) p;
    RETURN QUERY
    SELECT 'qmaint_runway_seconds', jsonb_build_object('parent', v_policy.parent_table),
           CASE WHEN u = 'infinity' THEN 'Infinity'::double precision
                ELSE greatest(0, coalesce(extract(epoch FROM u - v_now), 0))::double precision END
      FROM qmaint.runway_end(v_policy.rel, v_now) AS u;
    RETURN QUERY
    SELECT 'qmaint_partition_dead_tuples',
           jsonb_build_object('parent', v_policy.parent_table, 'partition', s.partition::text, 'state', s.state),
           coalesce(st.n_dead_tup, 0)::double precision
      FROM qmaint.partition_states(v_policy.rel, v_now) s
      LEFT JOIN pg_stat_user_tables st ON st.relid = s.partition::oid
     WHERE s.state IN ('hot', 'warm');
  END LOOP;

  -- The xmin horizon: the oldest snapshot or transaction id still held by a
  -- session, a replication slot or a prepared transaction (vacuum cannot
  -- remove rows newer than it).
  RETURN QUERY
  SELECT 'qmaint_xmin_horizon_age_xids', '{}'::jsonb, coalesce(max(a), 0)::double precision
    FROM (SELECT greatest(age(backend_xmin), age(backend_xid)) AS a FROM pg_stat_activity
          UNION ALL SELECT greatest(age(xmin), age(catalog_xmin)) FROM pg_replication_slots
          UNION ALL SELECT age(transaction) FROM pg_prepared_xacts) h;
  RETURN QUERY
  SELECT 'qmaint_oldest_transaction_seconds', '{}'::jsonb,
         coalesce(greatest(0, extract(epoch FROM v_now - min(xact_start))), 0)::double precision
    FROM pg_stat_activity WHERE backend_xmin IS NOT NULL OR backend_xid IS NOT NULL;

  -- The last finished run of each task, whoever ran it.
  RETURN QUERY
  WITH last AS (
    SELECT DISTINCT ON (r.task) r.task, r.status, r.started_at, r.finished_at
      FROM qmaint.maintenance_runs r
     WHERE r.status <> 'running'
     ORDER BY r.task, r.started_at DESC, r.id DESC)
  SELECT m.metric, m.labels, m.value FROM last
  CROSS JOIN LATERAL (VALUES
    ('qmaint_maintenance_last_run_timestamp_seconds', jsonb_build_object('task', last.task), extract(epoch FROM last.started_at)::double precision),
    ('qmaint_maintenance_last_run_duration_seconds', jsonb_build_object('task', last.task), extract(epoch FROM last.finished_at - last.started_at)::double precision)
  ) AS m(metric, labels, value)
  UNION ALL
  SELECT 'qmaint_maintenance_last_run_status', jsonb_build_object('task', last.task, 'status', s.status),
         (last.status = s.status)::integer::double precision
    FROM last CROSS JOIN unnest(ARRAY['ok', 'skipped', 'failed', 'lock_timeout']) AS s(status);
  RETURN QUERY
  SELECT 'qmaint_maintenance_last_success_timestamp_seconds', jsonb_build_object('task', r.task),
         extract(epoch FROM max(r.started_at))::double precision
    FROM qmaint.maintenance_runs r WHERE r.status = 'ok' GROUP BY r.task;
END;
$$;

-- The node a maintenance run ran on (the default of maintenance_runs.node):
-- the server's address and port when the session came over TCP, else its
-- cluster_name or its port, and the WAL timeline, which every promotion
-- increments, so the old primary's runs and the promoted standby's differ even
-- when nothing else does (pg_cron's background workers have no socket).
-- Called on a primary only: maintenance writes.
CREATE OR REPLACE FUNCTION qmaint.node_name() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%s timeline %s',
                coalesce(host(inet_server_addr()) || ':' || current_setting('port'),
                         nullif(current_setting('cluster_name'), ''),
                         'port ' || current_setting('port')),
                CASE WHEN pg_is_in_recovery() THEN NULL
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END)
$$;
