import type { Queryable } from '../../src/db.js';
import { rotate } from '../../src/partitions/index.js';
import { runCli, type CliResult, type TestDatabase } from '../helpers.js';

/** A fixed "now" far from the real clock, so every test tells the same story. */
export const T0 = new Date('2031-03-10T12:00:00Z');
export const DAY = 86_400_000;
export const at = (days: number): Date => new Date(T0.getTime() + days * DAY);

/** `qmaint ARGS --database-url URL --json` */
export function cli(t: TestDatabase, args: string[], url = t.url): Promise<CliResult> {
  return runCli([...args, '--database-url', url, '--json']);
}

export interface PolicyPatch {
  partition_interval?: string;
  premake?: number | null;
  retention?: string;
  retention_mode?: 'drop' | 'detach' | 'archive';
  stragglers?: 'move' | 'wait';
  default_partition?: boolean;
  lock_timeout?: string;
}

/** Change the qmaint.jobs policy in place (apply is tested on its own). */
export async function setPolicy(db: Queryable, patch: PolicyPatch): Promise<void> {
  const cols = Object.keys(patch);
  const sets = cols.map((c, i) => `${c} = $${i + 1}`).join(', ');
  await db.query(`UPDATE qmaint.partition_policy SET ${sets} WHERE parent_table = 'qmaint.jobs'`, Object.values(patch));
}

export interface Part {
  name: string;
  from: string;
  to: string;
  isDefault: boolean;
}

/** Partitions of qmaint.jobs, bounds from the catalog, oldest first. */
export async function partitions(db: Queryable): Promise<Part[]> {
  const { rows } = await db.query<{ name: string; lower_bound: Date | number; upper_bound: Date | number; is_default: boolean }>(
    `SELECT partition::text AS name, lower_bound, upper_bound, is_default FROM qmaint.partitions_of('qmaint.jobs')`,
  );
  const iso = (d: Date | number) => (typeof d === 'number' ? String(d) : d.toISOString());
  return rows.map((r) => ({ name: r.name, from: iso(r.lower_bound), to: iso(r.upper_bound), isDefault: r.is_default }));
}

/** Insert a job stamped created_at (its partition made on the spot if missing). */
export async function job(db: Queryable, createdAt: Date, status: 'queued' | 'running' | 'completed' | 'failed' = 'queued', queue = 'q'): Promise<string> {
  const { rows } = await db.query<{ id: string }>(`SELECT qmaint.enqueue($1, '{}', $2, 0, 5, $2) AS id`, [queue, createdAt]);
  const id = rows[0]!.id;
  if (status !== 'queued') {
    await db.query(
      `UPDATE qmaint.jobs SET status = $2::text::qmaint.job_status, locked_until = CASE WHEN $2::text = 'running' THEN now() + interval '1 hour' END WHERE id = $1`,
      [id, status],
    );
  }
  return id;
}

export async function lowWater(db: Queryable): Promise<string> {
  const { rows } = await db.query<{ lw: Date | number }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`);
  const v = rows[0]!.lw;
  return typeof v === 'number' ? String(v) : v.toISOString();
}

export const name = (d: Date): string => `qmaint.jobs_p${d.toISOString().slice(0, 10).replace(/-/g, '')}`;

/** Rotate through the library (faster than spawning the CLI for set-up steps). */
export async function rotateAt(t: TestDatabase, now: Date): Promise<void> {
  const result = await rotate(t.db, { now, mode: 'direct' });
  if (!result.ran) throw new Error(`rotate skipped: ${result.message}`);
}
