/**
 * Inspecting and repairing the queue: status counts, listing jobs, putting
 * failed jobs back, cancelling queued and running ones, rescuing expired leases, pausing
 * and resuming queues, dead-letter queues and redrive.
 */
import pg from 'pg';
import type { Queryable } from '../db.js';
import { badInput, badOption } from '../errors.js';
import { JsonText } from '../json.js';

/** Where a job is in its life: queued, running, completed, failed or cancelled. */
export type JobStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
const STATUSES: JobStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];

/** One queue's counts in a {@link StatusReport}. */
export interface QueueStatus {
  queue: string;
  counts: Record<JobStatus, number>;
  /** Ready to run now (queued, run_at <= now). */
  ready: number;
  /** Seconds since the oldest queued job was created (null: none queued). */
  oldestQueuedAgeSeconds: number | null;
}

/** One partition's counts in a {@link StatusReport}. */
export interface PartitionStatus {
  partition: string;
  lowerBound: string;
  upperBound: string;
  counts: Record<JobStatus, number>;
  total: number;
}

/** What {@link queueStatus} returns. */
export interface StatusReport {
  now: string;
  lowWater: string | null;
  queues: QueueStatus[];
  partitions: PartitionStatus[];
}

const zero = (): Record<JobStatus, number> => ({ queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0 });

/**
 * Counts per queue and status, the age of the oldest queued job, and jobs per
 * partition, as of `now`. Exact counts: this reads the whole table once.
 *
 * @param db - a Db, a pool or a client of your own
 * @param now - the time ages and readiness are judged at
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

/** A job as {@link listJobs} returns it; times are ISO 8601 texts. */
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

