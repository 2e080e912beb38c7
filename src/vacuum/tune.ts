import type { Db, PgClient, Queryable } from '../db.js';
import { withMaintenanceLock } from '../db.js';
import { badInput } from '../errors.js';
import { executeSteps, toPlanStep, type PlanStep, type PlanStepRow, type StepEvent, type StepResult } from '../plan.js';
import { validateVacuumProfiles } from './profile.js';

/** Churn measured for one managed parent and the hot thresholds derived from it. */
export interface ChurnMeasurement {
  parentTable: string;
  /** Updates + deletes per second (dead tuples made); null when not measurable yet. */
  deadPerSec: number | null;
  changesPerSec: number | null;
  windowStart: string | null;
  windowEnd: string | null;
  samples: number;
  naptimeSeconds: number;
  vacuumThreshold: number;
  analyzeThreshold: number;
  measured: boolean;
}

/** One partition: current reloptions against the ones tune gives it. */
export interface TuneTarget {
  parentTable: string;
  partition: string;
  state: string;
  profile: string;
  current: Record<string, number | boolean | string>;
  proposed: Record<string, number | boolean | string>;
  /** Parameters whose value differs (proposed null: reset to the server default). */
  changes: { parameter: string; current: number | boolean | string | null; proposed: number | boolean | string | null }[];
  frozen: boolean;
  freezeNeeded: boolean;
  relfrozenxidAge: number;
}

/** The measurements, targets and steps of a tune. */
export interface TunePlan {
  now: string;
  measurements: ChurnMeasurement[];
  targets: TuneTarget[];
  steps: PlanStep[];
}

/** Options of {@link planTune}. */
export interface PlanTuneOptions {
  now: Date;
  /** Counters read earlier (readCounters), used as an extra sample. */
  baseline?: unknown[] | null;
  /** The caller runs VACUUM (FREEZE) itself (the CLI); false for server-side plans. */
  clientVacuum?: boolean;
}

/** Refuse stored policies whose vacuum profiles PostgreSQL would reject (exit 2). */
export async function checkStoredProfiles(db: Queryable): Promise<void> {
  const { rows } = await db.query<{ parent_table: string; vacuum: unknown }>('SELECT parent_table, vacuum FROM qmaint.partition_policy ORDER BY parent_table');
  const problems = rows.flatMap((r) => validateVacuumProfiles(r.vacuum).map((p) => `${r.parent_table}: ${p}`));
  if (problems.length > 0) {
    throw badInput(`invalid vacuum profile in qmaint.partition_policy: ${problems.join('; ')}; fix the policy file and run qmaint partitions apply`, {
      problems,
    });
  }
}

/** The counters of every managed partition right now, as a baseline sample. */
export async function readCounters(db: Queryable, now: Date): Promise<unknown[]> {
  const { rows } = await db.query<{ doc: unknown[] }>(
    `SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) AS doc FROM qmaint.vacuum_counters($1::timestamptz) c`,
    [now.toISOString()],
  );
  return rows[0]?.doc ?? [];
}

/** The newest counters sample stored within the churn window (1 hour before now), or null. */
export async function latestStoredSample(db: Queryable, now: Date): Promise<string | null> {
  const { rows } = await db.query<{ at: Date | null }>(
    `SELECT max(sampled_at) AS at FROM qmaint.vacuum_samples WHERE sampled_at > $1::timestamptz - interval '1 hour' AND sampled_at < $1::timestamptz`,
    [now.toISOString()],
  );
  return rows[0]?.at ? rows[0].at.toISOString() : null;
}

/** Whether some managed parent has no churn measurement without a fresh baseline. */
export async function needsBaseline(db: Queryable, now: Date): Promise<boolean> {
  const { rows } = await db.query<{ missing: boolean }>('SELECT bool_or(NOT measured) AS missing FROM qmaint.vacuum_measure($1::timestamptz)', [
    now.toISOString(),
  ]);
  return rows[0]?.missing ?? false;
}

