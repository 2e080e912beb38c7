/**
 * The claim statement, in exactly one place: the consumer runs it and
 * `qmaint explain dequeue` explains it.
 *
 * One statement picks a batch of ready jobs of one queue with
 * FOR UPDATE SKIP LOCKED over the partial claim index, marks them running under
 * a lease, and returns them; the caller commits at once. `created_at >= $2`
 * (the low-water mark, see lowWaterQuery) lets the planner prune partitions
 * that hold no live jobs, in the SELECT and in the UPDATE.
 */
export interface ClaimParams {
  queue: string;
  batch: number;
  leaseSeconds: number;
  workerId: string;
  /** Lower bound on created_at below which no queued/running job exists (null: no bound). */
  lowWater: Date | null;
}

export const CLAIM_SQL = `WITH next AS (
  SELECT id, created_at
    FROM qmaint.jobs
   WHERE queue = $1
     AND status = 'queued'
     AND run_at <= now()
     AND created_at >= $2
   ORDER BY priority DESC, run_at, id
   LIMIT $3
   FOR UPDATE SKIP LOCKED
)
UPDATE qmaint.jobs AS j
   SET status = 'running',
       locked_by = $4,
       locked_until = now() + make_interval(secs => $5),
       updated_at = now()
  FROM next
 WHERE j.id = next.id
   AND j.created_at = next.created_at
   AND j.created_at >= $2
RETURNING j.id, j.queue, j.payload, j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.locked_until`;

export function claimQuery(params: ClaimParams): { text: string; values: unknown[] } {
  return {
    text: CLAIM_SQL,
    values: [params.queue, params.lowWater ?? '-infinity', params.batch, params.workerId, params.leaseSeconds],
  };
}

/** The current low-water mark of qmaint.jobs (rotate advances it). */
export const LOW_WATER_SQL = `SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`;