/** Which jobs {@link listJobs} returns. `limit` defaults to 50 (1 to 100000). */
export interface JobFilter {
  /** Only this queue (default all). */
  queue?: string;
  /** Only jobs with this status (default all). */
  status?: JobStatus;
  /** Only these job ids (default all). */
  ids?: string[];
  /** At most this many jobs, 1 to 100000 (default 50). */
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
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw badOption('limit', `limit must be a whole number from 1 to 100000, got ${limit}`);
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

/** Options of {@link listJobs}. */
export interface ListJobsOptions {
  /** `value` (default): payloads parsed; `text`: each payload a {@link JsonText} holding exactly what PostgreSQL returned. */
  payloadAs?: 'value' | 'text';
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
 *
 * @param db - a Db, a pool or a client of your own
 * @param filter - queue, status, ids and limit (default 50, at most 100000)
 * @param options - see {@link ListJobsOptions}
 * @throws {@link QmaintError} `bad_input` for an unknown status, a malformed id, or a limit out of range (`options: ['limit']`)
 */
export async function listJobs(db: Queryable, filter: JobFilter = {}, options: ListJobsOptions = {}): Promise<JobRow[]> {
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

/** What a retry or cancel would run ({@link planJobAction}). */
export interface JobAction {
  /** The exact statement (values inlined as literals), for --dry-run. */
  statement: string;
  lockLevel: string;
  reason: string;
}

/** Which jobs an action targets: ids, a queue, or both (never neither). */
export interface JobSelector {
  /** These jobs (decimal ids). */
  ids?: string[];
  /** The jobs of this queue (with ids: those of them in this queue). */
  queue?: string;
}

function selector(sel: JobSelector): { ids: string[] | null; queue: string | null } {
  const ids = checkIds(sel.ids) ?? null;
  const queue = sel.queue ?? null;
  if (ids === null && queue === null) throw badOption('queue', 'name the jobs: give job ids, or queue for all its jobs');
  return { ids, queue };
}

function actionStatement(fn: 'retry_jobs' | 'cancel_jobs', sel: JobSelector, now: Date): { text: string; values: unknown[]; literal: string } {
  const { ids, queue } = selector(sel);
  const lit = pg.escapeLiteral;
  const idsLit = ids === null ? 'NULL' : `ARRAY[${ids.join(', ')}]::bigint[]`;
  const select = fn === 'retry_jobs' ? 'id' : 'job_id AS id, was_running';
  const from = fn === 'retry_jobs' ? `qmaint.${fn}(%) AS id` : `qmaint.${fn}(%)`;
  return {
    text: `SELECT ${select} FROM ${from.replace('%', '$1::bigint[], $2::text, $3::timestamptz')}`,
    values: [ids, queue, now],
    literal: `SELECT ${select} FROM ${from.replace('%', `${idsLit}, ${queue === null ? 'NULL' : lit(queue)}, ${lit(now.toISOString())}::timestamptz`)}`,
  };
}

/**
 * Put failed jobs back in the queue (retry_count 0, ready at now). Returns their ids.
 *
 * @param db - a Db, a pool or a client of your own
 * @param sel - job ids, a queue, or both (never neither)
 * @param now - when the jobs become ready again
 * @throws {@link QmaintError} `bad_input` when `sel` names no job or holds a malformed id
 */
export async function retryJobs(db: Queryable, sel: JobSelector, now: Date): Promise<string[]> {
  const st = actionStatement('retry_jobs', sel, now);
  const { rows } = await db.query<{ id: string }>(st.text, st.values);
  return rows.map((r) => r.id);
}

/** What {@link cancelJobs} did: the jobs cancelled, and which of them were running. */
export interface CancelReport {
  /** Every job cancelled (decimal ids), queued or running. */
  ids: string[];
  /** How many of them were queued. */
  queued: number;
  /** Those of them that were running: their consumers were told (NOTIFY) and abort their handlers' signals. */
  running: string[];
}

/**
 * Cancel jobs, queued or running: they end cancelled (last_error says when; a
 * key they held is free again; a dead-letter queue does not take them). A
 * running job is cancelled in the database at once, so nothing its handler
 * does afterwards can complete or fail it; the consumer holding it is told by
 * NOTIFY and aborts the handler's signal with a {@link JobCancelledError}.
 *
 * @param db - a Db, a pool or a client of your own
 * @param sel - job ids, a queue, or both (never neither)
 * @param now - the time recorded as updated_at
 * @throws {@link QmaintError} `bad_input` when `sel` names no job or holds a malformed id
 */
export async function cancelJobs(db: Queryable, sel: JobSelector, now: Date): Promise<CancelReport> {
  const st = actionStatement('cancel_jobs', sel, now);
  const { rows } = await db.query<{ id: string; was_running: boolean }>(st.text, st.values);
  const running = rows.filter((r) => r.was_running).map((r) => r.id);
  return { ids: rows.map((r) => r.id), queued: rows.length - running.length, running };
}

/**
 * What retryJobs/cancelJobs would run, and how many jobs it would touch now:
 * `matching` in all, and for a cancel how many of them are queued and how
 * many running.
 *
 * Changes nothing.
 *
 * @param db - a Db, a pool or a client of your own
 * @param action - retry or cancel
 * @param sel - job ids, a queue, or both (never neither)
 * @param now - as for the action
 * @throws {@link QmaintError} `bad_input` when `sel` names no job or holds a malformed id
 */
export async function planJobAction(
  db: Queryable,
  action: 'retry' | 'cancel',
  sel: JobSelector,
  now: Date,
): Promise<JobAction & { matching: number; queued?: number; running?: number }> {
  const st = actionStatement(action === 'retry' ? 'retry_jobs' : 'cancel_jobs', sel, now);
  const { ids, queue } = selector(sel);
  const from = action === 'retry' ? ['failed'] : ['queued', 'running'];
  const { rows } = await db.query<{ status: string; n: string }>(
    `SELECT status::text AS status, count(*) AS n FROM qmaint.jobs
      WHERE status::text = ANY ($1::text[]) AND ($2::bigint[] IS NULL OR id = ANY ($2)) AND ($3::text IS NULL OR queue = $3)
      GROUP BY 1`,
    [from, ids, queue],
  );
  const count = (status: string) => Number(rows.find((r) => r.status === status)?.n ?? 0);
  if (action === 'retry') {
    return {
      statement: st.literal,
      lockLevel:
        'ROW EXCLUSIVE on qmaint.jobs (row locks on the matching jobs); row lock on its qmaint.partition_policy row when the low-water mark is lowered',
      reason: 'put failed jobs back in the queue',
      matching: count('failed'),
    };
  }
  return {
    statement: st.literal,
    lockLevel: 'ROW EXCLUSIVE on qmaint.jobs (row locks on the matching jobs, taken in id order); NOTIFY qmaint_cancel for each running one',
    reason: 'cancel queued and running jobs (they end cancelled; the consumers of running ones abort their handlers)',
    matching: count('queued') + count('running'),
    queued: count('queued'),
    running: count('running'),
  };
}

/**
 * Run qmaint.rescue_expired(now): expired leases back to the queue or failed.
 *
 * @param db - a Db, a pool or a client of your own
 * @param now - the time leases are judged at (default: the server's clock)
 * @returns how many jobs went back to the queue and how many failed; `skipped` when another session was rescuing at that moment
 */
export async function rescueExpired(db: Queryable, now?: Date): Promise<{ requeued: number; failed: number } | { skipped: true }> {
  const { rows } = await db.query<{ r: { requeued: number; failed: number } | { skipped: true } }>(
    now ? 'SELECT qmaint.rescue_expired($1) AS r' : 'SELECT qmaint.rescue_expired() AS r',
    now ? [now] : [],
  );
  return rows[0]!.r;
}