type OptionValue = number | boolean | string;

function changesBetween(current: Record<string, OptionValue>, proposed: Record<string, OptionValue>): TuneTarget['changes'] {
  const out: TuneTarget['changes'] = [];
  for (const [parameter, value] of Object.entries(proposed)) {
    if (current[parameter] !== value) out.push({ parameter, current: current[parameter] ?? null, proposed: value });
  }
  for (const [parameter, value] of Object.entries(current)) {
    if (parameter.startsWith('autovacuum_') && !(parameter in proposed)) out.push({ parameter, current: value, proposed: null });
  }
  return out.sort((a, b) => a.parameter.localeCompare(b.parameter));
}

/**
 * Measure churn, derive thresholds and plan the reloptions of every partition.
 * Changes nothing. One read-only transaction, so the measurement, the targets
 * and the steps all see the same statistics snapshot.
 */
export async function planTune(client: PgClient, options: PlanTuneOptions): Promise<TunePlan> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    return await readPlan(client, options);
  } finally {
    await client.query('COMMIT').catch(() => undefined);
  }
}

async function readPlan(db: Queryable, options: PlanTuneOptions): Promise<TunePlan> {
  const now = options.now.toISOString();
  const baseline = options.baseline ? JSON.stringify(options.baseline) : null;
  const clientVacuum = options.clientVacuum ?? true;
  const m = await db.query<{
    parent_table: string;
    dead_per_sec: number | null;
    changes_per_sec: number | null;
    window_start: Date | null;
    window_end: Date | null;
    samples: number;
    naptime_seconds: number;
    vacuum_threshold: number;
    analyze_threshold: number;
    measured: boolean;
  }>('SELECT * FROM qmaint.vacuum_measure($1::timestamptz, $2::jsonb)', [now, baseline]);
  const t = await db.query<{
    parent_table: string;
    partition: string;
    state: string;
    profile: string;
    current_options: Record<string, OptionValue>;
    target_options: Record<string, OptionValue>;
    frozen: boolean;
    freeze_needed: boolean;
    relfrozenxid_age: number;
  }>('SELECT * FROM qmaint.vacuum_targets($1::timestamptz, $2::jsonb, $3)', [now, baseline, clientVacuum]);
  const s = await db.query<PlanStepRow>('SELECT * FROM qmaint.vacuum_tune_steps($1::timestamptz, $2::jsonb, $3) ORDER BY seq', [now, baseline, clientVacuum]);
  return {
    now,
    measurements: m.rows.map((r) => ({
      parentTable: r.parent_table,
      deadPerSec: r.dead_per_sec,
      changesPerSec: r.changes_per_sec,
      windowStart: r.window_start?.toISOString() ?? null,
      windowEnd: r.window_end?.toISOString() ?? null,
      samples: r.samples,
      naptimeSeconds: r.naptime_seconds,
      vacuumThreshold: r.vacuum_threshold,
      analyzeThreshold: r.analyze_threshold,
      measured: r.measured,
    })),
    targets: t.rows.map((r) => ({
      parentTable: r.parent_table,
      partition: r.partition,
      state: r.state,
      profile: r.profile,
      current: r.current_options,
      proposed: r.target_options,
      changes: changesBetween(r.current_options, r.target_options),
      frozen: r.frozen,
      freezeNeeded: r.freeze_needed,
      relfrozenxidAge: r.relfrozenxid_age,
    })),
    steps: s.rows.map(toPlanStep),
  };
}

