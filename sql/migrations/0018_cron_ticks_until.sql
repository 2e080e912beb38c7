-- How far ahead each recurring job's ticks were computed. A refill (qmaint
-- cron add, cron refill, schedule install, the daemon before each recurring
-- run) stores the ticks up to some horizon and records it here, so the
-- cron_ticks health check can tell "ticks computed for the next days, none of
-- them due yet" (a monthly schedule, say) from "nobody refilled: after the
-- last stored tick nothing more will be enqueued". NULL: no refill has
-- recorded one yet (schedules from before this migration); the check then
-- falls back to the last stored tick. Nullable without a default: metadata
-- only.
ALTER TABLE qmaint.cron_schedules ADD COLUMN ticks_until timestamptz;
