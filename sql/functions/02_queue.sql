-- qmaint queue functions: enqueue with self-healing partitions, retry backoff,
-- lease rescue, and the admin steps behind `qmaint jobs retry|cancel`.
-- NOTIFY channel: qmaint_jobs, payload = queue name (see docs/queue.md).
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- Delay before retry number p_retry: exponential from p_base, capped at p_cap,
-- with "equal jitter" (half fixed, half random) so failed jobs spread out.
CREATE OR REPLACE FUNCTION qmaint.retry_delay(p_retry integer, p_base interval DEFAULT '1 second', p_cap interval DEFAULT '1 hour')
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  -- In seconds as double precision, capped before it becomes an interval:
  -- p_base * 2^40 overflows an interval from a base of about 8 seconds.
  SELECT make_interval(secs => d / 2 + d / 2 * random())
    FROM (SELECT least(extract(epoch FROM p_cap)::float8,
                       extract(epoch FROM p_base)::float8 * power(2::float8, least(greatest(p_retry, 1) - 1, 40))) AS d) s
$$;

-- The one retry-or-fail decision, for a failed attempt (the consumer's fail
-- statement) and for one whose lease ran out (rescue_expired): while retries
-- remain, queued again with retry_count + 1 and run_at = p_now + backoff;
-- after the last, failed, run_at kept.
CREATE OR REPLACE FUNCTION qmaint.next_try(p_retry_count integer, p_max_retries integer, p_run_at timestamptz, p_now timestamptz,
                                           p_base interval, p_cap interval,
                                           OUT status qmaint.job_status, OUT retry_count integer, OUT run_at timestamptz)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN p_retry_count < p_max_retries THEN 'queued' ELSE 'failed' END::qmaint.job_status,
         CASE WHEN p_retry_count < p_max_retries THEN p_retry_count + 1 ELSE p_retry_count END,
         CASE WHEN p_retry_count < p_max_retries THEN p_now + qmaint.retry_delay(p_retry_count + 1, p_base, p_cap) ELSE p_run_at END
$$;

-- A queue's retry backoff as its consumers recorded it (qmaint.queues), else
-- the defaults, 1 second and 1 hour.
CREATE OR REPLACE FUNCTION qmaint.queue_backoff(p_queue text, OUT base interval, OUT cap interval)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(max(q.backoff_base), interval '1 second'), coalesce(max(q.backoff_cap), interval '1 hour')
    FROM qmaint.queues q WHERE q.queue = p_queue
$$;

-- Lower the low-water mark of qmaint.jobs to p_ts when a live job sits below
-- it (a retried old job, a late commit). Cheap no-op otherwise.
-- SECURITY DEFINER: producers and workers (qmaint roles install) lower the
-- mark without any privilege on qmaint.partition_policy. All it can do is
-- lower one column of one row, which only widens what a claim searches.
-- Not executable by PUBLIC; `qmaint roles install` grants it.
CREATE OR REPLACE FUNCTION qmaint.lower_low_water(p_ts timestamptz) RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  UPDATE qmaint.partition_policy SET low_water = p_ts, updated_at = now()
   WHERE parent_table = 'qmaint.jobs' AND low_water > p_ts
$$;
REVOKE ALL ON FUNCTION qmaint.lower_low_water(timestamptz) FROM PUBLIC;

