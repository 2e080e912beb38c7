import type { Db, Queryable } from '../db.js';
import { parseQualifiedName, withMaintenanceLock, type LockHolder } from '../db.js';
import { badInput } from '../errors.js';
import { executeSteps, type PlanStep, type StepEvent } from '../plan.js';

/** Which partitions {@link planVacuumRun} and {@link runVacuum} vacuum, and how (`freeze` and `analyze` default false). */
export interface VacuumRunOptions {
  /** The time partition states are judged at (future partitions are left out). */
  now: Date;
  /** One partition ("schema.table"); default every non-future partition of every managed table. */
  partition?: string;
  /** VACUUM (FREEZE) (default false). */
  freeze?: boolean;
  /** VACUUM (ANALYZE) (default false). */
  analyze?: boolean;
}

/** A row of pg_stat_progress_vacuum for the backend running our VACUUM. */
export interface VacuumProgress {
  partition: string;
  phase: string;
  heapBlocksTotal: number;
  heapBlocksScanned: number;
  heapBlocksVacuumed: number;
  indexVacuumCount: number;
}

/** One VACUUM that {@link runVacuum} ran, with dead tuples before and after. */
export interface VacuumedPartition {
  partition: string;
  statement: string;
  attempts: number;
  ms: number;
  deadTuplesBefore: number;
  deadTuplesAfter: number;
}

/**
 * The VACUUM statements `vacuum run` would execute (each outside any transaction).
 *
 * Changes nothing.
 *
 * @param db - a Db, a pool or a client of your own
 * @param options - see {@link VacuumRunOptions}
 * @throws {@link QmaintError} `bad_input` when `partition` is not a partition of a managed table
 */
export async function planVacuumRun(db: Queryable, options: VacuumRunOptions): Promise<PlanStep[]> {
  const { rows } = await db.query<{ partition: string; state: string }>(
    `SELECT format('%I.%I', n.nspname, c.relname) AS partition, st.state
       FROM qmaint.partition_policy pp
       CROSS JOIN LATERAL qmaint.partition_states(to_regclass(pp.parent_table), $1::timestamptz) st
       JOIN pg_class c ON c.oid = st.partition::oid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      ORDER BY pp.parent_table, st.lower_bound`,
    [options.now.toISOString()],
  );
  let chosen = rows.filter((r) => r.state !== 'future');
  if (options.partition !== undefined) {
    const name = parseQualifiedName(options.partition, 'partition');
    chosen = rows.filter((r) => r.partition === name.quoted || r.partition === `${name.schema}.${name.name}`);
    if (chosen.length === 0) {
      throw badInput(`${options.partition} is not a partition of a managed table; see qmaint vacuum status for the partitions`);
    }
  }
  const opts = [options.freeze ? 'FREEZE' : null, options.analyze ? 'ANALYZE' : null].filter(Boolean);
  return chosen.map((r, i) => ({
    seq: i + 1,
    action: options.freeze ? 'freeze' : 'vacuum',
    target: r.partition,
    statement: `VACUUM ${opts.length > 0 ? `(${opts.join(', ')}) ` : ''}${r.partition}`,
    lockLevel: `SHARE UPDATE EXCLUSIVE on ${r.partition}`,
    reason: `${r.state} partition${options.freeze ? ': freeze every row' : ''}`,
    transactional: false,
    locks: [r.partition],
  }));
}

async function deadTuples(db: Queryable, partition: string): Promise<number> {
  const { rows } = await db.query<{ n: string | null }>('SELECT n_dead_tup AS n FROM pg_stat_user_tables WHERE relid = to_regclass($1)', [partition]);
  return Number(rows[0]?.n ?? 0);
}

/** Options of {@link runVacuum}: which partitions, plus how the VACUUM statements run. */
export interface RunVacuumOptions extends VacuumRunOptions {
  /** lock_timeout of each VACUUM (PostgreSQL interval text, e.g. '2s'). */
  lockTimeout: string;
  /** Default: qmaint.lock_retries(). */
  retries?: number;
  /** Called with progress rows while a VACUUM runs. */
  onProgress?: (progress: VacuumProgress) => void;
  /** Called as each step starts, retries and ends. */
  onEvent?: (event: StepEvent) => void;
  /** How often progress is read while a VACUUM runs, in ms (default 250). */
  pollMs?: number;
}

/**
 * Vacuum now, from the client, one partition at a time, under the maintenance
 * lock and lock_timeout; progress is read from pg_stat_progress_vacuum on a
 * second connection while each statement runs.
 *
 * @param db - the database (a direct connection: it takes the session maintenance lock)
 * @param options - see {@link RunVacuumOptions}
 * @throws {@link QmaintError} `bad_input` as for {@link planVacuumRun}; `config` through a transaction pooler; `lock_timeout` with {@link GaveUpDetails} when a VACUUM gave up waiting for its lock
 */
export async function runVacuum(
  db: Db,
  options: RunVacuumOptions,
): Promise<{ ran: true; vacuumed: VacuumedPartition[] } | { ran: false; holder: LockHolder | null }> {
  const steps = await planVacuumRun(db, options);
  return db.withClient(async (client) => {
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const locked = await withMaintenanceLock(client, async () => {
      const vacuumed: VacuumedPartition[] = [];
      for (const step of steps) {
        const before = await deadTuples(db, step.target!);
        const poller = pollProgress(db, pid, step.target!, options.onProgress, options.pollMs ?? 250);
        try {
          const [done] = await executeSteps(client, [step], { lockTimeout: options.lockTimeout, retries: options.retries, onEvent: options.onEvent });
          vacuumed.push({
            partition: step.target!,
            statement: step.statement,
            attempts: done!.attempts,
            ms: done!.ms,
            deadTuplesBefore: before,
            deadTuplesAfter: await deadTuples(db, step.target!),
          });
        } finally {
          await poller.stop();
        }
      }
      return vacuumed;
    });
    return locked.ran ? { ran: true, vacuumed: locked.result } : { ran: false, holder: locked.holder };
  });
}

function pollProgress(db: Queryable, pid: number, partition: string, onProgress: RunVacuumOptions['onProgress'], everyMs: number) {
  let stopped = false;
  let pending: Promise<void> = Promise.resolve();
  const tick = async () => {
    const { rows } = await db.query<{
      phase: string;
      heap_blks_total: string;
      heap_blks_scanned: string;
      heap_blks_vacuumed: string;
      index_vacuum_count: string;
    }>('SELECT phase, heap_blks_total, heap_blks_scanned, heap_blks_vacuumed, index_vacuum_count FROM pg_stat_progress_vacuum WHERE pid = $1', [pid]);
    const r = rows[0];
    if (r && !stopped) {
      onProgress?.({
        partition,
        phase: r.phase,
        heapBlocksTotal: Number(r.heap_blks_total),
        heapBlocksScanned: Number(r.heap_blks_scanned),
        heapBlocksVacuumed: Number(r.heap_blks_vacuumed),
        indexVacuumCount: Number(r.index_vacuum_count),
      });
    }
  };
  const timer = onProgress
    ? setInterval(() => {
        pending = pending.then(tick).catch(() => undefined);
      }, everyMs)
    : undefined;
  return {
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await pending;
    },
  };
}
