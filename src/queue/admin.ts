/**
 * Inspecting and repairing the queue: status counts, listing jobs, putting
 * failed jobs back, cancelling queued ones, rescuing expired leases.
 */
import pg from 'pg';
import type { Queryable } from '../db.js';
import { badInput } from '../errors.js';
import { JsonText } from '../json.js';

export type JobStatus = 'queued' | 'running' | 'completed' | 'failed';
const STATUSES: JobStatus[] = ['queued', 'running', 'completed', 'failed'];

export interface QueueStatus {
  queue: string;
  counts: Record<JobStatus, number>;
  /** Ready to run now (queued, run_at <= now). */
  ready: number;
  /** Seconds since the oldest queued job was created (null: none queued). */
  oldestQueuedAgeSeconds: number | null;
}

export interface PartitionStatus {
  partition: string;
  lowerBound: string;
  upperBound: string;
  counts: Record<JobStatus, number>;
  total: number;
}

export interface StatusReport {
  now: string;
  lowWater: string | null;
  queues: QueueStatus[];
  partitions: PartitionStatus[];
}

const zero = (): Record<JobStatus, number> => ({ queued: 0, running: 0, completed: 0, failed: 0 });

/**
 * Counts per queue and status, the age of the oldest queued job, and jobs per
 * partition, as of `now`. Exact counts: this reads the whole table once.
 */
export async function queueStatus(db: Queryable, now: Date): Promise<StatusReport> {
  const { rows } = await db.query<{ part: string; queue: string; status: JobStatus; n: string; ready: string; oldest: Date | null }>(
    `SELECT tableoid::regclass::text AS part, queue, status::text AS status, count(*) AS n,
            count(*) FILTER (WHERE status = 'queued' AND run_at <= $1) AS ready,
            min(created_at) FILTER (WHERE status = 'queued') AS oldest
       FROM qmaint.jobs GROUP BY 1, 2, 3`,
    [now],
  );
  const parts = await db.query<{ partition: string; lower_bound: Date; upper_bound: Date }>(
    `SELECT partition::text AS partition, lower_bound, upper_bound FROM qmaint.partitions_of('qmaint.jobs')`,
  );
  const lw = await db.query<{ low_water: Date | null }>(`SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`);
  const queues = new Map<string, QueueStatus & { oldest: number | null }>();
  const byPart = new Map<string, Record<JobStatus, number>>();
  for (const r of rows) {
    const q = queues.get(r.queue) ?? { queue: r.queue, counts: zero(), ready: 0, oldestQueuedAgeSeconds: null, oldest: null };
    q.counts[r.status] += Number(r.n);
    q.ready += Number(r.ready);
    if (r.oldest && (q.oldest === null || r.oldest.getTime() < q.oldest)) q.oldest = r.oldest.getTime();
    queues.set(r.queue, q);
    const p = byPart.get(r.part) ?? zero();
    p[r.status] += Number(r.n);
    byPart.set(r.part, p);
  }
  const lowWater = lw.rows[0]?.low_water;
  return {
    now: now.toISOString(),
    lowWater: lowWater instanceof Date && Number.isFinite(lowWater.getTime()) ? lowWater.toISOString() : null,
    queues: [...queues.values()]
      .sort((a, b) => a.queue.localeCompare(b.queue))
      .map(({ oldest, ...q }) => ({ ...q, oldestQueuedAgeSeconds: oldest === null ? null : Math.max(0, Math.round((now.getTime() - oldest) / 1000)) })),
    partitions: parts.rows.map((p) => {
      const counts = byPart.get(p.partition) ?? zero();
      return {
        partition: p.partition,
        lowerBound: isoOrText(p.lower_bound),
        upperBound: isoOrText(p.upper_bound),
        counts,
        total: STATUSES.reduce((n, s) => n + counts[s], 0),
      };
    }),
  };
}

function isoOrText(d: Date | string): string {
  return d instanceof Date && Number.isFinite(d.getTime()) ? d.toISOString() : String(d);
}

