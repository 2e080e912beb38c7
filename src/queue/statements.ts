/**
 * The statements a consumer runs after the claim. Every one of them matches a
 * job by (id, created_at) arrays, so the planner prunes to the partitions that
 * hold the batch, and by (status, locked_by), so a consumer that lost its
 * lease can never touch a job someone else now holds.
 *
 * `status::text = 'running'` rather than `status = 'running'`: the plain form
 * lets the planner pick the partial rescue index (status = 'running'), whose
 * dead entries of finished jobs pile up while the xmin horizon is held, and
 * scan all of it for every batch. Written this way only the primary key
 * (id, created_at) serves these statements: one probe per job.
 */

/** $1 ids, $2 created_at, $3 worker. */
export const COMPLETE_SQL = `UPDATE qmaint.jobs
   SET status = 'completed', locked_until = NULL, updated_at = now()
 WHERE id = ANY ($1::bigint[]) AND created_at = ANY ($2::timestamptz[])
   AND status::text = 'running' AND locked_by = $3`;

/**
 * $1 ids, $2 created_at, $3 errors, $4 worker, $5 backoff base seconds, $6 cap seconds.
 * Retry with backoff while retries remain, else failed; last_error kept either way.
 */
export const FAIL_SQL = `UPDATE qmaint.jobs j
   SET status = CASE WHEN j.retry_count < j.max_retries THEN 'queued' ELSE 'failed' END::qmaint.job_status,
       retry_count = CASE WHEN j.retry_count < j.max_retries THEN j.retry_count + 1 ELSE j.retry_count END,
       run_at = CASE WHEN j.retry_count < j.max_retries
                     THEN now() + qmaint.retry_delay(j.retry_count + 1, make_interval(secs => $5), make_interval(secs => $6))
                     ELSE j.run_at END,
       last_error = f.error,
       locked_by = NULL,
       locked_until = NULL,
       updated_at = now()
  FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS f(id, created_at, error)
 WHERE j.id = f.id AND j.created_at = f.created_at
   AND j.created_at = ANY ($2::timestamptz[])
   AND j.status::text = 'running' AND j.locked_by = $4
RETURNING j.id, j.status, j.retry_count, j.run_at`;

/** $1 ids, $2 created_at, $3 worker, $4 lease seconds. Returns the ids still held. */
export const HEARTBEAT_SQL = `UPDATE qmaint.jobs
   SET locked_until = now() + make_interval(secs => $4)
 WHERE id = ANY ($1::bigint[]) AND created_at = ANY ($2::timestamptz[])
   AND status::text = 'running' AND locked_by = $3
RETURNING id`;

/** $1 ids, $2 created_at, $3 worker. Claimed but never started: back to the queue as they were. */
export const RELEASE_SQL = `UPDATE qmaint.jobs
   SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = now()
 WHERE id = ANY ($1::bigint[]) AND created_at = ANY ($2::timestamptz[])
   AND status::text = 'running' AND locked_by = $3`;

/** $1 queue. Is any job of the queue ready to run now (whatever the low-water mark says)? */
export const READY_SQL = `SELECT EXISTS (
  SELECT 1 FROM qmaint.jobs WHERE queue = $1 AND status = 'queued' AND run_at <= now()
) AS ready`;

export const RESCUE_SQL = `SELECT qmaint.rescue_expired() AS result`;
