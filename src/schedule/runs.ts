import type { Queryable } from '../db.js';
import type { TaskName } from './tasks.js';

/** Who ran a maintenance task. */
export type Runner = 'pg_cron' | 'daemon' | 'cli';
/** How a maintenance run ended (or `running`). */
export type RunStatus = 'running' | 'ok' | 'skipped' | 'failed' | 'lock_timeout';

/** One row of qmaint.maintenance_runs. */
export interface MaintenanceRun {
  id: number;
  task: string;
  runner: string;
  status: RunStatus;
  message: string | null;
  details: unknown;
  startedAt: string;
  finishedAt: string | null;
  /** The node it ran on (qmaint.node_name(): address or cluster name, and WAL timeline); null for runs before migration 0016. */
  node: string | null;
}

interface RunRow {
  id: string | number;
  task: string;
  runner: string;
  status: RunStatus;
  message: string | null;
  details: unknown;
  started_at: string | Date;
  finished_at: string | Date | null;
  node: string | null;
}

function iso(value: string | Date | null): string | null {
  if (value === null) return null;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

function toRun(row: RunRow): MaintenanceRun {
  return {
    id: Number(row.id),
    task: row.task,
    runner: row.runner,
    status: row.status,
    message: row.message,
    details: row.details,
    startedAt: iso(row.started_at)!,
    finishedAt: iso(row.finished_at),
    node: row.node ?? null,
  };
}

/**
 * Run one task through qmaint.run_task, the entry point pg_cron uses too. It
 * records the run and never raises for a failing task: the returned status says
 * how it went. now (default: the server's clock) is the time the task acts for.
 *
 * @param db - a Db, a pool or a client of your own
 * @param task - the task to run
 * @param runner - recorded as who ran it
 * @param now - the time the task acts for (default null: the server's clock)
 */
export async function runTask(db: Queryable, task: TaskName, runner: Runner, now: Date | null = null): Promise<MaintenanceRun> {
  const { rows } = await db.query<{ run: RunRow }>('SELECT qmaint.run_task($1, $2, $3) AS run', [task, runner, now]);
  return toRun(rows[0]!.run);
}

/**
 * The latest runs of each task (limit per task and runner), newest first.
 *
 * @param db - a Db, a pool or a client of your own
 * @param options - `limit` per task and runner (default 5), and only one `runner` (default all)
 */
export async function recentRuns(db: Queryable, options: { limit?: number; runner?: Runner } = {}): Promise<MaintenanceRun[]> {
  const { rows } = await db.query<RunRow>(
    // One index probe per (task, runner) rather than a window over the whole log.
    `SELECT r.id, r.task, r.runner, r.status, r.message, r.details, r.started_at, r.finished_at, r.node
       FROM unnest(qmaint.schedule_tasks()) AS t(task)
      CROSS JOIN unnest(ARRAY['pg_cron', 'daemon', 'cli']) AS w(runner)
      CROSS JOIN LATERAL (
            SELECT * FROM qmaint.maintenance_runs m
             WHERE m.task = t.task AND m.runner = w.runner
             ORDER BY m.started_at DESC, m.id DESC LIMIT $1) r
      WHERE $2::text IS NULL OR w.runner = $2
      ORDER BY r.started_at DESC, r.id DESC`,
    [options.limit ?? 5, options.runner ?? null],
  );
  return rows.map(toRun);
}
