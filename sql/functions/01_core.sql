-- qmaint core helpers: the maintenance lock key, partition interval checks,
-- partition bounds and names, and reloptions rendering.
-- Re-applied by `qmaint migrate` whenever this file's checksum changes (see
-- docs/architecture.md, "How to change a SQL function"). CREATE OR REPLACE
-- only: a changed signature or return type is dropped by a migration first.

-- The key of the one advisory lock that serialises all maintenance. The
-- TypeScript side uses the same number (MAINTENANCE_LOCK_KEY in src/db.ts).
CREATE OR REPLACE FUNCTION qmaint.maintenance_lock_key() RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT 7170514283201::bigint $$;

-- Is this interval exactly one calendar month? Compared field by field:
-- PostgreSQL's interval equality treats '30 days' and '720 hours' as equal to
-- '1 month', and those are fixed-length 30-day intervals here.
CREATE OR REPLACE FUNCTION qmaint.is_month(p_interval interval) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT extract(year FROM p_interval) * 12 + extract(month FROM p_interval) = 1
     AND extract(day FROM p_interval) = 0
     AND extract(epoch FROM p_interval) = extract(epoch FROM interval '1 month')
$$;

-- Check that an interval is one qmaint can partition by (1 minute .. 1 month,
-- either exactly one calendar month or a fixed length with no month part;
-- '30 days' is a fixed length).
CREATE OR REPLACE FUNCTION qmaint.check_partition_interval(p_interval interval) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN p_interval IS NULL THEN 'interval is missing'
    WHEN qmaint.is_month(p_interval) THEN NULL
    WHEN extract(month FROM p_interval) + 12 * extract(year FROM p_interval) <> 0
      THEN 'interval must be at most 1 month, and a month interval must be exactly 1 month'
    WHEN p_interval < interval '1 minute' THEN 'interval must be at least 1 minute'
    WHEN p_interval > interval '31 days' THEN 'interval must be at most 1 month'
    ELSE NULL
  END
$$;

-- Start of the interval-aligned slot holding ts (UTC, anchored at 2000-01-01;
-- calendar months for exactly '1 month').
CREATE OR REPLACE FUNCTION qmaint.partition_floor(p_ts timestamptz, p_interval interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN qmaint.is_month(p_interval)
              THEN date_trunc('month', p_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              ELSE date_bin(p_interval, p_ts, timestamptz '2000-01-01 00:00:00+00') END
$$;

-- Name for a new partition: parent name + UTC start, minutes shown when the
-- slot does not start at midnight or is shorter than a day.
CREATE OR REPLACE FUNCTION qmaint.partition_name(p_parent_name text, p_from timestamptz, p_to timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT left(p_parent_name, 40) || '_p' ||
         CASE WHEN p_to - p_from >= interval '1 day'
                   AND (p_from AT TIME ZONE 'UTC')::time = time '00:00'
              THEN to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD')
              ELSE to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI') END
$$;

-- Reloptions text for a vacuum profile held in a policy ({"autovacuum_...": value}).
-- Names and values are checked before they are put into DDL.
CREATE OR REPLACE FUNCTION qmaint.reloptions_sql(p_profile jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  k text;
  v jsonb;
  parts text[] := '{}'::text[];
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

-- pg_class.reloptions as a JSON object (numbers and booleans typed): the one
-- parser of reloptions text, for status output and for profile comparisons.
CREATE OR REPLACE FUNCTION qmaint.reloptions_json(p_reloptions text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(jsonb_object_agg(k, CASE
           WHEN v ~ '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN to_jsonb(v::numeric)
           WHEN lower(v) IN ('true', 'on', 'yes') THEN 'true'::jsonb
           WHEN lower(v) IN ('false', 'off', 'no') THEN 'false'::jsonb
           ELSE to_jsonb(v) END ORDER BY k), '{}'::jsonb)
    FROM unnest(p_reloptions) o
    CROSS JOIN LATERAL (SELECT split_part(o, '=', 1) AS k, substr(o, strpos(o, '=') + 1) AS v) kv
$$;
