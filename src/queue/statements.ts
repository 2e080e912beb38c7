/**
 * The statements a consumer runs after the claim. Every one of them matches a
 * job by its key and attempt, (id, created_at, attempt) from unnest()ed
 * arrays, and by (status, locked_by): the claim bumps `attempt`, so the
 * result of an attempt whose lease ran out can never touch the job again,
 * whether someone else or this very consumer (same worker id) holds it now.
 * Each returns the ids it changed, so the caller knows which results landed.
 * `created_at = ANY ($2)` repeats the keys as an array so the planner prunes
 * to the partitions that hold the batch.
 *
 * `status::text = 'running'` rather than `status = 'running'`: the plain form
 * lets the planner pick the partial rescue index (status = 'running'), whose
 * dead entries of finished jobs pile up while the xmin horizon is held, and
 * scan all of it for every batch. Written this way only the primary key
 * (id, created_at) serves these statements: one probe per job.
 */

/** $1 ids, $2 created_at, $3 attempts (one per job), $4 worker. Returns the ids completed. */
export const COMPLETE_SQL = `UPDATE qmaint.jobs j
   SET status = 'completed', locked_until = NULL, updated_at = now()
  FROM unnest($1::bigint[], $2::timestamptz[], $3::integer[]) AS f(id, created_at, attempt)
 WHERE j.id = f.id AND j.created_at = f.created_at AND j.attempt = f.attempt
   AND j.created_at = ANY ($2::timestamptz[])
   AND j.status::text = 'running' AND j.locked_by = $4
RETURNING j.id`;

/**
 * $1 ids, $2 created_at, $3 attempts, $4 errors, $5 worker, $6 backoff base
 * seconds, $7 cap seconds. Retry with backoff while retries remain, else
 * failed; last_error kept either way. Returns the rows it changed.
 */
export const FAIL_SQL = `UPDATE qmaint.jobs j
   SET status = CASE WHEN j.retry_count < j.max_retries THEN 'queued' ELSE 'failed' END::qmaint.job_status,
       retry_count = CASE WHEN j.retry_count < j.max_retries THEN j.retry_count + 1 ELSE j.retry_count END,
       run_at = CASE WHEN j.retry_count < j.max_retries
                     THEN now() + qmaint.retry_delay(j.retry_count + 1, make_interval(secs => $6), make_interval(secs => $7))
                     ELSE j.run_at END,
       last_error = f.error,
       locked_by = NULL,
       locked_until = NULL,
       updated_at = now()
  FROM unnest($1::bigint[], $2::timestamptz[], $3::integer[], $4::text[]) AS f(id, created_at, attempt, error)
 WHERE j.id = f.id AND j.created_at = f.created_at AND j.attempt = f.attempt
   AND j.created_at = ANY ($2::timestamptz[])
   AND j.status::text = 'running' AND j.locked_by = $5
RETURNING j.id, j.status, j.retry_count, j.run_at`;

/** $1 ids, $2 created_at, $3 attempts, $4 worker, $5 lease seconds. Returns the ids still held. */
export const HEARTBEAT_SQL = `UPDATE qmaint.jobs j
   SET locked_until = now() + make_interval(secs => $5)
  FROM unnest($1::bigint[], $2::timestamptz[], $3::integer[]) AS f(id, created_at, attempt)
 WHERE j.id = f.id AND j.created_at = f.created_at AND j.attempt = f.attempt
   AND j.created_at = ANY ($2::timestamptz[])
   AND j.status::text = 'running' AND j.locked_by = $4
RETURNING j.id`;

/**
 * $1 ids, $2 created_at, $3 attempts, $4 worker. Claimed but never started:
 * back to the queue as they were (retry_count unchanged). Returns the ids
 * put back.
 */
export const RELEASE_SQL = `UPDATE qmaint.jobs j
   SET status = 'queued', locked_by = NULL, locked_until = NULL, updated_at = now()
  FROM unnest($1::bigint[], $2::timestamptz[], $3::integer[]) AS f(id, created_at, attempt)
 WHERE j.id = f.id AND j.created_at = f.created_at AND j.attempt = f.attempt
   AND j.created_at = ANY ($2::timestamptz[])
   AND j.status::text = 'running' AND j.locked_by = $4
RETURNING j.id`;

/** $1 queue. Is any job of the queue ready to run now (whatever the low-water mark says)? */
export const READY_SQL = `SELECT EXISTS (
  SELECT 1 FROM qmaint.jobs WHERE queue = $1 AND status = 'queued' AND run_at <= now()
) AS ready`;

export const RESCUE_SQL = `SELECT qmaint.rescue_expired() AS result`;
