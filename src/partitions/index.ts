import { redactDeep, redactSecrets } from '../config.js';
import type { Db, Queryable } from '../db.js';
import { badOption, QmaintError } from '../errors.js';
import type { PlanStep } from '../plan.js';
import { policyTables } from './policy.js';
import { previewPlans, runPlans, type PlanRequest, type RunOptions, type RunResult } from './runner.js';

export { applyPolicies, checkPolicyShape, loadPolicies, policyPaths, PACKAGED_POLICIES } from './policy.js';
export type { ApplyResult, PolicyColumns, PolicyDocument, PolicyFile } from './policy.js';
export { runPlans, previewPlans } from './runner.js';
export { isPooled } from '../db.js';
export type { PlanRequest, RunOptions, RunResult, TableRun } from './runner.js';
export type { StepEvent, StepResult } from '../plan.js';

/**
 * The partition lifecycle as a library: what `qmaint partitions ...` and the
 * schedule daemon call. Every function takes `now` (time travel for tests and
 * planning); the SQL functions in 0003_partitions.sql do the work.
 */

export interface PartitionInfo {
  table: string;
  name: string;
  from: string | null;
  to: string | null;
  isDefault: boolean;
  /** future | hot | warm (past, holds live jobs) | drained */
  state: string;
  /** hot | warm | cold */
  profile: string;
  liveJobs: number;
  estimatedRows: number;
  /** Size with indexes and TOAST: exact from the low-water mark on (and for a default partition), estimated from the catalog below it (see `bytesEstimated`). */
  bytes: number;
  /** `bytes` is the catalog's page count as of the partition's last VACUUM or ANALYZE (drained history below the low-water mark), not a measure of its files now. */
  bytesEstimated: boolean;
  /** Wholly before the retention cut-off. */
  expired: boolean;
  /** A DETACH ... CONCURRENTLY was interrupted; rotate finalizes it. */
  detachPending: boolean;
  /** Carries the retirement guard (being retired). */
  retiring: boolean;
}

/** A managed table with its partitions ({@link listPartitions}). */
export interface TableSummary {
  table: string;
  interval: string;
  retention: string;
  lowWater: string | null;
  /** Partitions wholly after the hot one. */
  runway: number;
  runwayTarget: number;
  partitions: PartitionInfo[];
}

/** node-pg gives a Date, or ±Infinity for PostgreSQL's infinite timestamps. */
function iso(d: Date | number | null): string | null {
  if (d === null) return null;
  if (typeof d === 'number') return d > 0 ? 'infinity' : '-infinity';
  return d.toISOString();
}

/** Options of {@link listPartitions}. */
export interface ListPartitionsOptions {
  /** The time states are judged at (usually `new Date()`). */
  now: Date;
  /** Only this managed table, `schema.table` (default: every table with a policy). */
  table?: string;
}

/**
 * Every partition of every managed table (or one) with its state at `now`.
 *
 * @param db - a Db, a pool or a client of your own
 * @param options - see {@link ListPartitionsOptions}
 * @throws {@link QmaintError} `bad_input` when `table` has no policy
 */
