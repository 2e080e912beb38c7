import pg from 'pg';
import type { SqlValue } from '../db.js';

/**
 * The claim statement, in exactly one place: the consumer runs it and
 * `qmaint explain dequeue` explains it.
 *
 * One statement picks a batch of ready jobs of one queue with
 * FOR UPDATE SKIP LOCKED over the partial claim index, marks them running under
 * a lease, and returns them; the caller commits at once. Each claim is a new
 * attempt (attempt + 1): the number fences every statement that follows
 * (statements.ts), so a stale attempt can never change a newer one. `created_at >= $2`
 * (the low-water mark, see lowWaterQuery) lets the planner prune partitions
 * that hold no live jobs, in the SELECT and in the UPDATE.
 *
 * The UPDATE finds each locked row again by its ctid, in the one partition
 * its created_at prunes to at run time: one heap fetch a job, no index probe.
 * Joined by key alone, the planner costed a probe of every partition from the
 * mark on for each row (it does not count run-time pruning) and, with a mark
 * a day back over small hourly partitions, hashed a sequential scan of all of
 * them instead: 7,081 buffers and 66 ms for a claim of 100 at 10M jobs in
 * 1,000 partitions, against 1,140 buffers and 5 ms now (partitions of a few
 * hundred rows it may still read whole, which costs less). The row's ctid is the
 * locked version's. Should that version be newer than the statement's
 * snapshot (changed and committed between the two), the UPDATE does not see
 * it and the job is left for the next claim, still queued; the key
 * conditions stay as a check.
 *
 * `after` is an optional keyset start: only jobs of the same priority that
 * come after it in claim order. Claimed rows leave dead entries in the claim
 * index until vacuum (or for as long as an old snapshot holds the xmin
 * horizon back); starting after the last claimed key keeps each claim from
 * stepping over that prefix again. Unnamed statements are planned with their
 * parameter values, so the NULL arm folds away and the keyset becomes an
 * index bound. The bound's values sit in scalar subqueries on purpose: the
 * planner then cannot estimate "rows after the cursor" from (usually stale)
 * statistics as almost none, which made it read and sort every remaining
 * row instead of walking the index in order.
 *
 * created_at and run_at come back as text, which the consumer turns into
 * Dates with parseTimestamptz (node-pg's parser for timestamptz, run on two
 * columns of every claimed job, cost about a microsecond per job).
 *
 * A paused queue (qmaint.queues.paused, `qmaint queues pause`) is claimed
 * from by nobody: the NOT EXISTS names no column of jobs, so the planner
 * evaluates it once per claim (a one-time filter over one primary-key probe
 * of the small queues table) and skips the index scan entirely when paused.
 */
export interface ClaimParams {
  queue: string;
  batch: number;
  leaseSeconds: number;
  workerId: string;
  /** Lower bound on created_at below which no queued/running job exists (null: no bound). */
  lowWater: Date | null;
  /** Keyset start: claim only after this key (same priority). Null/absent: from the head of the queue. */
  after?: ClaimCursor | null;
}

/** A position in claim order: (priority DESC, run_at, id). */
export interface ClaimCursor {
  priority: number;
  runAt: Date;
  id: string;
}

export const CLAIM_SQL = `WITH next AS (
  SELECT id, created_at, ctid
    FROM qmaint.jobs
   WHERE queue = $1
     AND status = 'queued'
     AND run_at <= now()
     AND created_at >= $2
     AND ($6::integer IS NULL OR (priority = $6 AND ROW(run_at, id) > ROW((SELECT $7::timestamptz), (SELECT $8::bigint))))
     AND NOT EXISTS (SELECT 1 FROM qmaint.queues p WHERE p.queue = $1 AND p.paused)
   ORDER BY priority DESC, run_at, id
   LIMIT $3
   FOR UPDATE SKIP LOCKED
)
UPDATE qmaint.jobs AS j
   SET status = 'running',
       locked_by = $4,
       locked_until = now() + make_interval(secs => $5),
       attempt = j.attempt + 1,
       updated_at = now()
  FROM next
 WHERE j.ctid = next.ctid
   AND j.id = next.id
   AND j.created_at = next.created_at
   AND j.created_at >= $2
   AND j.queue = $1
RETURNING j.id, j.queue, j.payload, j.priority, j.retry_count, j.max_retries, j.created_at::text, j.run_at::text, j.attempt, j.timeout_ms`;

export function claimQuery(params: ClaimParams): { text: string; values: SqlValue[] } {
  return {
    text: CLAIM_SQL,
    values: [
      params.queue,
      params.lowWater ?? '-infinity',
      params.batch,
      params.workerId,
      params.leaseSeconds,
      params.after?.priority ?? null,
      params.after?.runAt ?? null,
      params.after?.id ?? null,
    ],
  };
}

/** The current low-water mark of qmaint.jobs (rotate advances it). */
export const LOW_WATER_SQL = `SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`;

const digit = (s: string, i: number) => s.charCodeAt(i) - 48;
const digits = (s: string, from: number, n: number) => {
  let v = 0;
  for (let i = from; i < from + n; i++) {
    const d = digit(s, i);
    if (d < 0 || d > 9) return NaN;
    v = v * 10 + d;
  }
  return v;
};

/**
 * A timestamptz as PostgreSQL writes it in the ISO DateStyle
 * (`2026-12-02 11:35:12.123456+05:30`), as a Date of whole milliseconds
 * (the fraction truncated, as node-pg does). Any other shape (years before
 * 100 or after 9999, BC, infinity, an offset with seconds, another
 * DateStyle) goes to node-pg's parser for timestamptz, so the result is
 * never other than node-pg's own.
 */
export function parseTimestamptz(text: string): Date {
  const n = text.length;
  if (n >= 22 && text[4] === '-' && text[7] === '-' && text[10] === ' ' && text[13] === ':' && text[16] === ':') {
    let i = 19;
    let ms = 0;
    if (text[i] === '.') {
      const from = ++i;
      while (i < n && digit(text, i) >= 0 && digit(text, i) <= 9) i++;
      const first = Math.min(i - from, 3);
      ms = digits(text, from, first) * 10 ** (3 - first);
    }
    const sign = text[i];
    const rest = n - i - 1;
    if ((sign === '+' || sign === '-') && (rest === 2 || (rest === 5 && text[i + 3] === ':'))) {
      const offset = digits(text, i + 1, 2) * 60 + (rest === 5 ? digits(text, i + 4, 2) : 0);
      const year = digits(text, 0, 4);
      if (year >= 100) {
        const t =
          Date.UTC(year, digits(text, 5, 2) - 1, digits(text, 8, 2), digits(text, 11, 2), digits(text, 14, 2), digits(text, 17, 2), ms) -
          (sign === '+' ? offset : -offset) * 60_000;
        if (Number.isFinite(t)) return new Date(t);
      }
    }
  }
  const parser = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ, 'text') as (text: string) => unknown;
  return parser(text) as Date;
}
