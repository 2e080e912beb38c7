-- qmaint recurring jobs: enqueue the due ticks of qmaint.cron_schedules.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function").
--
-- Where ticks come from: TypeScript computes them with the cron library
-- (croner), in each definition's time zone, some days ahead, into
-- qmaint.cron_ticks (src/cron/index.ts). This file only consumes them, so the
-- daemon and pg_cron, which both run qmaint.run_task('recurring'), enqueue
-- exactly the same ticks, and no cron parser is written twice.

-- A due tick at most this old is current and always enqueued; an older one
-- was missed (the scheduler was down): the definition's `missed` decides.
CREATE OR REPLACE FUNCTION qmaint.cron_grace() RETURNS interval
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT interval '2 minutes' $$;

-- Enqueue one job for every due (tick <= p_now) pending tick of every
-- schedule, exactly once: each tick row is locked (SKIP LOCKED) and marked
-- in the same transaction as its job, so however many runs overlap, a tick
-- becomes one job. Current ticks (within cron_grace) are always enqueued;
-- of the missed ones, 'skip' enqueues none and 'backfill' the newest N.
-- Marked ticks older than 7 days are pruned. Returns {enqueued, missed}.
CREATE OR REPLACE FUNCTION qmaint.cron_enqueue_due(p_now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_s record;
  v_ticks timestamptz[];
  v_tick timestamptz;
  v_backfilled integer;
  v_id bigint;
  v_enqueued integer := 0;
  v_missed integer := 0;
BEGIN
  FOR v_s IN SELECT cs.name, cs.queue, cs.payload, cs.priority, cs.max_retries, cs.missed, cs.backfill
               FROM qmaint.cron_schedules cs ORDER BY cs.name LOOP
    SELECT array_agg(t.tick ORDER BY t.tick DESC) INTO v_ticks
      FROM (SELECT ct.tick FROM qmaint.cron_ticks ct
             WHERE ct.name = v_s.name AND ct.state = 'pending' AND ct.tick <= p_now
             ORDER BY ct.tick
               FOR UPDATE SKIP LOCKED) t;
    CONTINUE WHEN v_ticks IS NULL;
    v_backfilled := 0;
    FOREACH v_tick IN ARRAY v_ticks LOOP
      IF p_now - v_tick <= qmaint.cron_grace()
         OR (v_s.missed = 'backfill' AND v_backfilled < v_s.backfill) THEN
        IF p_now - v_tick > qmaint.cron_grace() THEN
          v_backfilled := v_backfilled + 1;
        END IF;
        v_id := qmaint.enqueue(v_s.queue, v_s.payload, NULL, v_s.priority, v_s.max_retries);
        UPDATE qmaint.cron_ticks ct SET state = 'enqueued', job_id = v_id, done_at = p_now
         WHERE ct.name = v_s.name AND ct.tick = v_tick;
        v_enqueued := v_enqueued + 1;
      ELSE
        UPDATE qmaint.cron_ticks ct SET state = 'missed', done_at = p_now
         WHERE ct.name = v_s.name AND ct.tick = v_tick;
        v_missed := v_missed + 1;
      END IF;
    END LOOP;
  END LOOP;
  DELETE FROM qmaint.cron_ticks ct WHERE ct.state <> 'pending' AND ct.tick < p_now - interval '7 days';
  RETURN jsonb_build_object('enqueued', v_enqueued, 'missed', v_missed);
END;
$$;
