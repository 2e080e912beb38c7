/**
 * Recurring jobs (`qmaint cron`): definitions in qmaint.cron_schedules, their
 * ticks computed here with croner in each definition's time zone and stored
 * ahead in qmaint.cron_ticks; qmaint.cron_enqueue_due() (the `recurring`
 * maintenance task, run by the daemon or pg_cron) turns each due tick into
 * exactly one job. Computing ticks in one place (here) is what makes both
 * schedulers agree; see docs/queue.md "Recurring jobs".
 */
import { Cron } from 'croner';
import { createRequire } from 'node:module';
import type Cronstrue from 'cronstrue';
import type { Queryable } from '../db.js';
import { badInput } from '../errors.js';
import { JsonText } from '../json.js';
import { checkOptions, checkQueueName } from '../queue/enqueue.js';

/** How far ahead ticks are stored (pg_cron alone enqueues only stored ticks). */
export const HORIZON_DAYS = 7;
/** At most this many ticks are computed per schedule and refill. */
export const MAX_TICKS = 20_000;
/** How far back a refill looks for ticks a long downtime left uncomputed. */
export const CATCH_UP_HOURS = 24;

/**
 * What happens to ticks missed while nothing ran: `skip` them, or `backfill` up
 * to `count` of them (each enqueued once, oldest first).
 */
export type Missed = { mode: 'skip' } | { mode: 'backfill'; count: number };

/** A recurring job: its name, cron expression, time zone, target queue and job fields. */
export interface CronDefinition {
  name: string;
  /** Five fields (minute hour day month weekday), or a nickname such as @hourly. */
  schedule: string;
  queue: string;
  /** Any JSON value (default {}). */
  payload?: unknown;
  /** IANA time zone the expression is read in (default UTC). */
  tz?: string;
  priority?: number;
  maxRetries?: number;
  missed?: Missed;
}

export function checkCronName(name: unknown): string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(name)) {
    throw badInput(`cron name ${JSON.stringify(name)} is not valid; use 1 to 128 letters, digits, _ . : or -, starting with a letter or digit`);
  }
  return name;
}

export function checkTimeZone(tz: string): string {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw badInput(`time zone ${JSON.stringify(tz)} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)`);
  }
  return tz;
}

/** "skip" or "backfill:N" (N from 1 to 10000). */
export function parseMissed(text: string): Missed {
  if (text === 'skip') return { mode: 'skip' };
  const m = /^backfill:([1-9][0-9]{0,4})$/.exec(text);
  if (m && Number(m[1]) <= 10_000) return { mode: 'backfill', count: Number(m[1]) };
  throw badInput(`missed policy ${JSON.stringify(text)} is not skip or backfill:N (N from 1 to 10000)`);
}

export function missedText(m: Missed): string {
  return m.mode === 'skip' ? 'skip' : `backfill:${m.count}`;
}

/** A paused croner job for the expression in the zone; bad input when croner refuses it. */
function cronOf(schedule: string, tz: string): Cron {
  const trimmed = schedule.trim();
  if (!trimmed.startsWith('@') && trimmed.split(/\s+/).length !== 5) {
    throw badInput(`schedule ${JSON.stringify(schedule)} must have 5 fields (minute hour day month weekday) or be a nickname such as @hourly`);
  }
  try {
    return new Cron(trimmed, { timezone: tz, paused: true });
  } catch (err) {
    throw badInput(`schedule ${JSON.stringify(schedule)} is not a cron expression (${(err as Error).message})`);
  }
}

/** The ticks after `from` up to and including `to` (at most `max`). */
export function ticksBetween(schedule: string, tz: string, from: Date, to: Date, max = MAX_TICKS): Date[] {
  const cron = cronOf(schedule, tz);
  const out: Date[] = [];
  for (let t = cron.nextRun(from); t && t.getTime() <= to.getTime() && out.length < max; t = cron.nextRun(t)) out.push(t);
  return out;
}

