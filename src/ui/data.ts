/**
 * What the dashboard's API answers: each function reads through the library
 * (queueStatus, listJobs, listPartitions, vacuumStatus, runHealth,
 * explainDequeue, recentRuns, the pg_cron listing) and shapes the result for
 * one page. The few reads with no library function of their own (the stored
 * churn samples, the job-id cursor of a time) are here, each one an index
 * probe or bounded by the samples' one-day retention.
 */
import { redactDeep } from '../config.js';
import type { Db } from '../db.js';
import { QmaintError } from '../errors.js';
import type { JsonText } from '../json.js';
import { runHealth } from '../health/checks.js';
import { explainDequeue } from '../health/explain.js';
import { planTree, scans, type PlanNode } from '../health/plan.js';
import { resolveThresholds, type Thresholds } from '../health/thresholds.js';
import { listPartitions, planRotate } from '../partitions/index.js';
import { checkIds, checkStatus, listJobs, queueStatus } from '../queue/admin.js';
import { checkQueueName } from '../queue/enqueue.js';
import { listQueues } from '../queue/queues.js';
import { currentLeader } from '../schedule/leader.js';
import { jobRuns, locatePgCron, queueJobs } from '../schedule/pgcron.js';
import { recentRuns } from '../schedule/runs.js';
import { vacuumStatus } from '../vacuum/status.js';
import { tune } from '../vacuum/tune.js';

/** Settings the dashboard's reads and actions use. */
export interface UiSettings {
  /** statement_timeout of health and the dequeue explain (PostgreSQL interval text). */
  statementTimeout: string;
  /** Jobs per claim of the explained claim. */
  batch: number;
  /** Lease of the explained claim, in seconds. */
  leaseSeconds: number;
  /** lock_timeout of rotate and tune (default: the policy's). */
  lockTimeout?: string;
  /** Health thresholds. */
  thresholds: Thresholds;
  /** Show the query text of xmin horizon holders. */
  showQueries: boolean;
}

export const DEFAULT_UI_SETTINGS: UiSettings = {
  statementTimeout: '30s',
  batch: 100,
  leaseSeconds: 60,
  thresholds: resolveThresholds(),
  showQueries: false,
};

/** What `qmaint health` exits with for each verdict (not in strict mode). */
export const VERDICT_EXIT = {
  ok: { exitCode: 0, meaning: 'healthy' },
  warn: { exitCode: 0, meaning: 'look soon (exit 4 in strict mode)' },
  critical: { exitCode: 4, meaning: 'act now: health exits 4' },
} as const;

export async function overview(db: Db, now: Date) {
  const status = await queueStatus(db, now);
  const queues = await listQueues(db, now, 300);
  const leader = await currentLeader(db);
  return { now: now.toISOString(), status, queues, leader };
}

export async function health(db: Db, now: Date, s: UiSettings) {
  const report = await runHealth(db, {
    now,
    thresholds: s.thresholds,
    statementTimeout: s.statementTimeout,
    batch: s.batch,
    leaseSeconds: s.leaseSeconds,
  });
  const { dequeue, ...rest } = report;
  return { ...rest, dequeueVerdict: dequeue?.verdict ?? null, exitCodes: VERDICT_EXIT };
}

/** pg_cron's jobs of this database with their last runs, or why pg_cron is not in use. */
export async function pgCron(db: Db, runsPerJob: number) {
  let site;
  try {
    site = await locatePgCron(db);
  } catch (err) {
    if (err instanceof QmaintError && (err.code === 'config' || err.code === 'permission')) return { available: false as const, reason: err.message };
    throw err;
  }
  try {
    const jobs = await queueJobs(site);
    const runs = await jobRuns(
      site,
      jobs.map((j) => j.jobid),
      runsPerJob,
    );
    return {
      available: true as const,
      version: site.version,
      cronDatabase: site.cronDatabase,
      jobs: jobs.map((j) => ({ jobid: j.jobid, name: j.name, schedule: j.schedule, active: j.active, runs: runs.get(j.jobid) ?? [] })),
    };
  } finally {
    await site.close();
  }
}

const PAGE = 50;

