import { parseQualifiedName, type PgClient, type Queryable } from './db.js';
import { QmaintError, sqlState } from './errors.js';

/** One statement of a maintenance plan, as returned by the SQL planning functions (qmaint.plan_step). */
export interface PlanStep {
  seq: number;
  action: string;
  target: string | null;
  statement: string;
  lockLevel: string;
  reason: string;
  /** false: must run outside a transaction block (CONCURRENTLY, VACUUM). */
  transactional: boolean;
  /** The relations the statement locks (schema-qualified): whoever holds a lock on one of them can block it. */
  locks: string[];
}

export interface PlanStepRow {
  seq: number;
  action: string;
  target: string | null;
  statement: string;
  lock_level: string;
  reason: string;
  transactional: boolean;
  locks: string[] | null;
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
    locks: row.locks ?? [],
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

/** A blocker as qmaint.lock_blockers() returns it. */
export interface BlockerRow {
  pid: number;
  state: string | null;
  since: string | null;
  application_name: string | null;
  mode: string;
  relation: string;
  command: string | null;
}

export function toBlocker(r: BlockerRow): Blocker {
  return {
    pid: r.pid,
    state: r.state,
    since: r.since ? new Date(r.since).toISOString() : null,
    applicationName: r.application_name,
    mode: r.mode,
    relation: r.relation,
    command: r.command,
  };
}

/**
 * Sessions other than ours that hold granted locks on the given relations (and,
 * for a partition, on its parent): whoever can make a DDL statement wait.
 * Asks qmaint.lock_blockers(), the query server-side runs use too.
 */
export async function findBlockers(db: Queryable, relations: string[]): Promise<Blocker[]> {
  if (relations.length === 0) return [];
  const { rows } = await db.query<{ blockers: BlockerRow[] }>(
    `SELECT qmaint.lock_blockers(ARRAY(SELECT to_regclass(r) FROM unnest($1::text[]) AS r)) AS blockers`,
    [relations],
  );
  return (rows[0]?.blockers ?? []).map(toBlocker);
}

export function describeBlockers(blockers: Blocker[]): string {
  if (blockers.length === 0) return 'no blocking session is visible any more';
  return blockers
    .map(
      (b) => `pid ${b.pid} (${b.state ?? 'unknown state'} since ${b.since ?? '?'}, holds ${b.mode} on ${b.relation}, last statement ${b.command ?? 'unknown'})`,
    )
    .join('; ');
}

/**
 * What running one step came to. The same shape as qmaint.step_result() in
 * SQL, so a step run by qmaint.run_steps and one run here read alike.
 */
export interface StepResult {
  seq: number;
  action: string;
  target: string | null;
  /** 1 + the retries after lock_timeout it took (for gave_up: retries + 1). */
  attempts: number;
  outcome: 'done' | 'skipped' | 'gave_up';
  /** Who held a lock on the step's relations when it gave up; [] otherwise. */
  blockers: Blocker[];
  ms: number;
  /** A 'move' step: jobs moved. */
  moved?: number;
  /** A skipped step: why (it holds live jobs again). */
  reason?: string;
}

/** A step result as qmaint.run_steps() returns it. */
export type StepResultRow = Omit<StepResult, 'blockers'> & { blockers: BlockerRow[] };

export function toStepResult(row: StepResultRow): StepResult {
  return { ...row, blockers: row.blockers.map(toBlocker) };
}

/** What the executor reports while it runs: progress, then one result per step. */
export type StepEvent =
  | { outcome: 'start'; step: PlanStep; attempts: number; /** move steps: the queued jobs it will move. */ total?: number }
  | { outcome: 'retry'; step: PlanStep; attempts: number; delayMs: number }
  | { outcome: 'moved'; step: PlanStep; attempts: number; moved: number }
  | ({ step: PlanStep } & StepResult);

export interface ExecuteOptions {
  /** lock_timeout for every statement (PostgreSQL interval text, e.g. '2s'). */
  lockTimeout: string;
  /** Retries after lock_timeout; default qmaint.lock_retries() (the SQL executor's default). */
  retries?: number;
  onEvent?: (event: StepEvent) => void;
}

/** Details of the `lock_timeout` QmaintError the executor throws when it gives up. */
export interface GaveUpDetails {
  [key: string]: unknown;
  step: PlanStep;
  attempts: number;
  blockers: Blocker[];
  /** Results of the steps run before it (done or skipped). */
  results: StepResult[];
  completedSteps: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The retry policy lives in SQL (qmaint.lock_retries, qmaint.lock_retry_delay); both executors use it. */
async function retryDelayMs(client: PgClient, retry: number): Promise<number> {
  const { rows } = await client.query<{ ms: number }>('SELECT (extract(epoch FROM qmaint.lock_retry_delay($1)) * 1000)::integer AS ms', [retry]);
  return rows[0]!.ms;
}

async function detachPending(client: PgClient, target: string | null): Promise<boolean> {
  const { rows } = await client.query<{ p: boolean }>(
    'SELECT coalesce(bool_or(inhdetachpending), false) AS p FROM pg_inherits WHERE inhrelid = to_regclass($1)',
    [target],
  );
  return rows[0]?.p ?? false;
}

/**
 * The one TypeScript executor of plan steps (partitions, vacuum tune and run),
 * the client-side twin of qmaint.run_steps(): steps run in order on one
 * client, each its own transaction (or none: CONCURRENTLY, VACUUM), under
 * lock_timeout. A statement that hit the timeout is retried after
 * qmaint.lock_retry_delay(n), at most `retries` times; a DETACH ...
 * CONCURRENTLY that timed out in its second phase is finished with FINALIZE.
 * A 'move' step repeats until it moves nothing. A step whose partition holds
 * live jobs again (QM001), or a create step whose slot another session filled
 * meanwhile (QM002), is skipped with the rest of that target's steps.
 * On giving up it throws a lock_timeout QmaintError (exit 5) naming the
 * sessions holding locks on the step's relations (PlanStep.locks); the steps
 * before it are complete, the failed one left no trace.
 */
export async function executeSteps(client: PgClient, steps: PlanStep[], options: ExecuteOptions): Promise<StepResult[]> {
  const results: StepResult[] = [];
  const skip = new Set<string>();
  const retries = options.retries ?? (await client.query<{ n: number }>('SELECT qmaint.lock_retries() AS n')).rows[0]!.n;
  const previous = (await client.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0]?.lock_timeout ?? '0';
  await client.query(`SELECT set_config('lock_timeout', $1, false)`, [options.lockTimeout]);
  const finish = (step: PlanStep, result: StepResult): void => {
    if (result.outcome !== 'gave_up') results.push(result);
    options.onEvent?.({ step, ...result });
  };
  try {
    for (const step of steps) {
      if (step.target !== null && skip.has(step.target)) continue;
      const started = Date.now();
      const base = { seq: step.seq, action: step.action, target: step.target };
      let statement = step.statement;
      let moved = 0;
      options.onEvent?.({
        outcome: 'start',
        step,
        attempts: 1,
        ...(step.action === 'move' && step.target !== null ? { total: await queuedIn(client, step.target) } : {}),
      });
      for (let attempts = 1; ; attempts++) {
        try {
          if (step.action === 'move') {
            // Each batch commits on its own; a retry goes on from where it stopped.
            for (;;) {
              const { rows } = await client.query<Record<string, unknown>>(statement);
              const n = Number(Object.values(rows[0] ?? {})[0] ?? 0);
              if (n === 0) break;
              moved += n;
              options.onEvent?.({ outcome: 'moved', step, attempts, moved: n });
            }
          } else {
            await client.query(statement);
          }
          finish(step, { ...base, attempts, outcome: 'done', blockers: [], ms: Date.now() - started, ...(step.action === 'move' ? { moved } : {}) });
          break;
        } catch (err) {
          const state = sqlState(err);
          if (state === 'QM001' || state === 'QM002') {
            if (step.target !== null) skip.add(step.target);
            finish(step, { ...base, attempts, outcome: 'skipped', blockers: [], ms: Date.now() - started, reason: (err as Error).message });
            break;
          }
          if (sqlState(err) !== '55P03') throw err;
          if (attempts > retries) {
            const blockers = await findBlockers(client, step.locks);
            finish(step, { ...base, attempts, outcome: 'gave_up', blockers, ms: Date.now() - started });
            const details: GaveUpDetails = { step, attempts, blockers, results, completedSteps: results.length };
            throw new QmaintError(
              'lock_timeout',
              `gave up on "${step.action} ${step.target ?? ''}" after ${attempts} tries of lock_timeout ${options.lockTimeout}: blocked by ${describeBlockers(blockers)}; end or wait for those sessions, then run it again`,
              { cause: err, details },
            );
          }
          // A DETACH ... CONCURRENTLY that timed out waiting for older snapshots
          // has already committed its first half: finish it instead of starting over.
          if (step.action === 'detach' && !step.transactional && (await detachPending(client, step.target))) {
            statement = statement.replace(/ CONCURRENTLY$/, ' FINALIZE');
          }
          const delayMs = await retryDelayMs(client, attempts);
          options.onEvent?.({ outcome: 'retry', step, attempts, delayMs });
          await sleep(delayMs);
        }
      }
    }
  } finally {
    await client.query(`SELECT set_config('lock_timeout', $1, false)`, [previous]).catch(() => undefined);
  }
  return results;
}

/** Waiting jobs in one partition (the total of a move step's progress; the policy's status column and first live value). */
async function queuedIn(client: Queryable, partition: string): Promise<number> {
  const { rows } = await client.query<{ n: number }>('SELECT qmaint.waiting_jobs($1::regclass)::int AS n', [parseQualifiedName(partition, 'partition').quoted]);
  return rows[0]?.n ?? 0;
}