/** The next `n` ticks after `from`. */
export function nextTicks(schedule: string, tz: string, from: Date, n: number): Date[] {
  return cronOf(schedule, tz).nextRuns(n, from);
}

let cronstrue: typeof Cronstrue | undefined;

/** A human reading of the expression ("At 02:30 AM", "Every 5 minutes"). */
export function describeSchedule(schedule: string): string {
  // Loaded on first use: about 60 ms of start-up that only the commands describing a schedule need.
  cronstrue ??= createRequire(import.meta.url)('cronstrue') as typeof Cronstrue;
  try {
    return cronstrue.toString(schedule.trim(), { use24HourTimeFormat: true, verbose: false });
  } catch {
    return schedule;
  }
}

export interface CronStatement {
  text: string;
  values: (string | number | null)[];
  reason: string;
}

/** Check a definition; returns the upsert the library runs (what --dry-run prints). */
export function cronAddStatement(def: CronDefinition): CronStatement {
  checkCronName(def.name);
  checkQueueName(def.queue);
  const tz = checkTimeZone(def.tz ?? 'UTC');
  cronOf(def.schedule, tz);
  checkOptions({ priority: def.priority, maxRetries: def.maxRetries });
  const payload = def.payload instanceof JsonText ? def.payload.text : JSON.stringify(def.payload ?? {});
  const missed = def.missed ?? { mode: 'skip' };
  return {
    text: `INSERT INTO qmaint.cron_schedules AS c (name, expression, tz, queue, payload, priority, max_retries, missed, backfill)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9)
ON CONFLICT (name) DO UPDATE SET expression = EXCLUDED.expression, tz = EXCLUDED.tz, queue = EXCLUDED.queue, payload = EXCLUDED.payload,
  priority = EXCLUDED.priority, max_retries = EXCLUDED.max_retries, missed = EXCLUDED.missed, backfill = EXCLUDED.backfill, updated_at = now()
RETURNING (xmax = 0) AS created`,
    values: [
      def.name,
      def.schedule.trim(),
      tz,
      def.queue,
      payload,
      def.priority ?? 0,
      def.maxRetries ?? 5,
      missed.mode,
      missed.mode === 'backfill' ? missed.count : 0,
    ],
    reason: `recurring job ${def.name}: ${describeSchedule(def.schedule)} (${tz}) on queue ${def.queue}, missed ticks: ${missedText(missed)}`,
  };
}

/**
 * Add (or replace) a recurring job and store its ticks for the next
 * HORIZON_DAYS. A replaced definition's pending future ticks are recomputed.
 */
export async function cronAdd(db: Queryable, def: CronDefinition, now: Date): Promise<{ name: string; created: boolean; next: Date[] }> {
  const st = cronAddStatement(def);
  const { rows } = await db.query<{ created: boolean }>(st.text, st.values);
  const created = rows[0]!.created;
  if (!created) await db.query(`DELETE FROM qmaint.cron_ticks WHERE name = $1 AND state = 'pending' AND tick > $2`, [def.name, now]);
  await refillTicks(db, now, [def.name]);
  return { name: def.name, created, next: nextTicks(def.schedule, def.tz ?? 'UTC', now, 3) };
}

/** Remove a recurring job and its ticks. Returns whether it existed. */
export async function cronRemove(db: Queryable, name: string): Promise<boolean> {
  checkCronName(name);
  const { rowCount } = await db.query('DELETE FROM qmaint.cron_schedules WHERE name = $1', [name]);
  return (rowCount ?? 0) > 0;
}

/**
 * Store the ticks of every schedule (or of `names`) up to now + HORIZON_DAYS,
 * from its last stored tick on (so ticks a downtime left due are stored and
 * the missed policy applies to them), looking back at most CATCH_UP_HOURS;
 * a new schedule starts at now. Records the horizon in
 * cron_schedules.ticks_until (never moved back), which the cron_ticks health
 * check reads. Idempotent. Returns the ticks added.
 */