/** One page of jobs, newest first, by keyset on the id (the primary key): no count of the table. */
export async function jobs(db: Db, query: URLSearchParams) {
  const queue = query.get('queue') || undefined;
  if (queue !== undefined) checkQueueName(queue);
  const status = checkStatus(query.get('status') || undefined);
  const id = query.get('id') || undefined;
  let after = query.get('after') || undefined;
  if (after !== undefined) checkIds([after]);
  const before = query.get('before') || undefined;
  if (before !== undefined && after === undefined) {
    const at = new Date(before);
    if (!Number.isFinite(at.getTime())) throw new QmaintError('bad_input', `before ${JSON.stringify(before)} is not a time; use e.g. 2026-01-31T12:00:00Z`);
    // The newest job created before that time starts the page (ids grow with time).
    const { rows } = await db.query<{ id: string | null }>('SELECT max(id)::text AS id FROM qmaint.jobs WHERE created_at < $1', [at]);
    if (rows[0]?.id === null || rows[0]?.id === undefined) return { jobs: [], next: null };
    after = (BigInt(rows[0].id) + 1n).toString();
  }
  const rows = await listJobs(db, { queue, status, ids: id === undefined ? undefined : [id], after, limit: PAGE + 1 });
  const page = rows.slice(0, PAGE);
  // The list leaves payloads out (the job's own page shows it).
  return { jobs: page.map((job) => ({ ...job, payload: undefined })), next: rows.length > PAGE ? page[page.length - 1]!.id : null };
}

export async function job(db: Db, id: string) {
  const [row] = await listJobs(db, { ids: [id], limit: 1 }, { payloadAs: 'text' });
  if (!row) return null;
  // Payload as PostgreSQL's text: no number rounded on the way to the page.
  return { ...row, payload: (row.payload as JsonText).text };
}

export async function partitions(db: Db, now: Date) {
  return { now: now.toISOString(), tables: await listPartitions(db, { now }) };
}

export async function rotatePlan(db: Db, now: Date, s: UiSettings) {
  return planRotate(db, { now, lockTimeout: s.lockTimeout });
}

export async function tunePlan(db: Db, now: Date, s: UiSettings) {
  const result = await tune(db, { now, dryRun: true, lockTimeout: s.lockTimeout ?? '2s' });
  if (!result.ran) return { plan: null };
  return { plan: result.plan };
}

export async function vacuum(db: Db, now: Date, s: UiSettings) {
  // The statistics-based bloat estimate: pgstattuple_approx reads every partition.
  const status = await vacuumStatus(db, { now, bloat: 'estimate' });
  const holders = status.horizon.holders.map((h) => (s.showQueries ? h : { ...h, query: null }));
  return { ...status, horizon: { ...status.horizon, holders }, showQueries: s.showQueries };
}

/** The stored churn samples (qmaint.vacuum_samples keeps one day), summed per managed parent and sample time. */
export async function churnSamples(db: Db, now: Date) {
  const { rows } = await db.query<{ parent_table: string; sampled_at: Date; dead: string; changes: string; partitions: number }>(
    `SELECT parent_table, sampled_at, sum(n_dead_tup)::text AS dead, sum(n_tup_upd + n_tup_del)::text AS changes, count(*)::int AS partitions
       FROM qmaint.vacuum_samples WHERE sampled_at > $1::timestamptz - interval '1 day'
      GROUP BY 1, 2 ORDER BY 1, 2`,
    [now],
  );
  return rows.map((r) => ({
    parentTable: r.parent_table,
    sampledAt: r.sampled_at.toISOString(),
    deadTuples: Number(r.dead),
    updatesDeletes: Number(r.changes),
    partitions: r.partitions,
  }));
}

export async function explain(db: Db, s: UiSettings, queue: string | undefined) {
  if (queue !== undefined) checkQueueName(queue);
  const report = await explainDequeue(db, {
    queue,
    batch: s.batch,
    leaseSeconds: s.leaseSeconds,
    statementTimeout: s.statementTimeout,
    thresholds: s.thresholds.dequeue,
  });
  // Per partition: planned (not pruned at plan time), executed (not pruned at run time), buffers its scans touched.
  const visits = scans(report.explain.Plan);
  const partitions = report.partitions.map((p) => {
    const mine = visits.filter((v) => v.node['Relation Name'] === p.name);
    return {
      ...p,
      planned: mine.length > 0,
      executed: mine.some((v) => v.executed),
      sharedHit: mine.reduce((n, v) => n + (v.node['Shared Hit Blocks'] ?? 0), 0),
      sharedRead: mine.reduce((n, v) => n + (v.node['Shared Read Blocks'] ?? 0), 0),
      rows: mine.reduce((n, v) => n + (v.node['Actual Rows'] ?? 0) * Math.max(1, v.node['Actual Loops'] ?? 1), 0),
    };
  });
  const { explain: doc, ...rest } = report;
  return { ...rest, partitions, tree: planTree(doc), subplansRemoved: subplansRemoved(doc.Plan) };
}

const FAILED = new Set(['failed', 'lock_timeout']);

export async function runs(db: Db) {
  const all = await recentRuns(db, { limit: 20 });
  const failed = all.filter((r) => FAILED.has(r.status));
  const rest = all.filter((r) => !FAILED.has(r.status));
  return { runs: redactDeep([...failed, ...rest]), failures: failed.length };
}

function subplansRemoved(node: PlanNode): number {
  return (node['Subplans Removed'] ?? 0) + (node.Plans ?? []).reduce((n, c) => n + subplansRemoved(c), 0);
}

export { checkIds };