export interface JobRow {
  id: string;
  queue: string;
  status: JobStatus;
  priority: number;
  retryCount: number;
  maxRetries: number;
  runAt: string;
  createdAt: string;
  updatedAt: string;
  lockedBy: string | null;
  lockedUntil: string | null;
  lastError: string | null;
  payload: unknown;
}

export interface JobFilter {
  queue?: string;
  status?: JobStatus;
  ids?: string[];
  limit?: number;
  /** Keyset paging: only jobs listed after this id (newest first, so smaller ids); the last id of one page gives the next. */
  after?: string;
}

export function checkStatus(status: string | undefined): JobStatus | undefined {
  if (status === undefined) return undefined;
  if (!STATUSES.includes(status as JobStatus)) throw badInput(`status ${JSON.stringify(status)} is not one of ${STATUSES.join(', ')}`);
  return status as JobStatus;
}

const BIGINT_MAX = 9_223_372_036_854_775_807n;

export function checkLimit(limit: number | undefined): number {
  const n = limit ?? 50;
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw badInput(`--limit must be a whole number from 1 to 100000, got ${limit}`);
  return n;
}

export function checkIds(ids: (string | number)[] | undefined): string[] | undefined {
  if (ids === undefined || ids.length === 0) return undefined;
  return ids.map((id) => {
    const text = String(id);
    if (!/^[1-9][0-9]{0,18}$/.test(text) || BigInt(text) > BIGINT_MAX)
      throw badInput(`job id ${JSON.stringify(text)} is not a job id; ids are whole numbers from 1 to ${BIGINT_MAX}`);
    return text;
  });
}

/**
 * listJobs in pages of pageSize (default 1000) by keyset, up to filter.limit
 * jobs in all, so a long listing streams instead of waiting for every row.
 */
export async function* listJobPages(
  db: Queryable,
  filter: JobFilter = {},
  options: { payloadAs?: 'value' | 'text'; pageSize?: number } = {},
): AsyncGenerator<JobRow[]> {
  let remaining = checkLimit(filter.limit);
  let after = filter.after;
  const pageSize = options.pageSize ?? 1000;
  while (remaining > 0) {
    const page = await listJobs(db, { ...filter, after, limit: Math.min(pageSize, remaining) }, options);
    if (page.length > 0) yield page;
    if (page.length < Math.min(pageSize, remaining)) return;
    remaining -= page.length;
    after = page[page.length - 1]!.id;
  }
}

/**
 * Jobs matching the filter, newest first. Payloads are parsed values, or with
 * `payloadAs: 'text'` JsonText holding exactly what PostgreSQL returns (no
 * number rounded, no recursion however deep the value).
 */
export async function listJobs(db: Queryable, filter: JobFilter = {}, options: { payloadAs?: 'value' | 'text' } = {}): Promise<JobRow[]> {
  const text = options.payloadAs === 'text';
  const limit = checkLimit(filter.limit);
  const { rows } = await db.query<{
    id: string;
    queue: string;
    status: JobStatus;
    priority: number;
    retry_count: number;
    max_retries: number;
    run_at: Date;
    created_at: Date;
    updated_at: Date;
    locked_by: string | null;
    locked_until: Date | null;
    last_error: string | null;
    /** JSON text with payloadAs 'text' (payload::text), else the parsed value. */
    payload: unknown;
  }>(
    `SELECT id, queue, status::text AS status, priority, retry_count, max_retries, run_at, created_at, updated_at,
            locked_by, locked_until, last_error, ${text ? 'payload::text' : 'payload'} AS payload
       FROM qmaint.jobs
      WHERE ($1::text IS NULL OR queue = $1)
        AND ($2::qmaint.job_status IS NULL OR status = $2)
        AND ($3::bigint[] IS NULL OR id = ANY ($3))
        AND ($5::bigint IS NULL OR id < $5)
      ORDER BY id DESC
      LIMIT $4`,
    [filter.queue ?? null, filter.status ?? null, checkIds(filter.ids) ?? null, limit, filter.after === undefined ? null : checkIds([filter.after])![0]],
  );
  return rows.map((r) => ({
    id: r.id,
    queue: r.queue,
    status: r.status,
    priority: r.priority,
    retryCount: r.retry_count,
    maxRetries: r.max_retries,
    runAt: r.run_at.toISOString(),
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    lockedBy: r.locked_by,
    lockedUntil: r.locked_until ? r.locked_until.toISOString() : null,
    lastError: r.last_error,
    payload: text ? JsonText.trusted(r.payload as string) : r.payload,
  }));
}

