/**
 * Inspecting and repairing the queue: status counts, listing jobs, putting
 * failed jobs back, cancelling queued and running ones, rescuing expired leases, pausing
 * and resuming queues, dead-letter queues and redrive.
 */
import pg from 'pg';
import type { Queryable } from '../db.js';
import { badInput, badOption, sqlState } from '../errors.js';
import { JsonText } from '../json.js';

/** Where a job is in its life: queued, running, completed, failed or cancelled. */
export type JobStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
const STATUSES: JobStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];

/** Which figures of a {@link QueueStatus} or {@link PartitionStatus} are estimates (true) rather than exact counts. */
export type EstimatedFlags = Record<JobStatus, boolean>;

/** One queue's counts in a {@link StatusReport}. */
export interface QueueStatus {
  queue: string;
  /** Jobs per status: queued and running counted exactly, the history states estimated unless `estimated` says otherwise. */
  counts: Record<JobStatus, number>;
  /** Which of `counts` are estimates (see {@link queueStatus}). */
  estimated: EstimatedFlags;
  /** Ready to run now (queued, run_at <= now); always exact. */
  ready: number;
  /** Seconds since the oldest queued job was created (null: none queued); always exact. */
  oldestQueuedAgeSeconds: number | null;
}

/** One partition's counts in a {@link StatusReport}. */
export interface PartitionStatus {
  partition: string;
  lowerBound: string;
  upperBound: string;
  counts: Record<JobStatus, number>;
  /** Which of `counts` are estimates (see {@link queueStatus}). */
  estimated: EstimatedFlags;
  total: number;
}

/** What {@link queueStatus} returns. */
export interface StatusReport {
  now: string;
  lowWater: string | null;
  /** Every figure is an exact count (`exact` was asked for); otherwise the history states are estimates where statistics allow. */
  exact: boolean;
  queues: QueueStatus[];
  partitions: PartitionStatus[];
}

/** Options of {@link queueStatus}. */
export interface StatusOptions {
  /** Count every row exactly (reads the whole table) instead of estimating completed, failed and cancelled jobs. */
  exact?: boolean;
}

const zero = (): Record<JobStatus, number> => ({ queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0 });
const flags = (v: boolean): EstimatedFlags => ({ queued: v, running: v, completed: v, failed: v, cancelled: v });
const LIVE: JobStatus[] = ['queued', 'running'];
const HISTORY: JobStatus[] = ['completed', 'failed', 'cancelled'];

/** Jobs of one partition, queue and status, as status counts them. */
interface CountRow {
  part: string;
  queue: string;
  status: JobStatus;
  n: string;
  ready: string;
  oldest: Date | null;
}

/** A partition as status reads it from the catalog and the statistics. */
interface PartRow {
  partition: string;
  schema_name: string;
  table_name: string;
  lower_bound: Date | number;
  upper_bound: Date | number;
  is_default: boolean;
  /** Estimated rows: reltuples, scaled to the current size from the low-water mark on (null: never vacuumed or analysed). */
  rows: number | null;
  /** Most common status values and their frequencies in the partition's pg_stats row (null: none visible). */
  status_vals?: string[] | null;
  status_freqs?: number[] | null;
  status_nulls?: number | null;
  queue_vals?: string[] | null;
  queue_freqs?: number[] | null;
}

/**
 * Counts per queue and status, ready jobs and the age of the oldest queued
 * job, and jobs per partition, as of `now`.
 *
 * Queued and running jobs are counted exactly, through their partial indexes
 * and only in partitions from the low-water mark on (below it no job is
 * queued or running: whoever makes one live there lowers the mark in the
 * same transaction). Completed, failed and cancelled jobs are estimated per
 * partition from PostgreSQL's statistics, so the cost does not grow with
 * history: the partition's row estimate (reltuples, as of its last VACUUM or
 * ANALYZE; from the low-water mark on, where rows still change, scaled to
 * its current size as the planner does) less its exact live count, split by the
 * frequencies ANALYZE sampled for the status column (pg_stats of the
 * partition); per queue, each partition's estimate is split further by the
 * queue column's frequencies (status and queue taken as independent within a
 * partition). A partition without statistics (never analysed, or not visible
 * to the role) is counted exactly. `estimated` marks every figure that is an
 * estimate; with `exact: true` every figure is a count of the whole table.
 *
 * @param db - a Db, a pool or a client of your own
 * @param now - the time ages and readiness are judged at
 * @param options - see {@link StatusOptions}
 */