export async function listPartitions(db: Queryable, options: ListPartitionsOptions): Promise<TableSummary[]> {
  const tables = await policyTables(db, options.table);
  const out: TableSummary[] = [];
  for (const table of tables) {
    const head = await db.query<{ interval: string; retention: string; low_water: Date | number | null; target: number | null; problem: string | null }>(
      `SELECT partition_interval::text AS interval, retention::text AS retention, low_water,
              qmaint.runway_target(parent_table, $2) AS target, qmaint.check_managed_table(parent_table) AS problem
         FROM qmaint.partition_policy WHERE parent_table = $1`,
      [table, options.now],
    );
    const h = head.rows[0]!;
    if (h.problem) throw new QmaintError('config', `${h.problem}; fix the table or its policy (qmaint partitions apply)`);
    const { rows } = await db.query<{
      name: string;
      lower_bound: Date | number;
      upper_bound: Date | number;
      is_default: boolean;
      state: string;
      profile: string;
      live_jobs: string;
      est: string;
      bytes: string;
      bytes_estimated: boolean;
      expired: boolean;
      pending: boolean;
      retiring: boolean;
    }>(
      `SELECT s.partition::text AS name, s.lower_bound, s.upper_bound, s.is_default, s.state, s.profile, s.live_jobs,
              (CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE pg_stat_get_live_tuples(c.oid) END)::bigint AS est,
              -- Exact sizes open every relation (a cold cache on each new connection, seconds at 1,000
              -- partitions): exact for the default partition and from the low-water mark on, where rows
              -- still change; below it, from the catalog (pages as of the last VACUUM or ANALYZE).
              CASE WHEN s.is_default OR s.upper_bound > coalesce(pol.low_water, '-infinity') THEN pg_total_relation_size(s.partition)
                   ELSE (c.relpages + coalesce((SELECT t.relpages FROM pg_class t WHERE t.oid = c.reltoastrelid), 0)
                         + coalesce((SELECT sum(ic.relpages) FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid), 0))
                        * current_setting('block_size')::bigint END AS bytes,
              NOT (s.is_default OR s.upper_bound > coalesce(pol.low_water, '-infinity')) AS bytes_estimated,
              NOT s.is_default AND s.upper_bound <= $2::timestamptz - pol.retention AS expired,
              coalesce(i.inhdetachpending, false) AS pending,
              EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = s.partition AND t.tgname = 'qmaint_retire') AS retiring
         FROM qmaint.partition_states(to_regclass($1), $2) s
         JOIN qmaint.partition_policy pol ON pol.parent_table = $1
         JOIN pg_class c ON c.oid = s.partition
         LEFT JOIN pg_inherits i ON i.inhrelid = s.partition
        ORDER BY s.is_default DESC, s.lower_bound`,
      [table, options.now],
    );
    const partitions = rows.map((r) => ({
      table,
      name: r.name,
      from: r.is_default ? null : iso(r.lower_bound),
      to: r.is_default ? null : iso(r.upper_bound),
      isDefault: r.is_default,
      state: r.state,
      profile: r.profile,
      liveJobs: Number(r.live_jobs),
      estimatedRows: Number(r.est),
      bytes: Number(r.bytes),
      bytesEstimated: r.bytes_estimated,
      expired: r.expired,
      detachPending: r.pending,
      retiring: r.retiring,
    }));
    out.push({
      table,
      interval: h.interval,
      retention: h.retention,
      lowWater: iso(h.low_water),
      runway: partitions.filter((p) => p.state === 'future').length,
      runwayTarget: h.target ?? 0,
      partitions,
    });
  }
  return out;
}

/** Options of the partition maintenance functions (rotate, detach, drop, compact). */
export interface MaintainOptions extends RunOptions {
  /** The time the maintenance acts for (usually `new Date()`). */
  now: Date;
  /** Only this managed table (default: all with a policy). */
  table?: string;
}

/** A dry run's plans: the steps each table would run, on this kind of connection. */
export interface Preview {
  pooled: boolean;
  tables: { table: string | null; steps: PlanStep[] }[];
}

function rotateRequests(tables: string[], now: Date): PlanRequest[] {
  return tables.map((table) => ({ table, call: 'qmaint.rotate_plan($1, $2, $3)', values: [table, now], concurrentArg: true }));
}

/**
 * The ordered DDL rotate would run now, each with its lock level and reason.
 *
 * Changes nothing and takes no lock.
 *
 * @param db - the database
 * @param options - `now`, and optionally one `table`
 * @throws {@link QmaintError} `bad_input` when `table` has no policy
 */
export async function planRotate(db: Db, options: MaintainOptions): Promise<Preview> {
  return previewPlans(db, rotateRequests(await policyTables(db, options.table), options.now), options);
}

/**
 * Rotate: make the runway, re-profile, move stragglers, advance the low-water
 * mark, retire expired drained partitions. Recorded in qmaint.maintenance_runs
 * (runner "cli").
 *
 * @param db - the database; a direct connection runs the steps one by one under the session maintenance lock, a transaction pooler in one transaction (see {@link RunOptions})
 * @param options - see {@link MaintainOptions}
 * @returns what ran, per table; `ran: false` when another maintenance run holds the lock
 * @throws {@link QmaintError} `lock_timeout` with {@link GaveUpDetails} when a step gave up waiting for its locks after its retries; `bad_input` when `table` has no policy
 */
export async function rotate(db: Db, options: MaintainOptions): Promise<RunResult> {
  const requests = rotateRequests(await policyTables(db, options.table), options.now);
  const { rows } = await db.query<{ id: string }>(`INSERT INTO qmaint.maintenance_runs (task, runner) VALUES ('rotate', 'cli') RETURNING id`);
  const id = rows[0]!.id;
  const finish = (status: string, message: string, details: unknown) =>
    db
      .query(`UPDATE qmaint.maintenance_runs SET finished_at = clock_timestamp(), status = $2, message = $3, details = $4 WHERE id = $1`, [
        id,
        status,
        redactSecrets(message).slice(0, 1000),
        JSON.stringify(redactDeep(details)),
      ])
      .catch(() => undefined);
  try {
    const result = await runPlans(db, requests, options);
    if (!result.ran) await finish('skipped', result.message, { holder: result.holder });
    else await finish('ok', summarize(result), { tables: result.tables.map((t) => ({ table: t.table, done: t.done, skipped: t.skipped })) });
    return result;
  } catch (err) {
    const e = err instanceof QmaintError ? err : null;
    await finish(e?.code === 'lock_timeout' ? 'lock_timeout' : 'failed', (err as Error).message, e?.details ?? null);
    throw err;
  }
}

