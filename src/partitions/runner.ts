import { advisoryLockHolder, isPooled, MAINTENANCE_LOCK_KEY, withMaintenanceLock, type Db, type LockHolder, type PgClient } from '../db.js';
import { badInput, QmaintError, sqlState, toQmaintError } from '../errors.js';
import { executeSteps, toPlanStep, toStepResult, type PlanStep, type PlanStepRow, type StepEvent, type StepResult, type StepResultRow } from '../plan.js';

/**
 * Runs partition plans. Plans come from SQL functions (qmaint.rotate_plan and
 * friends); this module only decides how to run them:
 *
 * - direct connection: under the session maintenance lock, statement by
 *   statement, so DETACH ... CONCURRENTLY can run outside a transaction;
 * - through a transaction-pooling PgBouncer (a session lock would stay with
 *   whichever server connection took it): one transaction under the
 *   transaction-level lock, with plain DETACH, executed by qmaint.run_steps,
 *   the same code pg_cron runs.
 *
 * Either way one executor runs the steps (executeSteps in src/plan.ts, or its
 * SQL twin qmaint.run_steps) and reports each as a StepResult.
 */

/** One plan to make and run: a call of a qmaint.*_plan function. */
export interface PlanRequest {
  /** The managed table it is for (for its lock_timeout and for reports). */
  table: string | null;
  /** SQL call text with $1.. placeholders; the last placeholder is the "concurrent" flag when `concurrentArg` is set. */
  call: string;
  values: unknown[];
  /** Whether the call takes a trailing boolean "may use DETACH CONCURRENTLY". */
  concurrentArg: boolean;
}

/** How maintenance steps run (lock_timeout, retries, direct or pooled). */
export interface RunOptions {
  /** lock_timeout for every statement; default: the policy's lockTimeout. */
  lockTimeout?: string;
  /** Retries of a statement that hit lock_timeout (default: qmaint.lock_retries()). */
  retries?: number;
  /** Batches a straggler move may take through a pooler (default: all). */
  moveBatches?: number;
  /** Force how to run; default: detect PgBouncer-style pooling. */
  mode?: 'auto' | 'direct' | 'pooled';
  /** Called as each step starts, retries, moves rows and ends. */
  onEvent?: (event: StepEvent) => void;
}

/** One table's part of a {@link RunResult}. */
export interface TableRun {
  table: string | null;
  steps: PlanStep[];
  /** Steps done, then steps skipped (outcome 'done' / 'skipped'). */
  done: StepResult[];
  skipped: StepResult[];
}

/**
 * What a maintenance run did: per table, the steps done and skipped; or `ran: false` when another run held the maintenance lock (`holder` names it).
 */
export type RunResult = { ran: true; pooled: boolean; tables: TableRun[] } | { ran: false; pooled: boolean; holder: LockHolder | null; message: string };

/** The plan a request produces, as it would run now on this kind of connection. */
export async function makePlan(client: PgClient, request: PlanRequest, concurrent: boolean): Promise<PlanStep[]> {
  const values = request.concurrentArg ? [...request.values, concurrent] : request.values;
  const { rows } = await client.query<PlanStepRow>(`SELECT * FROM ${request.call}`, values);
  return rows.map(toPlanStep);
}

async function lockTimeoutFor(client: PgClient, table: string | null, override: string | undefined): Promise<string> {
  if (override) return override;
  const { rows } = await client.query<{ ms: string }>(
    `SELECT (extract(epoch FROM coalesce((SELECT lock_timeout FROM qmaint.partition_policy WHERE parent_table = $1), interval '2 seconds')) * 1000)::bigint || 'ms' AS ms`,
    [table],
  );
  return rows[0]!.ms;
}

/** Direct connection: each step on its own (one transaction, or none for CONCURRENTLY). */
async function runDirect(client: PgClient, table: string | null, steps: PlanStep[], options: RunOptions): Promise<TableRun> {
  const lockTimeout = await lockTimeoutFor(client, table, options.lockTimeout);
  // Taking all partition locks up front only pays inside one transaction;
  // here every step is its own transaction and locks its partition itself.
  const results = await executeSteps(
    client,
    steps.filter((s) => s.action !== 'lock'),
    { lockTimeout, retries: options.retries, onEvent: options.onEvent },
  );
  return { table, steps, done: results.filter((r) => r.outcome === 'done'), skipped: results.filter((r) => r.outcome === 'skipped') };
}

/** What qmaint.run_steps returns. */
interface ServerRun {
  status: 'ok' | 'lock_timeout';
  done: StepResultRow[];
  skipped: StepResultRow[];
  message?: string;
  failed?: StepResultRow & { statement: string; lock_level: string };
}