export async function queueStatus(db: Queryable, now: Date, options: StatusOptions = {}): Promise<StatusReport> {
  const exact = options.exact === true;
  const lw = await db.query<{ low_water: Date | number | null }>(`SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`);
  const mark = lw.rows[0]?.low_water;
  const lowWater = mark instanceof Date && Number.isFinite(mark.getTime()) ? mark : null;
  const parts = await db.query<PartRow>(
    `SELECT p.partition::text AS partition, p.schema_name, p.table_name, p.lower_bound, p.upper_bound, p.is_default,
            -- reltuples as of the last VACUUM or ANALYZE; where rows still change (from the mark on), scaled
            -- to the current size as the planner does. Sizes only there: measuring opens the relation.
            CASE WHEN c.reltuples < 0 THEN NULL
                 WHEN c.relpages > 0 AND p.upper_bound > $1 THEN c.reltuples / c.relpages * (pg_relation_size(p.partition) / current_setting('block_size')::float8)
                 ELSE c.reltuples END::float8 AS rows
       FROM qmaint.partitions_of('qmaint.jobs') p
       JOIN pg_class c ON c.oid = p.partition
      ORDER BY p.lower_bound`,
    [lowWater ?? '-infinity'],
  );
  const statOf = await columnStats(db, parts.rows);
  for (const p of parts.rows) {
    const st = statOf.get(`${p.schema_name}.${p.table_name}.status`);
    const qu = statOf.get(`${p.schema_name}.${p.table_name}.queue`);
    p.status_vals = st ? (st.vals ?? []) : null;
    p.status_freqs = st?.freqs ?? null;
    p.status_nulls = st?.nulls ?? null;
    p.queue_vals = qu?.vals ?? null;
    p.queue_freqs = qu?.freqs ?? null;
  }
  const byPart = new Map<string, { counts: Record<JobStatus, number>; estimated: EstimatedFlags }>();
  for (const p of parts.rows) byPart.set(p.partition, { counts: zero(), estimated: flags(false) });
  const queues = new Map<string, { counts: Record<JobStatus, number>; estimated: EstimatedFlags; ready: number; oldest: number | null }>();
  const queueOf = (name: string) => {
    const q = queues.get(name) ?? { counts: zero(), estimated: flags(false), ready: 0, oldest: null };
    queues.set(name, q);
    return q;
  };
  const add = (rows: CountRow[]) => {
    for (const r of rows) {
      const q = queueOf(r.queue);
      q.counts[r.status] += Number(r.n);
      q.ready += Number(r.ready);
      if (r.oldest && (q.oldest === null || r.oldest.getTime() < q.oldest)) q.oldest = r.oldest.getTime();
      const p = byPart.get(r.part);
      if (p) p.counts[r.status] += Number(r.n);
    }
  };
  const COUNT = `SELECT tableoid::regclass::text AS part, queue, status::text AS status, count(*) AS n,
            count(*) FILTER (WHERE status = 'queued' AND run_at <= $1) AS ready,
            min(created_at) FILTER (WHERE status = 'queued') AS oldest
       FROM qmaint.jobs`;
  if (exact) {
    add((await db.query<CountRow>(`${COUNT} GROUP BY 1, 2, 3`, [now])).rows);
  } else {
    // Live jobs: one arm per status, each matching its partial index (jobs_claim_idx, jobs_rescue_idx);
    // $2, the mark as a value, prunes the partitions below it at plan time.
    const arm = (status: JobStatus) => `SELECT tableoid, queue, status, run_at, created_at FROM qmaint.jobs WHERE status = '${status}' AND created_at >= $2`;
    add(
      (
        await db.query<CountRow>(`${COUNT.replace('FROM qmaint.jobs', `FROM (${arm('queued')} UNION ALL ${arm('running')}) live`)} GROUP BY 1, 2, 3`, [
          now,
          lowWater ?? '-infinity',
        ])
      ).rows,
    );
    const unknown = parts.rows.filter((p) => p.rows === null || p.status_vals === null || p.status_vals === undefined);
    for (const p of parts.rows) if (!unknown.includes(p)) estimateHistory(p, byPart.get(p.partition)!, queueOf);
    if (unknown.length > 0) add(await countHistory(db, unknown));
  }
  return {
    now: now.toISOString(),
    lowWater: lowWater ? lowWater.toISOString() : null,
    exact,
    queues: [...queues.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([queue, q]) => ({
        queue,
        counts: roundCounts(q.counts),
        estimated: q.estimated,
        ready: q.ready,
        oldestQueuedAgeSeconds: q.oldest === null ? null : Math.max(0, Math.round((now.getTime() - q.oldest) / 1000)),
      })),
    partitions: parts.rows.map((p) => {
      const { counts, estimated } = byPart.get(p.partition)!;
      return {
        partition: p.partition,
        lowerBound: isoOrText(p.lower_bound),
        upperBound: isoOrText(p.upper_bound),
        counts,
        estimated,
        total: STATUSES.reduce((n, s) => n + counts[s], 0),
      };
    }),
  };
}