/** "qmaint.jobs: 2 create, 1 detach" */
export function summarize(result: RunResult): string {
  if (!result.ran) return result.message;
  return result.tables
    .map((t) => {
      const counts = new Map<string, number>();
      for (const d of t.done) counts.set(d.action, (counts.get(d.action) ?? 0) + 1);
      const parts = [...counts].map(([a, n]) => `${n} ${a}`);
      if (t.skipped.length > 0) parts.push(`${t.skipped.length} skipped`);
      return `${t.table ?? 'partitions'}: ${parts.join(', ') || 'nothing to do'}`;
    })
    .join('; ');
}

async function singleTable(db: Db, table: string | undefined): Promise<string> {
  const tables = await policyTables(db, table);
  if (tables.length !== 1) throw badOption('table', `${tables.length} tables have a partition policy (${tables.join(', ')}); name one with the table option`);
  return tables[0]!;
}

/** Options of {@link createUntil}. */
export interface CreateOptions extends MaintainOptions {
  /** Create through the partition holding this time. */
  until: Date;
  /** Refuse to make more partitions than this (default 1000). */
  max?: number;
}

function createRequest(table: string, options: CreateOptions): PlanRequest {
  return { table, call: 'qmaint.create_plan($1, $2, $3, $4)', values: [table, options.now, options.until, options.max ?? 1000], concurrentArg: false };
}

/**
 * Create the partitions from the one holding `now` through the one holding `until`.
 *
 * @param db - the database
 * @param options - see {@link CreateOptions}; with `dryRun` the plan is returned ({@link Preview}) and nothing runs
 * @throws {@link QmaintError} `bad_input` when several tables have a policy and `table` is not given (`options: ['table']`), or qmaint.create_plan refuses the arguments; `lock_timeout` as for {@link rotate}
 */
export async function createUntil(db: Db, options: CreateOptions & { dryRun?: boolean }): Promise<RunResult | Preview> {
  const request = createRequest(await singleTable(db, options.table), options);
  return options.dryRun ? previewPlans(db, [request], options) : runPlans(db, [request], options);
}

async function parentOf(db: Db, name: string): Promise<string | null> {
  const { rows } = await db.query<{ t: string | null }>('SELECT qmaint.relation_text(qmaint.managed_parent_of(to_regclass($1))) AS t', [name]);
  return rows[0]?.t ?? null;
}

async function retireOne(db: Db, name: string, drop: boolean, options: MaintainOptions & { dryRun?: boolean }): Promise<RunResult | Preview> {
  // The "may use CONCURRENTLY" flag is appended as $4 by the runner.
  const request: PlanRequest = {
    table: await parentOf(db, name),
    call: 'qmaint.detach_plan($1, $2, $4, $3)',
    values: [name, options.now, drop],
    concurrentArg: true,
  };
  return options.dryRun ? previewPlans(db, [request], options) : runPlans(db, [request], options);
}

/**
 * Detach one past partition without live jobs and keep it as a table.
 *
 * @param db - the database
 * @param name - the partition, `schema.table`
 * @param options - see {@link MaintainOptions}; with `dryRun` the plan is returned
 * @throws {@link QmaintError} `bad_input` when the partition is not a past partition of a managed table, or still holds live jobs; `lock_timeout` as for {@link rotate}
 */
export function detach(db: Db, name: string, options: MaintainOptions & { dryRun?: boolean }): Promise<RunResult | Preview> {
  return retireOne(db, name, false, options);
}

/**
 * Detach and drop one past partition without live jobs (or drop a table qmaint detached).
 *
 * @param db - the database
 * @param name - the partition or detached table, `schema.table`
 * @param options - see {@link MaintainOptions}; with `dryRun` the plan is returned
 * @throws {@link QmaintError} `bad_input` when it is not a past partition (or a table qmaint detached) of a managed table, or still holds live jobs; `lock_timeout` as for {@link rotate}
 */
export function drop(db: Db, name: string, options: MaintainOptions & { dryRun?: boolean }): Promise<RunResult | Preview> {
  return retireOne(db, name, true, options);
}

/**
 * Move queued jobs out of expired partitions (whatever the policy's stragglers setting).
 *
 * @param db - the database
 * @param options - see {@link MaintainOptions}; with `dryRun` the plan is returned
 * @throws {@link QmaintError} `lock_timeout` as for {@link rotate}; `bad_input` when `table` has no policy
 */
export async function compact(db: Db, options: MaintainOptions & { dryRun?: boolean }): Promise<RunResult | Preview> {
  const requests = (await policyTables(db, options.table)).map((table) => ({
    table,
    call: 'qmaint.compact_plan($1, $2)',
    values: [table, options.now],
    concurrentArg: false,
  }));
  return options.dryRun ? previewPlans(db, requests, options) : runPlans(db, requests, options);
}
