import type pg from 'pg';
import { advisoryLockHolder, isPooled, MAINTENANCE_LOCK_KEY, withMaintenanceLock, type Db, type LockHolder, type PgClient } from '../db.js';
import { badInput, QmaintError, sqlState, toQmaintError } from '../errors.js';
import { describeBlockers, findBlockers, toPlanStep, type PlanStep, type PlanStepRow } from '../plan.js';

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

export type StepEvent =
  | { kind: 'start'; step: PlanStep; table: string | null }
  | { kind: 'done'; step: PlanStep; table: string | null; ms: number; moved?: number }
  | { kind: 'retry'; step: PlanStep; attempt: number; delayMs: number }
  | { kind: 'skipped'; step: PlanStep; reason: string }
  | { kind: 'moved'; step: PlanStep; moved: number };

export interface RunOptions {
  /** lock_timeout for every statement; default: the policy's lockTimeout. */
  lockTimeout?: string;
  /** Retries of a statement that hit lock_timeout (default 5). */
  retries?: number;
  /** First retry delay in ms, doubled each time, ±50% jitter (default 200). */
  retryBaseMs?: number;
  /** Batches a straggler move may take through a pooler (default: all). */
  moveBatches?: number;
  /** Force how to run; default: detect PgBouncer-style pooling. */
  mode?: 'auto' | 'direct' | 'pooled';
  onEvent?: (event: StepEvent) => void;
}

export interface TableRun {
  table: string | null;
  steps: PlanStep[];
  done: { seq: number; action: string; target: string | null; ms?: number; moved?: number }[];
  skipped: { seq: number; action: string; target: string | null; reason: string }[];
}

export type RunResult =
  | { ran: true; pooled: boolean; tables: TableRun[] }
  | { ran: false; pooled: boolean; holder: LockHolder | null; message: string };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


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

function relationsOf(step: PlanStep): string[] {
  const rels = new Set<string>();
  if (step.target) rels.add(step.target);
  for (const m of step.lockLevel.matchAll(/([A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*)/g)) rels.add(m[1]!);
  return [...rels];
}

async function detachPending(client: PgClient, target: string | null): Promise<boolean> {
  const { rows } = await client.query<{ p: boolean }>('SELECT coalesce(bool_or(inhdetachpending), false) AS p FROM pg_inherits WHERE inhrelid = to_regclass($1)', [target]);
  return rows[0]?.p ?? false;
}

/** Run one statement under lock_timeout with jittered retries; give up naming the blockers. */
async function runStatement(client: PgClient, step: PlanStep, options: RunOptions, done: number): Promise<pg.QueryResult> {
  const retries = options.retries ?? 5;
  const base = options.retryBaseMs ?? 200;
  let statement = step.statement;
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.query(statement);
    } catch (err) {
      if (sqlState(err) !== '55P03') throw err;
      if (attempt > retries) {
        const blockers = await findBlockers(client, relationsOf(step));
        throw new QmaintError(
          'lock_timeout',
          `gave up on "${step.action} ${step.target ?? ''}" after ${attempt} tries of lock_timeout: blocked by ${describeBlockers(blockers)}; end or wait for those sessions, then run it again`,
          { cause: err, details: { step, blockers, completedSteps: done } },
        );
      }
      // A DETACH ... CONCURRENTLY that timed out waiting for older snapshots
      // has already committed its first half: finish it instead of starting over.
      if (step.action === 'detach' && !step.transactional && (await detachPending(client, step.target))) {
        statement = statement.replace(/ CONCURRENTLY$/, ' FINALIZE');
      }
      const delayMs = Math.round(base * 2 ** (attempt - 1) * (0.5 + Math.random()));
      options.onEvent?.({ kind: 'retry', step, attempt, delayMs });
      await sleep(delayMs);
    }
  }
}

