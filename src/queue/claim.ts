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
  SELECT id, created_at
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
 WHERE j.id = next.id
   AND j.created_at = next.created_at
   AND j.created_at >= $2
   AND j.queue = $1
RETURNING j.id, j.queue, j.payload, j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.attempt, j.timeout_ms`;

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
