import type pg from 'pg';
import type { PgClient, Queryable } from './db.js';
import { QmaintError, sqlState } from './errors.js';

/** One statement of a maintenance plan, as returned by the SQL planning functions. */
export interface PlanStep {
  seq: number;
  action: string;
  target: string | null;
  statement: string;
  lockLevel: string;
  reason: string;
  /** false: must run outside a transaction block (CONCURRENTLY, VACUUM). */
  transactional: boolean;
}

export interface PlanStepRow {
  seq: number;
  action: string;
  target: string | null;
  statement: string;
  lock_level: string;
  reason: string;
  transactional: boolean;
}

export function toPlanStep(row: PlanStepRow): PlanStep {
  return {
    seq: row.seq,
    action: row.action,
    target: row.target,
    statement: row.statement,
    lockLevel: row.lock_level,
    reason: row.reason,
    transactional: row.transactional,
  };
}

/** A session that holds a lock a maintenance statement waited for. */
export interface Blocker {
  pid: number;
  state: string | null;
  since: string | null;
  applicationName: string | null;
  mode: string;
  relation: string;
  /**
   * The first keyword of the session's current or last statement (SELECT,
   * UPDATE, ...). Never the statement's text: it can carry another
   * application's data, and blocker reports are printed and stored.
   */
  command: string | null;
}

/**
 * Sessions other than ours that hold granted locks on the given relations (and,
 * for a partition, on its parent): whoever can make a DDL statement wait.
 * Asks qmaint.lock_blockers(), the query server-side runs use too.
 */
export async function findBlockers(db: Queryable, relations: string[]): Promise<Blocker[]> {
  if (relations.length === 0) return [];
  const { rows } = await db.query<{ blockers: { pid: number; state: string | null; since: string | null; application_name: string | null; mode: string; relation: string; command: string | null }[] }>(
    `SELECT qmaint.lock_blockers(ARRAY(SELECT to_regclass(r) FROM unnest($1::text[]) AS r)) AS blockers`,
    [relations],
  );
  return (rows[0]?.blockers ?? []).map((r) => ({
    pid: r.pid,
    state: r.state,
    since: r.since ? new Date(r.since).toISOString() : null,
    applicationName: r.application_name,
    mode: r.mode,
    relation: r.relation,
    command: r.command,
  }));
}

export function describeBlockers(blockers: Blocker[]): string {
  if (blockers.length === 0) return 'no blocking session is visible any more';
  return blockers
    .map((b) => `pid ${b.pid} (${b.state ?? 'unknown state'} since ${b.since ?? '?'}, holds ${b.mode} on ${b.relation}, last statement ${b.command ?? 'unknown'})`)
    .join('; ');
}

/** Relations a step's lock applies to: its target and whatever its lock level names. */
export function stepRelations(step: PlanStep): string[] {
  const rels = new Set<string>();
  if (step.target) rels.add(step.target);
  const on = /\bon\s+([A-Za-z0-9_."]+)/.exec(step.lockLevel);
  if (on?.[1]) rels.add(on[1]);
  return [...rels];
}

export interface ExecuteOptions {
  /** lock_timeout for every statement (PostgreSQL interval text, e.g. '2s'). */
  lockTimeout: string;
  /** Attempts after the first when a statement hits lock_timeout. */
  retries: number;
  /** First retry delay in ms; doubles each time, with ±50% jitter. */
  retryBaseMs?: number;
  onStep?: (step: PlanStep, event: 'start' | 'done' | 'retry', info?: { attempt: number; delayMs?: number }) => void;
}

export interface ExecutedStep {
  step: PlanStep;
  attempts: number;
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Run plan steps in order on one client, each under lock_timeout, retrying a
 * statement that hit the timeout with jittered backoff. When it gives up it
 * throws a lock_timeout QmaintError (exit 5) naming the blocking sessions; the
 * steps before it are complete, the failed one left no trace (each step is one
 * transaction or one non-transactional statement).
 */
export async function executePlan(client: PgClient, steps: PlanStep[], options: ExecuteOptions): Promise<ExecutedStep[]> {
  const done: ExecutedStep[] = [];
  const base = options.retryBaseMs ?? 200;
  const previous = await client.query<{ lock_timeout: string }>('SHOW lock_timeout');
  await client.query(`SELECT set_config('lock_timeout', $1, false)`, [options.lockTimeout]);
  try {
    for (const step of steps) {
      const started = Date.now();
      options.onStep?.(step, 'start', { attempt: 1 });
      for (let attempt = 1; ; attempt++) {
        try {
          await (client as pg.ClientBase).query(step.statement);
          break;
        } catch (err) {
          if (sqlState(err) !== '55P03') throw err;
          if (attempt > options.retries) {
            const blockers = await findBlockers(client, stepRelations(step));
            throw new QmaintError(
              'lock_timeout',
              `gave up on "${step.action} ${step.target ?? ''}" after ${attempt} tries of lock_timeout ${options.lockTimeout}: blocked by ${describeBlockers(blockers)}; end or wait for those sessions, then run it again`,
              { cause: err, details: { step, blockers, completedSteps: done.length } },
            );
          }
          const delayMs = Math.round(base * 2 ** (attempt - 1) * (0.5 + Math.random()));
          options.onStep?.(step, 'retry', { attempt, delayMs });
          await sleep(delayMs);
        }
      }
      done.push({ step, attempts: 1, ms: Date.now() - started });
      options.onStep?.(step, 'done');
    }
  } finally {
    await client.query(`SELECT set_config('lock_timeout', $1, false)`, [previous.rows[0]?.lock_timeout ?? '0']).catch(() => undefined);
  }
  return done;
}
