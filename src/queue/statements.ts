/**
 * The statements a consumer runs after the claim. Every one of them finds its
 * jobs through the primary key, `id = ANY ($1) AND created_at = ANY ($2)` (so
 * the planner prunes to the partitions that hold the batch and probes the
 * key), matches (status, locked_by), and is fenced by attempt: the claim bumps
 * `attempt`, and each statement only changes a job whose fence key
 * (`id.attempt`, see fenceKey) is one it holds. The result of an attempt whose
 * lease ran out can never touch the job again, whether someone else or this
 * very consumer (same worker id) holds it now. Each returns the ids it
 * changed, so the caller knows which results landed.
 *
 * The fence is one text array compared with `= ANY`: PostgreSQL hashes a
 * constant array, so the check costs the same per row whatever the batch
 * size (a join against unnest() of (id, attempt) pairs measured 13x slower
 * at 100 jobs: the planner expects one row and loops).
 *
 * `status::text = 'running'` rather than `status = 'running'`: the plain form
 * lets the planner pick the partial index of running jobs (jobs_running_idx), whose
 * dead entries of finished jobs pile up while the xmin horizon is held, and
 * scan all of it for every batch. Written this way only the primary key
 * (id, created_at) serves these statements: one probe per job.
 */

/** The fence key of one attempt of a job, as the statements below compare it. */
export function fenceKey(id: string, attempt: number): string {
  return `${id}.${attempt}`;
}

const FENCE = `(j.id::text || '.' || j.attempt::text)`;

/** $1 ids, $2 created_at keys, $3 fence keys, $4 worker, $5 queue. Returns the ids completed. */
export const COMPLETE_SQL = `UPDATE qmaint.jobs j
   SET status = 'completed', locked_until = NULL, updated_at = now()
 WHERE j.id = ANY ($1::bigint[]) AND j.created_at = ANY ($2::timestamptz[])
   AND ${FENCE} = ANY ($3::text[])
   AND j.status::text = 'running' AND j.locked_by = $4
   AND j.queue = $5
RETURNING j.id`;

/**
 * $1 ids, $2 created_at (one per job), $3 fence keys, $4 errors (one per
 * job), $5 worker, $6 backoff base seconds, $7 cap seconds, $8 queue. qmaint.next_try()
 * decides, as it does for rescue: retry with backoff while retries remain,
 * else failed; last_error kept either way.
 * Returns the rows it changed.
 */
export const FAIL_SQL = `UPDATE qmaint.jobs j
   SET (status, retry_count, run_at) = (SELECT n.status, n.retry_count, n.run_at
                                          FROM qmaint.next_try(j.retry_count, j.max_retries, j.run_at, now(),
                                                               make_interval(secs => $6), make_interval(secs => $7)) n),
       last_error = f.error,
       locked_by = NULL,
       locked_until = NULL,
       updated_at = now()
  FROM unnest($1::bigint[], $2::timestamptz[], $4::text[]) AS f(id, created_at, error)
 WHERE j.id = ANY ($1::bigint[]) AND j.created_at = ANY ($2::timestamptz[])
   AND j.id = f.id AND j.created_at = f.created_at
   AND ${FENCE} = ANY ($3::text[])
   AND j.status::text = 'running' AND j.locked_by = $5
   AND j.queue = $8
RETURNING j.id, j.status, j.retry_count, j.run_at`;

/** $1 ids, $2 created_at keys, $3 fence keys, $4 worker, $5 lease seconds, $6 queue. Returns the ids still held. */
export const HEARTBEAT_SQL = `UPDATE qmaint.jobs j
   SET locked_until = now() + make_interval(secs => $5)
 WHERE j.id = ANY ($1::bigint[]) AND j.created_at = ANY ($2::timestamptz[])
   AND ${FENCE} = ANY ($3::text[])
   AND j.status::text = 'running' AND j.locked_by = $4
   AND j.queue = $6
RETURNING j.id`;

/**
 * $1 ids, $2 created_at keys, $3 fence keys, $4 worker, $5 queue. Claimed but never
 * started: back to the queue as they were (retry_count unchanged). Returns
 * the ids put back.
 */
export const RELEASE_SQL = `UPDATE qmaint.jobs j
   SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = now()
 WHERE j.id = ANY ($1::bigint[]) AND j.created_at = ANY ($2::timestamptz[])
   AND ${FENCE} = ANY ($3::text[])
   AND j.status::text = 'running' AND j.locked_by = $4
   AND j.queue = $5
RETURNING j.id`;

/**
 * $1 ids, $2 created_at keys, $3 fence keys, $4 queue. Which of these
 * attempts' jobs were cancelled (qmaint.cancel_jobs leaves attempt as it
 * was): asked when a statement found an attempt no longer holding its job,
 * to tell a cancel from a lost lease. Returns the ids.
 */
export const CANCELLED_SQL = `SELECT j.id
  FROM qmaint.jobs j
 WHERE j.id = ANY ($1::bigint[]) AND j.created_at = ANY ($2::timestamptz[])
   AND ${FENCE} = ANY ($3::text[])
   AND j.status::text = 'cancelled'
   AND j.queue = $4`;

/** The channel qmaint.cancel_jobs() notifies for each running job it cancels; the payload is the attempt's fence key. */
export const CANCEL_CHANNEL = 'qmaint_cancel';

/**
 * $1 queue, $2 the low-water mark ('-infinity' for none). Is any job of the
 * queue ready to run now? A paused queue has none ready: a drain of it ends.
 * The mark comes as a value, read just after a rescue healed it, so the
 * planner prunes every partition below it: without it, a new connection
 * planned all of them (about 1 s at 1,000 partitions) to learn the drain was over.
 */
export const READY_SQL = `SELECT EXISTS (
  SELECT 1 FROM qmaint.jobs WHERE queue = $1 AND status = 'queued' AND run_at <= now() AND created_at >= $2
) AND NOT EXISTS (SELECT 1 FROM qmaint.queues p WHERE p.queue = $1 AND p.paused) AS ready`;

export const RESCUE_SQL = `SELECT qmaint.rescue_expired() AS result`;

/**
 * $1 queue, $2 backoff base seconds, $3 cap seconds: the consumer's retry
 * backoff, recorded for its queue so rescue_expired() puts expired leases
 * back with it too (the consumer started last wins).
 */
export const RECORD_BACKOFF_SQL = `INSERT INTO qmaint.queues AS q (queue, backoff_base, backoff_cap)
VALUES ($1, make_interval(secs => $2), make_interval(secs => $3))
ON CONFLICT (queue) DO UPDATE SET backoff_base = EXCLUDED.backoff_base, backoff_cap = EXCLUDED.backoff_cap, updated_at = now()
 WHERE (q.backoff_base, q.backoff_cap) IS DISTINCT FROM (EXCLUDED.backoff_base, EXCLUDED.backoff_cap)`;