interface ColumnStats {
  schemaname: string;
  tablename: string;
  attname: string;
  vals: string[] | null;
  freqs: number[] | null;
  nulls: number;
}

/**
 * The status and queue columns' statistics of each partition, keyed
 * `schema.table.column`. One read of pg_stats, given the partitions' schemas
 * and names: with the names the view finds them through pg_class's name
 * index, where a schema alone made it check column privileges on every
 * relation of the schema, indexes included; joining the view to the
 * partitions made the planner loop over all of it.
 * pg_stats shows a column's statistics only to a role that may read it, and
 * qmaint_readonly reads partitions through the parent only: when partitions
 * holding rows got none, qmaint.jobs_column_stats() (SECURITY DEFINER) reads
 * them as the table's owner. A role that may not run it either (42501) is
 * left with what it saw, and those partitions are counted.
 */
async function columnStats(db: Queryable, parts: readonly PartRow[]): Promise<Map<string, ColumnStats>> {
  const stats = await db.query<ColumnStats>(
    `SELECT schemaname, tablename, attname, most_common_vals::text::text[] AS vals, most_common_freqs::float8[] AS freqs, null_frac::float8 AS nulls
       FROM pg_stats WHERE schemaname = ANY ($1::text[]) AND tablename = ANY ($2::text[]) AND attname IN ('status', 'queue') AND NOT inherited`,
    [[...new Set(parts.map((p) => p.schema_name))], parts.map((p) => p.table_name)],
  );
  const statOf = new Map(stats.rows.map((r) => [`${r.schemaname}.${r.tablename}.${r.attname}`, r]));
  if (parts.some((p) => p.rows !== null && p.rows > 0 && !statOf.has(`${p.schema_name}.${p.table_name}.status`))) {
    try {
      const owner = await db.query<ColumnStats>('SELECT * FROM qmaint.jobs_column_stats()');
      for (const r of owner.rows) statOf.set(`${r.schemaname}.${r.tablename}.${r.attname}`, r);
    } catch (err) {
      if (sqlState(err) !== '42501') throw err;
    }
  }
  return statOf;
}

function roundCounts(c: Record<JobStatus, number>): Record<JobStatus, number> {
  return { queued: c.queued, running: c.running, completed: Math.round(c.completed), failed: Math.round(c.failed), cancelled: Math.round(c.cancelled) };
}