/** Direct connection: each step on its own (one transaction, or none for CONCURRENTLY). */
async function runDirect(client: PgClient, table: string | null, steps: PlanStep[], options: RunOptions): Promise<TableRun> {
  const run: TableRun = { table, steps, done: [], skipped: [] };
  const skip = new Set<string>();
  const lockTimeout = await lockTimeoutFor(client, table, options.lockTimeout);
  const previous = (await client.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]?.lock_timeout ?? '0';
  await client.query(`SELECT set_config('lock_timeout', $1, false)`, [lockTimeout]);
  try {
    for (const step of steps) {
      if (step.target && skip.has(step.target)) continue;
      // Taking all partition locks up front only pays inside one transaction;
      // here every step is its own transaction and locks its partition itself.
      if (step.action === 'lock') continue;
      const started = Date.now();
      options.onEvent?.({ kind: 'start', step, table });
      try {
        let moved: number | undefined;
        if (step.action === 'move') {
          moved = 0;
          for (;;) {
            const result = await runStatement(client, step, options, run.done.length);
            const n = Number(Object.values(result.rows[0] ?? {})[0] ?? 0);
            if (n === 0) break;
            moved += n;
            options.onEvent?.({ kind: 'moved', step, moved: n });
          }
        } else {
          await runStatement(client, step, options, run.done.length);
        }
        const ms = Date.now() - started;
        run.done.push({ seq: step.seq, action: step.action, target: step.target, ms, ...(moved === undefined ? {} : { moved }) });
        options.onEvent?.({ kind: 'done', step, table, ms, moved });
      } catch (err) {
        if (sqlState(err) !== 'QM001') throw err;
        // It holds live jobs again: leave the rest of this partition's retirement for a later run.
        const reason = (err as Error).message;
        if (step.target) skip.add(step.target);
        run.skipped.push({ seq: step.seq, action: step.action, target: step.target, reason });
        options.onEvent?.({ kind: 'skipped', step, reason });
      }
    }
  } finally {
    await client.query(`SELECT set_config('lock_timeout', $1, false)`, [previous]).catch(() => undefined);
  }
  return run;
}

interface ServerRun {
  status: 'ok' | 'lock_timeout';
  done: TableRun['done'];
  skipped: TableRun['skipped'];
  blockers?: unknown[];
  message?: string;
  failed?: unknown;
}

/** Through a pooler: the whole plan in this transaction, run by qmaint.run_steps. */
async function runPooledRequest(client: PgClient, request: PlanRequest, options: RunOptions): Promise<TableRun> {
  const steps = await makePlan(client, request, false);
  const lockTimeout = await lockTimeoutFor(client, request.table, options.lockTimeout);
  const n = request.values.length + (request.concurrentArg ? 1 : 0);
  const values = request.concurrentArg ? [...request.values, false] : [...request.values];
  const { rows } = await client.query<{ r: ServerRun }>(
    `SELECT qmaint.run_steps(ARRAY(SELECT s FROM ${request.call} s), $${n + 1}::interval, $${n + 2}, $${n + 3}) AS r`,
    [...values, lockTimeout, options.retries ?? 5, options.moveBatches ?? 2_147_483_647],
  );
  const result = rows[0]!.r;
  for (const d of result.done) options.onEvent?.({ kind: 'done', step: steps.find((s) => s.seq === d.seq)!, table: request.table, ms: d.ms ?? 0, moved: d.moved });
  if (result.status === 'lock_timeout') {
    throw new QmaintError('lock_timeout', result.message ?? 'gave up waiting for a lock', {
      details: { failed: result.failed, blockers: result.blockers, completedSteps: result.done.length },
    });
  }
  return { table: request.table, steps, done: result.done, skipped: result.skipped };
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
export async function previewPlans(db: Db, requests: PlanRequest[], options: Pick<RunOptions, 'mode'> = {}): Promise<{ pooled: boolean; tables: { table: string | null; steps: PlanStep[] }[] }> {
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