-- Enqueue one job and return its id. A row whose partition is missing gets
-- the partition made (ensure_jobs_partition) and is inserted again; the
-- exception block keeps a caller's open transaction usable. The id is taken
-- from the sequence first (no RETURNING), so a producer needs INSERT and the
-- sequence, never SELECT on qmaint.jobs. Ready jobs NOTIFY on
-- qmaint_jobs with the queue as payload; PostgreSQL folds identical
-- notifications, so a transaction sends one per queue however many rows.
CREATE OR REPLACE FUNCTION qmaint.enqueue(p_queue text, p_payload jsonb DEFAULT '{}', p_run_at timestamptz DEFAULT NULL,
                               p_priority integer DEFAULT 0, p_max_retries integer DEFAULT 5,
                               p_created_at timestamptz DEFAULT NULL, p_timeout_ms integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- Truncated to the column's millisecond precision (rounding could land in the future).
  v_created timestamptz := date_trunc('milliseconds', coalesce(p_created_at, now()));
  v_run_at timestamptz := coalesce(p_run_at, v_created);
  v_id bigint := nextval('qmaint.jobs_id_seq');
  v_constraint text;
BEGIN
  BEGIN
    INSERT INTO qmaint.jobs (id, queue, payload, run_at, priority, max_retries, created_at, updated_at, timeout_ms)
    VALUES (v_id, p_queue, coalesce(p_payload, '{}'), v_run_at, coalesce(p_priority, 0), coalesce(p_max_retries, 5), v_created, now(), p_timeout_ms);
  EXCEPTION WHEN check_violation THEN
    -- A row with no partition to go to raises check_violation naming no
    -- constraint; a CHECK constraint that fails names itself. (Never the
    -- message text: it follows lc_messages.)
    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
    IF v_constraint <> '' THEN
      RAISE;
    END IF;
    PERFORM qmaint.ensure_jobs_partition(v_created);
    INSERT INTO qmaint.jobs (id, queue, payload, run_at, priority, max_retries, created_at, updated_at, timeout_ms)
    VALUES (v_id, p_queue, coalesce(p_payload, '{}'), v_run_at, coalesce(p_priority, 0), coalesce(p_max_retries, 5), v_created, now(), p_timeout_ms);
  END;
  PERFORM qmaint.lower_low_water(v_created);
  IF v_run_at <= now() THEN
    PERFORM pg_notify('qmaint_jobs', p_queue);
  END IF;
  RETURN v_id;
END;
$$;

-- Enqueue jobs that each hold a unique key in p_queue (one job per array
-- element; p_keys, p_payloads and p_timeouts (NULL: no per-job timeout) line
-- up). While a queued or running job of the queue holds a key, no second job
-- with that key is made:
--   skip    (default) the new job is skipped;
--   replace a queued holder gets the new payload and run_at instead; a running
--           holder is left alone and the new job is skipped.
-- Within one call, the first job of a key counts for skip, the last for
-- replace. The key is taken in qmaint.job_keys (unpartitioned, primary key
-- (queue, key)) by INSERT ... ON CONFLICT DO NOTHING in the caller's
-- transaction: a concurrent producer of the same key waits for it and then
-- sees the key taken, or free again if this transaction rolled back. Keys are
-- taken in key order, so two batches with overlapping keys cannot deadlock.
-- The holder is looked up in a later statement (a new snapshot under READ
-- COMMITTED), so a holder that committed while this call waited is found;
-- one that finished meanwhile reads as NULL.
-- Returns one row per element: its position (1-based), the id of the job
-- holding the key afterwards, and inserted | replaced | skipped.
-- SECURITY DEFINER: a producer (INSERT only) neither reads jobs nor updates
-- payloads otherwise; what it can do here is what enqueue can, plus replacing
-- the payload and run_at of a queued job holding the same key in the same
-- queue. Not executable by PUBLIC; `qmaint roles install` grants it.
-- plan_cache_mode = force_custom_plan: its statements on qmaint.jobs carry
-- the values that prune partitions at plan time, so a plan made for each
-- call is the plan they want. Left to choose, PL/pgSQL also makes a generic
-- plan on a connection's sixth call, one that holds every partition, only
-- to compare it: 0.8-1.4 s for that one call at 1,000 partitions. (The
-- setting holds for every function called from here too; none is called
-- per row.)
CREATE OR REPLACE FUNCTION qmaint.enqueue_keyed(p_queue text, p_keys text[], p_payloads jsonb[], p_mode text DEFAULT 'skip',
                                                p_run_at timestamptz DEFAULT NULL, p_priority integer DEFAULT 0, p_max_retries integer DEFAULT 5,
                                                p_created_at timestamptz DEFAULT NULL, p_timeouts integer[] DEFAULT NULL)
RETURNS TABLE (ord integer, id bigint, outcome text)
LANGUAGE plpgsql
SECURITY DEFINER
SET plan_cache_mode = force_custom_plan
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_created timestamptz := date_trunc('milliseconds', coalesce(p_created_at, now()));
  v_run_at timestamptz := coalesce(p_run_at, date_trunc('milliseconds', coalesce(p_created_at, now())));
  v_n integer := coalesce(cardinality(p_keys), 0);
  v_timeouts integer[] := coalesce(p_timeouts, array_fill(NULL::integer, ARRAY[coalesce(cardinality(p_keys), 0)]));
  v_pick integer[];
  v_won text[];
  v_replaced text[] := '{}'::text[];
  v_low timestamptz;
BEGIN
  IF p_mode IS NULL OR p_mode NOT IN ('skip', 'replace') THEN
    RAISE EXCEPTION 'key mode % is not skip or replace', coalesce(p_mode, 'NULL') USING ERRCODE = '22023';
  END IF;
  IF coalesce(cardinality(p_payloads), 0) <> v_n OR cardinality(v_timeouts) <> v_n THEN
    RAISE EXCEPTION 'keys, payloads and timeouts differ in length' USING ERRCODE = '22023';
  END IF;
  IF array_position(p_keys, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'every job of enqueue_keyed needs a key' USING ERRCODE = '22023';
  END IF;
  IF v_n = 0 THEN
    RETURN;
  END IF;
  PERFORM qmaint.ensure_jobs_partition(v_created);

  -- The element that counts for each key: the first (skip) or the last (replace).
  SELECT array_agg(s.o) INTO v_pick
    FROM (SELECT DISTINCT ON (u.k) u.o::integer AS o
            FROM unnest(p_keys) WITH ORDINALITY AS u(k, o)
           ORDER BY u.k, CASE WHEN p_mode = 'skip' THEN u.o ELSE -u.o END) s;

  WITH pick AS (
    SELECT u.o::integer AS o, u.k, u.p, u.t
      FROM unnest(p_keys, p_payloads, v_timeouts) WITH ORDINALITY AS u(k, p, t, o)
     WHERE u.o::integer = ANY (v_pick)
  ), won AS (
    INSERT INTO qmaint.job_keys AS jk (queue, key, job_id)
    SELECT p_queue, pk.k, nextval('qmaint.jobs_id_seq') FROM pick pk ORDER BY pk.k
    ON CONFLICT ON CONSTRAINT job_keys_pkey DO NOTHING
    RETURNING jk.key, jk.job_id
  ), ins AS (
    INSERT INTO qmaint.jobs AS j (id, queue, payload, run_at, priority, max_retries, created_at, updated_at, timeout_ms, job_key)
    SELECT w.job_id, p_queue, coalesce(pk.p, '{}'), v_run_at, coalesce(p_priority, 0), coalesce(p_max_retries, 5), v_created, now(), pk.t, pk.k
      FROM won w JOIN pick pk ON pk.k = w.key
    RETURNING j.job_key
  )
  SELECT coalesce(array_agg(i.job_key), '{}') INTO v_won FROM ins i;

  IF p_mode = 'replace' AND cardinality(v_won) < cardinality(v_pick) THEN
    -- Live jobs sit at or above the low-water mark: partitions below it are pruned,
    -- in both statements (without the mark the update was planned against every
    -- partition: 120-170 ms a call at 1,000 partitions).
    SELECT pp.low_water INTO v_low FROM qmaint.partition_policy pp WHERE pp.parent_table = 'qmaint.jobs';
    WITH pick AS (
      SELECT u.k, u.p
        FROM unnest(p_keys, p_payloads) WITH ORDINALITY AS u(k, p, o)
       WHERE u.o::integer = ANY (v_pick) AND u.k <> ALL (v_won)
    ), holder AS (
      -- Locked in id order, so two replacing batches never wait on each other in a cycle.
      SELECT j.id, j.created_at, pk.p
        FROM pick pk
        JOIN qmaint.job_keys jk ON jk.queue = p_queue AND jk.key = pk.k
        JOIN qmaint.jobs j ON j.id = jk.job_id
       WHERE j.created_at >= coalesce(v_low, '-infinity')
         AND j.queue = p_queue AND j.job_key = pk.k AND j.status = 'queued'
       ORDER BY j.id
         FOR UPDATE OF j
    ), rep AS (
      UPDATE qmaint.jobs j
         SET payload = coalesce(h.p, '{}'), run_at = v_run_at, updated_at = now()
        FROM holder h
       WHERE j.id = h.id AND j.created_at = h.created_at AND j.status = 'queued'
         AND j.created_at >= coalesce(v_low, '-infinity')
      RETURNING j.job_key
    )
    SELECT coalesce(array_agg(r.job_key), '{}') INTO v_replaced FROM rep r;
  END IF;

  IF cardinality(v_won) > 0 THEN
    PERFORM qmaint.lower_low_water(v_created);
  END IF;
  IF cardinality(v_won) + cardinality(v_replaced) > 0 AND v_run_at <= now() THEN
    PERFORM pg_notify('qmaint_jobs', p_queue);
  END IF;

  RETURN QUERY
  SELECT u.o::integer, jk.job_id,
         CASE WHEN u.o::integer = ANY (v_pick) AND u.k = ANY (v_won) THEN 'inserted'
              WHEN u.o::integer = ANY (v_pick) AND u.k = ANY (v_replaced) THEN 'replaced'
              ELSE 'skipped' END
    FROM unnest(p_keys) WITH ORDINALITY AS u(k, o)
    LEFT JOIN qmaint.job_keys jk ON jk.queue = p_queue AND jk.key = u.k
   ORDER BY u.o;
END;
$$;
REVOKE ALL ON FUNCTION qmaint.enqueue_keyed(text, text[], jsonb[], text, timestamptz, integer, integer, timestamptz, integer[]) FROM PUBLIC;

-- EXPLAIN (no ANALYZE) of the consumer's claim statement, for roles that may
-- read but not update jobs (qmaint_readonly): PostgreSQL checks the UPDATE
-- privilege even to plan an UPDATE or FOR UPDATE. SECURITY DEFINER, so it
-- explains exactly one text: the claim statement, whose SHA-256 is checked
-- first (the text itself lives only in src/queue/claim.ts; the readonly test
-- fails when the two drift apart). The values travel as parameters, and
-- nothing runs: the statement is only planned. Not executable by PUBLIC.
CREATE OR REPLACE FUNCTION qmaint.explain_claim(p_statement text, p_queue text, p_low_water timestamptz, p_batch integer,
                                                p_worker text, p_lease_seconds double precision)
RETURNS json
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (plpgsql_check: the EXECUTEd text is compared with the claim statement's
-- SHA-256 before it runs; no other text is ever executed)
DECLARE
  v_plan json;
BEGIN
  IF p_statement IS NULL
     OR sha256(convert_to(p_statement, 'UTF8')) <> '\xcd902f69f57175294f040917b75ebe46c838615cd6352252d396d7619050aa60'::bytea THEN
    RAISE EXCEPTION 'qmaint.explain_claim explains only the claim statement of this qmaint version'
      USING ERRCODE = '42501', HINT = 'run qmaint migrate with the qmaint version the caller runs';
  END IF;
  EXECUTE 'EXPLAIN (FORMAT JSON, SUMMARY) ' || p_statement INTO v_plan
    USING p_queue, coalesce(p_low_water, '-infinity'), p_batch, p_worker, p_lease_seconds, NULL::integer, NULL::timestamptz, NULL::bigint;
  RETURN v_plan;
END;
$$;
REVOKE ALL ON FUNCTION qmaint.explain_claim(text, text, timestamptz, integer, text, double precision) FROM PUBLIC;

-- The sampled statistics (pg_stats, not inherited) of the status and queue
-- columns of every partition of qmaint.jobs: `qmaint status` estimates the
-- history of each partition from them. SECURITY DEFINER because pg_stats
-- shows a column's statistics only to a role that may read that column of
-- that table, and qmaint_readonly reads the partitions through the parent
-- only: without it, status fell back to counting every row of every
-- partition for that role. It returns nothing but those two columns' most
-- common values, their frequencies and the null fraction, which SELECT on
-- qmaint.jobs shows anyway, and of no other table. Not executable by PUBLIC.
CREATE OR REPLACE FUNCTION qmaint.jobs_column_stats()
RETURNS TABLE (schemaname text, tablename text, attname text, vals text[], freqs float8[], nulls float8)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  -- The names as arrays too: pg_stats then finds the partitions by name
  -- (pg_class's name index) instead of checking column privileges on every
  -- relation of their schemas, indexes included.
  WITH parts AS MATERIALIZED (SELECT n.nspname, c.relname
                                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE i.inhparent = 'qmaint.jobs'::regclass)
  SELECT s.schemaname::text, s.tablename::text, s.attname::text, s.most_common_vals::text::text[], s.most_common_freqs::float8[], s.null_frac::float8
    FROM pg_stats s
   WHERE s.attname IN ('status', 'queue')
     AND NOT s.inherited
     AND s.schemaname = ANY (ARRAY(SELECT DISTINCT nspname FROM parts))
     AND s.tablename = ANY (ARRAY(SELECT relname FROM parts))
     AND (s.schemaname, s.tablename) IN (SELECT nspname, relname FROM parts)
$$;
REVOKE ALL ON FUNCTION qmaint.jobs_column_stats() FROM PUBLIC;

-- Key of the transaction advisory lock that lets one rescuer run at a time.
CREATE OR REPLACE FUNCTION qmaint.rescue_lock_key() RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 7170514283202::bigint $$;

-- Whether any queued or running job lies below p_mark (the low-water mark):
-- the question rescue_expired() asks on every call. Below the mark lie most
-- partitions (a thousand, with a long history), and each holds no live job,
-- so the answer is one probe of an empty partial index per partition; the
-- cost is in planning. Planned afresh for each value, as PL/pgSQL does for a
-- statement's first five runs on a connection, the two aggregates the heal
-- used to ask cost 0.6-1.7 s a call at 1,000 partitions, five times over on
-- every new connection. So this asks EXISTS, whose plan is a few times
-- cheaper to make, and keeps one generic plan from the first call on; at run
-- time that plan skips the partitions at and above the mark (run-time
-- pruning).
CREATE OR REPLACE FUNCTION qmaint.live_below(p_mark timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM qmaint.jobs WHERE status = 'queued' AND created_at < p_mark)
      OR EXISTS (SELECT 1 FROM qmaint.jobs WHERE status = 'running' AND created_at < p_mark);
END;
$$;

-- Put jobs whose lease ran out back in the queue (retry_count + 1, backoff
-- run_at), or fail them when their retries are spent, keeping last_error.
-- One rescuer at a time: a concurrent call returns {"skipped": true}.
-- Also heals the low-water mark if a live job sits below it.
--
-- Two statements, so the cost follows the expired jobs, not the table. The
-- first finds and locks them through the running index, only from the
-- low-water mark on (no running job sits below it; one that does is found
-- by the healing below, and rescued by the next call). The second updates
-- them by key with the range of their created_at as values, so the plan
-- holds only the partitions they are in. Joined to the locking query in one
-- statement, the update was planned against every partition: at 10M jobs in
-- 1,000 partitions it hashed the whole table, 1 s a call with nothing to
-- rescue, and 81 s on a PostgreSQL that JIT-compiled the plan.
CREATE OR REPLACE FUNCTION qmaint.rescue_expired(p_now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_requeued bigint := 0;
  v_failed bigint := 0;
  v_low timestamptz;
  v_below timestamptz;
  v_ids bigint[];
  v_created timestamptz[];
  v_first timestamptz;
  v_last timestamptz;
BEGIN
  IF NOT pg_try_advisory_xact_lock(qmaint.rescue_lock_key()) THEN
    RETURN jsonb_build_object('skipped', true);
  END IF;
  SELECT low_water INTO v_low FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs';
  SELECT array_agg(e.id), array_agg(e.created_at), min(e.created_at), max(e.created_at)
    INTO v_ids, v_created, v_first, v_last
    FROM (SELECT id, created_at FROM qmaint.jobs
           WHERE status = 'running' AND locked_until < p_now AND created_at >= coalesce(v_low, '-infinity')
             FOR UPDATE SKIP LOCKED) e;
  IF v_ids IS NOT NULL THEN
    WITH moved AS (
      UPDATE qmaint.jobs j
         SET (status, retry_count, run_at) = (SELECT n.status, n.retry_count, n.run_at
                                                FROM qmaint.queue_backoff(j.queue) b,
                                                     qmaint.next_try(j.retry_count, j.max_retries, j.run_at, p_now, b.base, b.cap) n),
             last_error = coalesce(j.last_error, format('lease of attempt %s held by %s expired at %s', j.attempt, j.locked_by, j.locked_until)),
             locked_by = NULL,
             locked_until = NULL,
             updated_at = p_now
        FROM unnest(v_ids, v_created) AS e(id, created_at)
       WHERE j.id = e.id AND j.created_at = e.created_at
         AND j.created_at BETWEEN v_first AND v_last
      RETURNING j.status
    )
    SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'failed')
      INTO v_requeued, v_failed FROM moved;
  END IF;

  -- The heal: whatever makes a job live below the mark lowers it, but a job
  -- written by hand may not. Finding one is rare; asking is not (every call).
  IF v_low IS NOT NULL AND v_low > '-infinity' THEN
    IF qmaint.live_below(v_low) THEN
      -- Each arm matches a partial index, so partitions below the mark are not scanned.
      SELECT least((SELECT min(created_at) FROM qmaint.jobs WHERE status = 'queued' AND created_at < v_low),
                   (SELECT min(created_at) FROM qmaint.jobs WHERE status = 'running' AND created_at < v_low))
        INTO v_below;
      IF v_below IS NOT NULL THEN
        PERFORM qmaint.lower_low_water(v_below);
      END IF;
    END IF;
  END IF;
  RETURN jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
END;
$$;

-- Put failed jobs back in a queue: retry_count 0, ready at p_now, last_error
-- kept for the record; into p_to when given (a redrive out of a dead-letter
-- queue), else into their own queue. Selected by ids, or by queue (all failed
-- of it), or both. A job with a unique key takes its key again in the queue
-- it goes to, in the same statement; while a live job holds that key it stays
-- failed (never two live jobs per key). Lowers the low-water mark when an old
-- job comes back to life. Returns the ids put back.
CREATE OR REPLACE FUNCTION qmaint.requeue_failed(p_ids bigint[], p_queue text, p_to text, p_now timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ids bigint[];
  v_min timestamptz;
  v_queues text[];
BEGIN
  IF p_ids IS NULL AND p_queue IS NULL THEN
    RAISE EXCEPTION 'name the jobs to put back (ids or a queue)' USING ERRCODE = '22023';
  END IF;
  WITH cand AS (
    SELECT j.id, j.created_at, coalesce(p_to, j.queue) AS target, j.job_key
      FROM qmaint.jobs j
     WHERE j.status = 'failed'
       AND (p_ids IS NULL OR j.id = ANY (p_ids))
       AND (p_queue IS NULL OR j.queue = p_queue)
       FOR UPDATE
  ), keyed AS (
    INSERT INTO qmaint.job_keys AS k (queue, key, job_id)
    SELECT DISTINCT ON (c.target, c.job_key) c.target, c.job_key, c.id
      FROM cand c WHERE c.job_key IS NOT NULL
     ORDER BY c.target, c.job_key, c.id
    ON CONFLICT ON CONSTRAINT job_keys_pkey DO NOTHING
    RETURNING k.job_id
  ), back AS (
    UPDATE qmaint.jobs j
       SET status = 'queued', queue = c.target, retry_count = 0, run_at = date_trunc('milliseconds', p_now),
           locked_by = NULL, locked_until = NULL, updated_at = p_now
      FROM cand c
     WHERE j.id = c.id AND j.created_at = c.created_at
       AND (c.job_key IS NULL OR c.id IN (SELECT kd.job_id FROM keyed kd))
    RETURNING j.id, j.created_at, j.queue
  )
  SELECT array_agg(b.id ORDER BY b.id), min(b.created_at), array_agg(DISTINCT b.queue) INTO v_ids, v_min, v_queues FROM back b;
  IF v_min IS NOT NULL THEN
    PERFORM qmaint.lower_low_water(v_min);
    PERFORM pg_notify('qmaint_jobs', q) FROM unnest(v_queues) AS q;
  END IF;
  RETURN QUERY SELECT unnest(coalesce(v_ids, '{}'));
END;
$$;

-- Put failed jobs back in their queue (`qmaint jobs retry`); see requeue_failed.
CREATE OR REPLACE FUNCTION qmaint.retry_jobs(p_ids bigint[] DEFAULT NULL, p_queue text DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_ids IS NULL AND p_queue IS NULL THEN
    RAISE EXCEPTION 'name the jobs to retry (ids or a queue)' USING ERRCODE = '22023';
  END IF;
  RETURN QUERY SELECT * FROM qmaint.requeue_failed(p_ids, p_queue, NULL, p_now);
END;
$$;

-- The queue a dead-letter queue's jobs go back to when no target is named:
-- the one queue whose dead_letter it is (NULL when none or several are).
CREATE OR REPLACE FUNCTION qmaint.dead_letter_source(p_dead_letter text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN count(*) = 1 THEN min(q.queue) END FROM qmaint.queues q WHERE q.dead_letter = p_dead_letter
$$;

-- `qmaint jobs redrive --from DLQ [--to Q]`: the failed jobs of a dead-letter
-- queue (all, or those of p_ids) go back to p_to, by default the one queue
-- whose dead-letter queue it is. Returns the ids put back.
CREATE OR REPLACE FUNCTION qmaint.redrive_jobs(p_from text, p_to text DEFAULT NULL, p_ids bigint[] DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_to text := coalesce(p_to, qmaint.dead_letter_source(p_from));
BEGIN
  IF p_from IS NULL THEN
    RAISE EXCEPTION 'name the dead-letter queue to redrive from' USING ERRCODE = '22023';
  END IF;
  IF v_to IS NULL THEN
    RAISE EXCEPTION 'no single queue has % as its dead-letter queue', p_from
      USING ERRCODE = '22023', HINT = 'name the queue the jobs go back to';
  END IF;
  IF v_to = p_from THEN
    RAISE EXCEPTION 'jobs of % cannot be redriven into the same queue (retry them instead)', p_from USING ERRCODE = '22023';
  END IF;
  RETURN QUERY SELECT * FROM qmaint.requeue_failed(p_ids, p_from, v_to, p_now);
END;
$$;

-- Pause (p_paused true) or resume a queue: consumers claim nothing from a
-- paused queue (the claim reads qmaint.queues.paused), running jobs finish.
-- Resuming wakes idle consumers (NOTIFY). Returns whether the queue was
-- paused before.
CREATE OR REPLACE FUNCTION qmaint.set_queue_paused(p_queue text, p_paused boolean) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_was boolean;
BEGIN
  IF p_queue IS NULL OR p_paused IS NULL THEN
    RAISE EXCEPTION 'name the queue, and whether it is paused' USING ERRCODE = '22023';
  END IF;
  SELECT q.paused INTO v_was FROM qmaint.queues q WHERE q.queue = p_queue FOR UPDATE;
  INSERT INTO qmaint.queues AS q (queue, paused) VALUES (p_queue, p_paused)
  ON CONFLICT (queue) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()
   WHERE q.paused IS DISTINCT FROM EXCLUDED.paused;
  IF NOT p_paused THEN
    PERFORM pg_notify('qmaint_jobs', p_queue);
  END IF;
  RETURN coalesce(v_was, false);
END;
$$;

-- Set (or with NULL clear) the dead-letter queue of p_queue: its jobs that
-- fail for good are moved there (trigger qmaint_job_finished).
CREATE OR REPLACE FUNCTION qmaint.set_dead_letter(p_queue text, p_dead_letter text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_queue IS NULL THEN
    RAISE EXCEPTION 'name the queue' USING ERRCODE = '22023';
  END IF;
  IF p_dead_letter = p_queue THEN
    RAISE EXCEPTION 'queue % cannot be its own dead-letter queue', p_queue USING ERRCODE = '22023';
  END IF;
  INSERT INTO qmaint.queues AS q (queue, dead_letter) VALUES (p_queue, p_dead_letter)
  ON CONFLICT (queue) DO UPDATE SET dead_letter = EXCLUDED.dead_letter, updated_at = now()
   WHERE q.dead_letter IS DISTINCT FROM EXCLUDED.dead_letter;
END;
$$;

-- Row trigger qmaint_job_finished (AFTER UPDATE OF status on qmaint.jobs),
-- for a job leaving queued/running that holds a key or failed for good:
--   - its key is free again (the qmaint.job_keys row naming this job goes);
--   - a job that failed for good has the time recorded in qmaint.failed_jobs
--     (where health's failed_jobs check finds recent failures, see 0020);
--   - a job that failed for good, when its queue names a dead-letter queue,
--     moves there (still failed; one more row version, for final failures only).
-- The failure statements (the consumer's, rescue_expired) and cancel need not
-- know about keys or dead letters. AFTER, not BEFORE: a BEFORE row trigger
-- makes PostgreSQL lock and re-read every updated row first, which cost the
-- claim and complete statements about a third of their throughput; an AFTER
-- trigger's WHEN is checked on the row at hand and calls nothing for the
-- common case (a keyless job completing). SECURITY DEFINER: a worker needs
-- no privilege on qmaint.job_keys or qmaint.failed_jobs, nor UPDATE of
-- jobs.queue.
CREATE OR REPLACE FUNCTION qmaint.job_finished() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_dead text;
BEGIN
  IF OLD.job_key IS NOT NULL THEN
    DELETE FROM qmaint.job_keys k WHERE k.queue = OLD.queue AND k.key = OLD.job_key AND k.job_id = OLD.id;
  END IF;
  IF NEW.status = 'failed' THEN
    -- A job retried and failed again: its latest failure replaces the last.
    INSERT INTO qmaint.failed_jobs (job_id, created_at, failed_at) VALUES (NEW.id, NEW.created_at, NEW.updated_at)
    ON CONFLICT (job_id, created_at) DO UPDATE SET failed_at = EXCLUDED.failed_at;
  END IF;
  IF NEW.status = 'failed' AND OLD.status = 'running' THEN
    SELECT q.dead_letter INTO v_dead FROM qmaint.queues q WHERE q.queue = NEW.queue;
    IF v_dead IS NOT NULL THEN
      -- EXECUTE plans it for these values each time, pruned to the job's one
      -- partition. As a static statement PL/pgSQL would also make a generic
      -- plan of it on a connection's sixth such failure, holding every
      -- partition: 0.5-0.6 s at 1,000 partitions.
      EXECUTE 'UPDATE qmaint.jobs j SET queue = $1, updated_at = now()
                WHERE j.id = $2 AND j.created_at = $3 AND j.status = ''failed'' AND j.queue = $4'
        USING v_dead, NEW.id, NEW.created_at, NEW.queue;
    END IF;
  END IF;
  RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION qmaint.job_finished() FROM PUBLIC;

CREATE OR REPLACE TRIGGER qmaint_job_finished AFTER UPDATE OF status ON qmaint.jobs
  FOR EACH ROW WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running')
                     AND (OLD.job_key IS NOT NULL OR NEW.status = 'failed'))
  EXECUTE FUNCTION qmaint.job_finished();

-- Cancel jobs, queued or running: they end `cancelled` (not failed: the
-- failed-jobs health check and the failure counts leave them alone, and a
-- dead-letter queue takes only jobs failed for good), last_error saying when
-- (and, for a running job, which attempt on which worker); a key they held is
-- free again (trigger qmaint_job_finished). A running job is cancelled in the
-- database at once: every later result of the attempt that ran it (complete,
-- fail, heartbeat) matches status = 'running' and so changes nothing. The
-- consumer holding it is told by NOTIFY on qmaint_cancel, payload the
-- attempt's fence key `id.attempt`, and aborts the handler's signal. The rows
-- are locked in id order first; a row locked by a claim or a completion in
-- flight is waited for (those commit at once) and then judged again as it is.
-- Queued and running jobs sit at or above the low-water mark, so the mark
-- bounds the search, and each call is planned for its values
-- (force_custom_plan): only the partitions from the mark on are planned and
-- read, through the partial indexes of queued and running jobs when a queue
-- is named. (Written as status::text IN (...) it could use neither index and
-- read every row of every partition: 1.9-3.7 s for a dry run at 10 million
-- jobs.) Returns each job cancelled and whether it was running.
CREATE OR REPLACE FUNCTION qmaint.cancel_jobs(p_ids bigint[] DEFAULT NULL, p_queue text DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS TABLE (job_id bigint, was_running boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  r record;
  v_low timestamptz;
BEGIN
  IF p_ids IS NULL AND p_queue IS NULL THEN
    RAISE EXCEPTION 'name the jobs to cancel (ids or a queue)' USING ERRCODE = '22023';
  END IF;
  v_low := coalesce((SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'), '-infinity');
  FOR r IN
    WITH target AS (
      SELECT j.id, j.created_at, j.status::text AS was, j.attempt, j.locked_by
        FROM qmaint.jobs j
       WHERE (j.status = 'queued' OR j.status = 'running')
         AND j.created_at >= v_low
         AND (p_ids IS NULL OR j.id = ANY (p_ids))
         AND (p_queue IS NULL OR j.queue = p_queue)
       ORDER BY j.id
         FOR UPDATE OF j
    )
    UPDATE qmaint.jobs j
       SET status = 'cancelled',
           last_error = CASE WHEN t.was = 'running'
                             THEN format('cancelled at %s while attempt %s ran on %s', p_now, t.attempt, t.locked_by)
                             ELSE format('cancelled at %s', p_now) END,
           locked_by = NULL,
           locked_until = NULL,
           updated_at = p_now
      FROM target t
     WHERE j.id = t.id AND j.created_at = t.created_at AND j.created_at >= v_low
    RETURNING j.id, t.was = 'running' AS running, t.attempt
  LOOP
    IF r.running THEN
      PERFORM pg_notify('qmaint_cancel', r.id::text || '.' || r.attempt::text);
    END IF;
    job_id := r.id;
    was_running := r.running;
    RETURN NEXT;
  END LOOP;
END;
$$;