/** Options of {@link tune}. */
export interface TuneOptions {
  /** The time the tune acts for (usually `new Date()`). */
  now: Date;
  /** Return the plan and run nothing, taking no lock (default false). */
  dryRun?: boolean;
  /**
   * When a parent has no churn history yet: read the counters, wait this long,
   * and measure over that window (default 0: use the fallback thresholds).
   */
  sampleSeconds?: number;
  /** lock_timeout of each step (PostgreSQL interval text, e.g. '2s'). */
  lockTimeout: string;
  /** Default: qmaint.lock_retries(). */
  retries?: number;
  /** Called as each step starts, retries and ends. */
  onEvent?: (event: StepEvent) => void;
  /** Called before waiting `sampleSeconds` for a first churn sample: how long the wait will be. */
  onWait?: (seconds: number) => void;
  /** Called about four times a second while sampling, and once at its end. */
  onWaitProgress?: (elapsedMs: number, totalMs: number) => void;
  /** Called instead of waiting when every parent is measured from stored samples: the newest one's time (null: none in the window). */
  onStoredSample?: (sampledAt: string | null) => void;
}

/** What {@link tune} did: the plan and the executed steps; or `ran: false` when another run held the maintenance lock. */
export type TuneResult =
  | { ran: true; plan: TunePlan; executed: StepResult[] }
  | { ran: false; plan: null; holder: { pid: number; applicationName: string | null; since: string | null } | null };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitReporting(totalMs: number, report?: (elapsedMs: number, totalMs: number) => void): Promise<void> {
  const start = Date.now();
  for (let elapsed = 0; elapsed < totalMs; elapsed = Date.now() - start) {
    report?.(elapsed, totalMs);
    await sleep(Math.min(250, totalMs - elapsed));
  }
  report?.(totalMs, totalMs);
}

/**
 * The client-side tune: under the session maintenance lock, measure, plan and
 * run the plan (freezing newly drained partitions with VACUUM (FREEZE)). With
 * dryRun the plan is returned and nothing is run (no lock is taken either).
 *
 * @param db - the database (a direct connection: it takes the session maintenance lock)
 * @param options - see {@link TuneOptions}
 * @returns the plan and the executed steps; `ran: false` when another maintenance run holds the lock
 * @throws {@link QmaintError} `bad_input` when a stored policy's profile is one PostgreSQL would refuse; `config` through a transaction pooler (use {@link tuneServerSide}); `lock_timeout` with {@link GaveUpDetails} when a step gave up
 */
export async function tune(db: Db, options: TuneOptions): Promise<TuneResult> {
  await checkStoredProfiles(db);
  let now = options.now;
  let baseline: unknown[] | null = null;
  const wait = options.sampleSeconds ?? 0;
  if (wait > 0 && (await needsBaseline(db, now))) {
    baseline = await readCounters(db, now);
    options.onWait?.(wait);
    await waitReporting(wait * 1000, options.onWaitProgress);
    now = new Date(now.getTime() + wait * 1000);
  } else if (options.onStoredSample) {
    options.onStoredSample(await latestStoredSample(db, now));
  }
  if (options.dryRun) {
    const plan = await db.withClient((client) => planTune(client, { now, baseline, clientVacuum: true }));
    return { ran: true, plan, executed: [] };
  }
  return db.withClient(async (client) => {
    const locked = await withMaintenanceLock(client, async () => {
      const plan = await planTune(client, { now, baseline, clientVacuum: true });
      const executed = await executeSteps(client, plan.steps, { lockTimeout: options.lockTimeout, retries: options.retries, onEvent: options.onEvent });
      return { plan, executed };
    });
    if (!locked.ran) return { ran: false, plan: null, holder: locked.holder };
    return { ran: true, ...locked.result };
  });
}

/**
 * The server-side tune in one transaction (what pg_cron runs; safe through PgBouncer).
 *
 * @param db - a Db, a pool or a client of your own
 * @param now - the time the tune acts for
 * @returns qmaint.vacuum_tune_all()'s report: per step its outcome, including the steps that gave up
 */
export async function tuneServerSide(db: Queryable, now: Date): Promise<Record<string, unknown>> {
  await checkStoredProfiles(db);
  const { rows } = await db.query<{ result: Record<string, unknown> }>('SELECT qmaint.vacuum_tune_all($1::timestamptz) AS result', [now.toISOString()]);
  return rows[0]?.result ?? {};
}