/**
 * A partition's history from its statistics: estimated rows less the live
 * jobs counted exactly, split by the sampled frequencies of the history
 * statuses (history statuses missing from the most common values share what
 * those leave evenly, as the planner does; queued and running are counted,
 * so none of it goes to them); per queue, split
 * again by the queue column's frequencies (queues too rare to be sampled get
 * none of it: the partition's own figures still hold every row).
 */
function estimateHistory(
  p: PartRow,
  part: { counts: Record<JobStatus, number>; estimated: EstimatedFlags },
  queueOf: (name: string) => { counts: Record<JobStatus, number>; estimated: EstimatedFlags },
): void {
  const freq = new Map<string, number>();
  (p.status_vals ?? []).forEach((v, i) => freq.set(v, p.status_freqs?.[i] ?? 0));
  const missing = HISTORY.filter((s) => !freq.has(s));
  const unsampled = Math.max(0, 1 - (p.status_nulls ?? 0) - [...freq.values()].reduce((a, b) => a + b, 0));
  const share = (s: JobStatus) => freq.get(s) ?? unsampled / Math.max(1, missing.length);
  const weight = HISTORY.reduce((n, s) => n + share(s), 0);
  const history = Math.max(0, (p.rows ?? 0) - LIVE.reduce((n, s) => n + part.counts[s], 0));
  const queues = (p.queue_vals ?? []).map((q, i) => [q, p.queue_freqs?.[i] ?? 0] as const);
  for (const s of HISTORY) {
    const n = weight > 0 ? (history * share(s)) / weight : 0;
    part.counts[s] = Math.round(n);
    part.estimated[s] = true;
    for (const [q, f] of queues) {
      const target = queueOf(q);
      target.counts[s] += n * f;
      target.estimated[s] = true;
    }
  }
}

/** Exact history counts of partitions that have no statistics, through the parent (ranges prune to them; a default partition alone). */
async function countHistory(db: Queryable, parts: PartRow[]) {
  const ranged = parts.filter((p) => !p.is_default);
  const rows: CountRow[] = [];
  const base = `SELECT tableoid::regclass::text AS part, queue, status::text AS status, count(*) AS n, 0 AS ready, NULL::timestamptz AS oldest
       FROM qmaint.jobs WHERE status NOT IN ('queued', 'running') AND `;
  if (ranged.length > 0) {
    const values: unknown[] = [];
    const ranges = ranged.map((p) => {
      values.push(p.lower_bound, p.upper_bound);
      return `(created_at >= $${values.length - 1} AND created_at < $${values.length})`;
    });
    rows.push(...(await db.query<CountRow>(`${base}(${ranges.join(' OR ')}) GROUP BY 1, 2, 3`, values)).rows);
  }
  for (const p of parts.filter((x) => x.is_default))
    rows.push(...(await db.query<CountRow>(`${base}tableoid = $1::regclass GROUP BY 1, 2, 3`, [p.partition])).rows);
  return rows;
}

function isoOrText(d: Date | number | string): string {
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
  const status = checkStatus(filter.status);
  const ids = checkIds(filter.ids);
  const after = filter.after === undefined ? undefined : checkIds([filter.after])![0];
  // Queued and running jobs sit at or above the low-water mark (whoever makes
  // one live below it lowers the mark in the same transaction), so the mark,
  // read first and passed as a value, prunes every partition below it at plan
  // time. Read again afterwards: a job made live below the mark between the
  // two statements lowered it, and the listing runs again with the new mark.
  const live = status === 'queued' || status === 'running';
  let mark: Date | null = live ? await readLowWater(db) : null;
  for (;;) {
    const { text: sql, values } = listJobsQuery({ queue: filter.queue, status, ids, after, limit, lowWater: mark }, text);
    const { rows } = await db.query<ListedRow>(sql, values);
    if (mark === null) return rows.map((r) => jobRow(r, text));
    const again = await readLowWater(db);
    if (again !== null && again.getTime() >= mark.getTime()) return rows.map((r) => jobRow(r, text));
    mark = again;
  }
}

