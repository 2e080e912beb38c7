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
     OR sha256(convert_to(p_statement, 'UTF8')) <> '\x21bca1d50693639443592d2a90d3f0e3aafb5e4d46565c4cb20978f7a8be1d63'::bytea THEN
    RAISE EXCEPTION 'qmaint.explain_claim explains only the claim statement of this qmaint version'
      USING ERRCODE = '42501', HINT = 'run qmaint migrate with the qmaint version the caller runs';
  END IF;
  EXECUTE 'EXPLAIN (FORMAT JSON, SUMMARY) ' || p_statement INTO v_plan
    USING p_queue, coalesce(p_low_water, '-infinity'), p_batch, p_worker, p_lease_seconds, NULL::integer, NULL::timestamptz, NULL::bigint;
  RETURN v_plan;
END;
$$;
REVOKE ALL ON FUNCTION qmaint.explain_claim(text, text, timestamptz, integer, text, double precision) FROM PUBLIC;

-- Key of the transaction advisory lock that lets one rescuer run at a time.
CREATE OR REPLACE FUNCTION qmaint.rescue_lock_key() RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 7170514283202::bigint $$;

-- Put jobs whose lease ran out back in the queue (retry_count + 1, backoff
-- run_at), or fail them when their retries are spent, keeping last_error.
-- One rescuer at a time: a concurrent call returns {"skipped": true}.
-- Also heals the low-water mark if a live job sits below it.
CREATE OR REPLACE FUNCTION qmaint.rescue_expired(p_now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_requeued bigint;
  v_failed bigint;
  v_low timestamptz;
  v_below timestamptz;
BEGIN
  IF NOT pg_try_advisory_xact_lock(qmaint.rescue_lock_key()) THEN
    RETURN jsonb_build_object('skipped', true);
  END IF;
  WITH expired AS (
    SELECT id, created_at FROM qmaint.jobs
     WHERE status = 'running' AND locked_until < p_now
       FOR UPDATE SKIP LOCKED
  ), moved AS (
    UPDATE qmaint.jobs j
       SET (status, retry_count, run_at) = (SELECT n.status, n.retry_count, n.run_at
                                              FROM qmaint.queue_backoff(j.queue) b,
                                                   qmaint.next_try(j.retry_count, j.max_retries, j.run_at, p_now, b.base, b.cap) n),
           last_error = coalesce(j.last_error, format('lease of attempt %s held by %s expired at %s', j.attempt, j.locked_by, j.locked_until)),
           locked_by = NULL,
           locked_until = NULL,
           updated_at = p_now
      FROM expired e
     WHERE j.id = e.id AND j.created_at = e.created_at
    RETURNING j.status
  )
  SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'failed')
    INTO v_requeued, v_failed FROM moved;

  SELECT low_water INTO v_low FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs';
  IF v_low IS NOT NULL AND v_low > '-infinity' THEN
    -- Each arm matches a partial index, so partitions below the mark are not scanned.
    SELECT least((SELECT min(created_at) FROM qmaint.jobs WHERE status = 'queued' AND created_at < v_low),
                 (SELECT min(created_at) FROM qmaint.jobs WHERE status = 'running' AND created_at < v_low))
      INTO v_below;
    IF v_below IS NOT NULL THEN
      PERFORM qmaint.lower_low_water(v_below);
    END IF;
  END IF;
  RETURN jsonb_build_object('requeued', v_requeued, 'failed', v_failed);
END;
$$;

-- Put failed jobs back in the queue: retry_count 0, ready at p_now, last_error
-- kept for the record. Selected by ids, or by queue (all failed of it), or
-- both. Lowers the low-water mark in the same transaction when an old job
-- comes back to life. Returns the ids put back.
CREATE OR REPLACE FUNCTION qmaint.retry_jobs(p_ids bigint[] DEFAULT NULL, p_queue text DEFAULT NULL, p_now timestamptz DEFAULT now())
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
    RAISE EXCEPTION 'name the jobs to retry (ids or a queue)' USING ERRCODE = '22023';
  END IF;
  WITH back AS (
    UPDATE qmaint.jobs
       SET status = 'queued', retry_count = 0, run_at = date_trunc('milliseconds', p_now), locked_by = NULL, locked_until = NULL, updated_at = p_now
     WHERE status = 'failed'
       AND (p_ids IS NULL OR id = ANY (p_ids))
       AND (p_queue IS NULL OR queue = p_queue)
    RETURNING id, created_at, queue
  )
  SELECT array_agg(id ORDER BY id), min(created_at), array_agg(DISTINCT queue) INTO v_ids, v_min, v_queues FROM back;
  IF v_min IS NOT NULL THEN
    PERFORM qmaint.lower_low_water(v_min);
    PERFORM pg_notify('qmaint_jobs', q) FROM unnest(v_queues) AS q;
  END IF;
  RETURN QUERY SELECT unnest(coalesce(v_ids, '{}'));
END;
$$;

-- Cancel queued jobs: they end `failed` with last_error saying so (a running
-- job belongs to its consumer and is left alone). Returns the ids cancelled.
CREATE OR REPLACE FUNCTION qmaint.cancel_jobs(p_ids bigint[] DEFAULT NULL, p_queue text DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_ids IS NULL AND p_queue IS NULL THEN
    RAISE EXCEPTION 'name the jobs to cancel (ids or a queue)' USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  UPDATE qmaint.jobs
     SET status = 'failed', last_error = format('cancelled at %s', p_now), updated_at = p_now
   WHERE status = 'queued'
     AND (p_ids IS NULL OR id = ANY (p_ids))
     AND (p_queue IS NULL OR queue = p_queue)
  RETURNING id;
END;
$$;