/** Through a pooler: the whole plan in this transaction, run by qmaint.run_steps. */
async function runPooledRequest(client: PgClient, request: PlanRequest, options: RunOptions): Promise<TableRun> {
  const steps = await makePlan(client, request, false);
  const lockTimeout = await lockTimeoutFor(client, request.table, options.lockTimeout);
  const n = request.values.length + (request.concurrentArg ? 1 : 0);
  const values = request.concurrentArg ? [...request.values, false] : [...request.values];
  const { rows } = await client.query<{ r: ServerRun }>(
    `SELECT qmaint.run_steps(ARRAY(SELECT s FROM ${request.call} s), $${n + 1}::interval, coalesce($${n + 2}::integer, qmaint.lock_retries()), $${n + 3}) AS r`,
    [...values, lockTimeout, options.retries ?? null, options.moveBatches ?? 2_147_483_647],
  );
  const result = rows[0]!.r;
  const done = result.done.map(toStepResult);
  const skipped = result.skipped.map(toStepResult);
  const failed = result.failed ? toStepResult(result.failed) : null;
  const stepOf = (r: StepResult) => steps.find((s) => s.seq === r.seq)!;
  for (const r of [...done, ...skipped, ...(failed ? [failed] : [])].sort((a, b) => a.seq - b.seq)) options.onEvent?.({ step: stepOf(r), ...r });
  if (failed) {
    throw new QmaintError('lock_timeout', result.message ?? 'gave up waiting for a lock', {
      details: { step: stepOf(failed), attempts: failed.attempts, blockers: failed.blockers, results: [...done, ...skipped], completedSteps: done.length },
    });
  }
  return { table: request.table, steps, done, skipped };
}

/**
 * Make and run the plans of `requests` under the one maintenance lock. Steps
 * finished before a lock give-up stay done (direct: committed one by one;
 * pooled: the transaction commits them) and the error (exit 5) names the
 * blockers. Another run holding the lock: { ran: false } at once.
 */
export async function runPlans(db: Db, requests: PlanRequest[], options: RunOptions = {}): Promise<RunResult> {
  return db.withClient(async (client) => {
    const pooled = options.mode === 'pooled' || (options.mode !== 'direct' && (await isPooled(client)));
    try {
      return pooled ? await runPooled(client, requests, options) : await runUnderSessionLock(client, requests, options);
    } catch (err) {
      throw planError(err, db);
    }
  });
}

/** A plan function refusing its arguments (SQLSTATE 22023) is bad input: exit 2 with PostgreSQL's hint. */
function planError(err: unknown, db: Db): QmaintError {
  if (sqlState(err) === '22023') {
    const hint = (err as { hint?: string }).hint;
    return badInput(`${(err as Error).message}${hint ? `; ${hint}` : ''}`);
  }
  return toQmaintError(err, db.target);
}

async function runUnderSessionLock(client: PgClient, requests: PlanRequest[], options: RunOptions): Promise<RunResult> {
  const tables: TableRun[] = [];
  const locked = await withMaintenanceLock(client, async () => {
    for (const request of requests) {
      const steps = await makePlan(client, request, true);
      try {
        tables.push(await runDirect(client, request.table, steps, options));
      } catch (err) {
        if (err instanceof QmaintError && err.details) err.details.tables = tables;
        throw err;
      }
    }
  });
  if (!locked.ran) return { ran: false, pooled: false, holder: locked.holder, message: holderMessage(locked.holder) };
  return { ran: true, pooled: false, tables };
}

async function runPooled(client: PgClient, requests: PlanRequest[], options: RunOptions): Promise<RunResult> {
  const tables: TableRun[] = [];
  await client.query('BEGIN');
  try {
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1::bigint) AS ok', [MAINTENANCE_LOCK_KEY.toString()]);
    if (!rows[0]?.ok) {
      const holder = await advisoryLockHolder(client);
      await client.query('ROLLBACK');
      return { ran: false, pooled: true, holder, message: holderMessage(holder) };
    }
    for (const request of requests) tables.push(await runPooledRequest(client, request, options));
    await client.query('COMMIT');
  } catch (err) {
    // Steps done before a lock give-up are kept, as on a direct connection.
    if (err instanceof QmaintError && err.code === 'lock_timeout') {
      await client.query('COMMIT');
      if (err.details) err.details.tables = tables;
    } else {
      await client.query('ROLLBACK').catch(() => undefined);
    }
    throw err;
  }
  return { ran: true, pooled: true, tables };
}

function holderMessage(holder: LockHolder | null): string {
  return `another maintenance run holds the lock${holder ? ` (pid ${holder.pid}${holder.applicationName ? `, ${holder.applicationName}` : ''}${holder.since ? `, connected since ${holder.since}` : ''})` : ''}; nothing done, it will be done next time`;
}

/** The plans as --dry-run shows them (no lock taken, nothing changed). */
export async function previewPlans(
  db: Db,
  requests: PlanRequest[],
  options: Pick<RunOptions, 'mode'> = {},
): Promise<{ pooled: boolean; tables: { table: string | null; steps: PlanStep[] }[] }> {
  return db.withClient(async (client) => {
    const pooled = options.mode === 'pooled' || (options.mode !== 'direct' && (await isPooled(client)));
    const tables = [];
    try {
      for (const request of requests) tables.push({ table: request.table, steps: await makePlan(client, request, !pooled) });
    } catch (err) {
      throw planError(err, db);
    }
    return { pooled, tables };
  });
}