/** The low-water mark of qmaint.jobs (no queued or running job is below it), or null when it has none. */
export async function readLowWater(db: Queryable): Promise<Date | null> {
  const { rows } = await db.query<{ low_water: Date | number | null }>(`SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`);
  const v = rows[0]?.low_water;
  return v instanceof Date && Number.isFinite(v.getTime()) ? v : null;
}

interface ListedRow {
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
}

/**
 * The list statement for one filter: only the conditions given (values as
 * parameters), so the planner can prune partitions by the low-water bound and
 * use the partial index of a status; newest first by id, keyset paging by id.
 */
export function listJobsQuery(
  f: { queue?: string; status?: JobStatus; ids?: string[]; after?: string; limit: number; lowWater: Date | null },
  payloadText: boolean,
): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const where: string[] = [];
  const param = (v: unknown) => {
    values.push(v);
    return `$${values.length}`;
  };
  if (f.queue !== undefined) where.push(`queue = ${param(f.queue)}`);
  if (f.status !== undefined) where.push(`status = ${param(f.status)}::qmaint.job_status`);
  const mark = f.lowWater === null ? null : param(f.lowWater);
  if (mark !== null) where.push(`created_at >= ${mark}::timestamptz`);
  if (f.ids !== undefined) where.push(`id = ANY (${param(f.ids)}::bigint[])`);
  if (f.after !== undefined) where.push(`id < ${param(f.after)}::bigint`);
  const columns = `id, queue, status::text AS status, priority, retry_count, max_retries, run_at, created_at, updated_at,
            locked_by, locked_until, last_error, ${payloadText ? 'payload::text' : 'payload'} AS payload`;
  const filter = where.length > 0 ? `\n      WHERE ${where.join('\n        AND ')}` : '';
  if (f.status === 'queued' || f.status === 'running') {
    // Live jobs: their keys are read whole through the status's partial index
    // (the materialized CTE keeps the planner from walking each partition's
    // primary key backwards instead, which reads every finished row of a
    // partition holding no live job before it can give its first), the
    // newest `limit` of them kept, and only those rows fetched, each by its
    // primary key in the one partition holding it (run-time pruning; the
    // LIMIT 1 keeps the lookup a per-row probe rather than a join the
    // planner could turn into scans of every partition).
    return {
      text: `WITH live AS MATERIALIZED (SELECT id, created_at FROM qmaint.jobs${filter}),
     page AS (SELECT id, created_at FROM live ORDER BY id DESC LIMIT ${param(f.limit)})
SELECT j.*
  FROM page
 CROSS JOIN LATERAL (SELECT ${columns}
                       FROM qmaint.jobs
                      WHERE id = page.id AND created_at = page.created_at${mark === null ? '' : ` AND created_at >= ${mark}::timestamptz`}
                      LIMIT 1) j
 ORDER BY j.id DESC`,
      values,
    };
  }
  return {
    text: `SELECT ${columns}
       FROM qmaint.jobs${filter}
      ORDER BY id DESC
      LIMIT ${param(f.limit)}`,
    values,
  };
}

function jobRow(r: ListedRow, text: boolean): JobRow {
  return {
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
  };
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
  // Counted as the action finds them: each status through its partial index, and
  // for a cancel only from the low-water mark on (where every live job is), as
  // a value the planner prunes the partitions below it with.
  const { rows } =
    action === 'retry'
      ? await db.query<{ status: string; n: string }>(
          `SELECT 'failed' AS status, count(*) AS n FROM qmaint.jobs
            WHERE status = 'failed' AND ($1::bigint[] IS NULL OR id = ANY ($1)) AND ($2::text IS NULL OR queue = $2)`,
          [ids, queue],
        )
      : await db.query<{ status: string; n: string }>(
          `SELECT status::text AS status, count(*) AS n FROM qmaint.jobs
            WHERE (status = 'queued' OR status = 'running') AND created_at >= $3::timestamptz
              AND ($1::bigint[] IS NULL OR id = ANY ($1)) AND ($2::text IS NULL OR queue = $2)
            GROUP BY 1`,
          [ids, queue, (await readLowWater(db)) ?? '-infinity'],
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
