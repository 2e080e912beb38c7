-- Which node ran each maintenance run. After a failover pg_cron (and the
-- daemon's leader) run on the promoted standby; `qmaint schedule list` shows
-- the node of each run, so runs on the old and the new primary are told apart.
-- The column is filled by its default, whoever inserts the row (run_task for
-- pg_cron and the daemon, the CLI's own rotate); rows from before stay NULL.
-- qmaint.node_name() is created here because the default needs it now; its
-- definition lives in sql/functions/06_schedule.sql, which replaces this one
-- in the same migrate.
CREATE FUNCTION qmaint.node_name() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT NULL::text $$;

ALTER TABLE qmaint.maintenance_runs ADD COLUMN node text;
ALTER TABLE qmaint.maintenance_runs ALTER COLUMN node SET DEFAULT qmaint.node_name();