export interface JobAction {
  /** The exact statement (values inlined as literals), for --dry-run. */
  statement: string;
  lockLevel: string;
  reason: string;
}

/** Which jobs an action targets: ids, a queue, or both (never neither). */
export interface JobSelector {
  ids?: string[];
  queue?: string;
}

function selector(sel: JobSelector): { ids: string[] | null; queue: string | null } {
  const ids = checkIds(sel.ids) ?? null;
  const queue = sel.queue ?? null;
  if (ids === null && queue === null) throw badInput('name the jobs: give job ids, or --queue for all of a queue');
  return { ids, queue };
}

function actionStatement(fn: 'retry_jobs' | 'cancel_jobs', sel: JobSelector, now: Date): { text: string; values: unknown[]; literal: string } {
  const { ids, queue } = selector(sel);
  const lit = pg.escapeLiteral;
  const idsLit = ids === null ? 'NULL' : `ARRAY[${ids.join(', ')}]::bigint[]`;
  return {
    text: `SELECT id FROM qmaint.${fn}($1::bigint[], $2::text, $3::timestamptz) AS id`,
    values: [ids, queue, now],
    literal: `SELECT id FROM qmaint.${fn}(${idsLit}, ${queue === null ? 'NULL' : lit(queue)}, ${lit(now.toISOString())}::timestamptz) AS id`,
  };
}

/** Put failed jobs back in the queue (retry_count 0, ready at now). Returns their ids. */
export async function retryJobs(db: Queryable, sel: JobSelector, now: Date): Promise<string[]> {
  const st = actionStatement('retry_jobs', sel, now);
  const { rows } = await db.query<{ id: string }>(st.text, st.values);
  return rows.map((r) => r.id);
}

/** Cancel queued jobs (they end failed, last_error says cancelled). Returns their ids. */
export async function cancelJobs(db: Queryable, sel: JobSelector, now: Date): Promise<string[]> {
  const st = actionStatement('cancel_jobs', sel, now);
  const { rows } = await db.query<{ id: string }>(st.text, st.values);
  return rows.map((r) => r.id);
}

/** What retryJobs/cancelJobs would run, and how many jobs it would touch. */
export async function planJobAction(db: Queryable, action: 'retry' | 'cancel', sel: JobSelector, now: Date): Promise<JobAction & { matching: number }> {
  const st = actionStatement(action === 'retry' ? 'retry_jobs' : 'cancel_jobs', sel, now);
  const { ids, queue } = selector(sel);
  const from = action === 'retry' ? 'failed' : 'queued';
  const { rows } = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM qmaint.jobs WHERE status = $1::qmaint.job_status AND ($2::bigint[] IS NULL OR id = ANY ($2)) AND ($3::text IS NULL OR queue = $3)`,
    [from, ids, queue],
  );
  return {
    statement: st.literal,
    lockLevel:
      'ROW EXCLUSIVE on qmaint.jobs (row locks on the matching jobs)' +
      (action === 'retry' ? '; row lock on its qmaint.partition_policy row when the low-water mark is lowered' : ''),
    reason: action === 'retry' ? `put ${from} jobs back in the queue` : `cancel ${from} jobs (they end failed)`,
    matching: Number(rows[0]!.n),
  };
}

/** Run qmaint.rescue_expired(now): expired leases back to the queue or failed. */
export async function rescueExpired(db: Queryable, now?: Date): Promise<{ requeued: number; failed: number } | { skipped: true }> {
  const { rows } = await db.query<{ r: { requeued: number; failed: number } | { skipped: true } }>(
    now ? 'SELECT qmaint.rescue_expired($1) AS r' : 'SELECT qmaint.rescue_expired() AS r',
    now ? [now] : [],
  );
  return rows[0]!.r;
}