export async function refillTicks(db: Queryable, now: Date, names?: string[]): Promise<number> {
  const { rows } = await db.query<{ name: string; expression: string; tz: string; last: Date | null }>(
    `SELECT c.name, c.expression, c.tz, (SELECT max(t.tick) FROM qmaint.cron_ticks t WHERE t.name = c.name) AS last
       FROM qmaint.cron_schedules c WHERE $1::text[] IS NULL OR c.name = ANY ($1)`,
    [names ?? null],
  );
  const until = new Date(now.getTime() + HORIZON_DAYS * 86_400_000);
  const floor = new Date(now.getTime() - CATCH_UP_HOURS * 3_600_000);
  let added = 0;
  for (const r of rows) {
    const from = r.last === null ? now : new Date(Math.max(r.last.getTime(), floor.getTime()));
    const ticks = ticksBetween(r.expression, r.tz, from, until);
    if (ticks.length === 0) continue;
    const res = await db.query(`INSERT INTO qmaint.cron_ticks (name, tick) SELECT $1, unnest($2::timestamptz[]) ON CONFLICT DO NOTHING`, [r.name, ticks]);
    added += res.rowCount ?? 0;
  }
  // Also for a schedule with no tick before the horizon (a monthly one): it was computed that far.
  if (rows.length > 0)
    await db.query(`UPDATE qmaint.cron_schedules SET ticks_until = greatest(ticks_until, $1) WHERE name = ANY ($2)`, [until, rows.map((r) => r.name)]);
  return added;
}

/** A recurring job as `cronList` reports it, with its next run times and a human reading of the expression. */
export interface CronInfo {
  name: string;
  schedule: string;
  /** The expression read out ("At 02:30"). */
  description: string;
  tz: string;
  queue: string;
  payload: JsonText;
  priority: number;
  maxRetries: number;
  missed: string;
  /** The next runs (ISO), computed from the expression. */
  next: string[];
  /** Last tick enqueued (ISO), if any. */
  lastEnqueued: string | null;
  /** Ticks are stored up to here (ISO): pg_cron alone enqueues nothing after it. */
  storedUntil: string | null;
}

/** Every recurring job with its next `n` runs and a human reading. */
export async function cronList(db: Queryable, now: Date, n = 3): Promise<CronInfo[]> {
  const { rows } = await db.query<{
    name: string;
    expression: string;
    tz: string;
    queue: string;
    payload: string;
    priority: number;
    max_retries: number;
    missed: string;
    backfill: number;
    last: Date | null;
    until: Date | null;
  }>(
    `SELECT c.name, c.expression, c.tz, c.queue, c.payload::text AS payload, c.priority, c.max_retries, c.missed, c.backfill,
            (SELECT max(t.tick) FROM qmaint.cron_ticks t WHERE t.name = c.name AND t.state = 'enqueued') AS last,
            (SELECT max(t.tick) FROM qmaint.cron_ticks t WHERE t.name = c.name) AS until
       FROM qmaint.cron_schedules c ORDER BY c.name`,
  );
  return rows.map((r) => ({
    name: r.name,
    schedule: r.expression,
    description: describeSchedule(r.expression),
    tz: r.tz,
    queue: r.queue,
    payload: JsonText.trusted(r.payload),
    priority: r.priority,
    maxRetries: r.max_retries,
    missed: r.missed === 'skip' ? 'skip' : `backfill:${r.backfill}`,
    next: nextTicks(r.expression, r.tz, now, n).map((d) => d.toISOString()),
    lastEnqueued: r.last ? r.last.toISOString() : null,
    storedUntil: r.until ? r.until.toISOString() : null,
  }));
}

/** Run the due ticks now (what the recurring task does): {enqueued, missed}. */
export async function cronEnqueueDue(db: Queryable, now?: Date): Promise<{ enqueued: number; missed: number }> {
  const { rows } = await db.query<{ r: { enqueued: number; missed: number } }>(
    now ? 'SELECT qmaint.cron_enqueue_due($1) AS r' : 'SELECT qmaint.cron_enqueue_due() AS r',
    now ? [now] : [],
  );
  return rows[0]!.r;
}
