/**
 * Queue control: pause and resume (the claim reads qmaint.queues.paused),
 * dead-letter queues (a job failing for good moves to its queue's dead-letter
 * queue, trigger qmaint_job_finished) and redrive, and the list of queues with
 * their state, depth and rate. The state changes are SQL functions
 * (sql/functions/02_queue.sql); this module calls them and says what it would
 * call for a dry run.
 */
import pg from 'pg';
import type { Queryable } from '../db.js';
import { badInput, sqlState } from '../errors.js';
import { checkIds, readLowWater } from './admin.js';
import { checkQueueName } from './enqueue.js';

/** A statement with its values, and the same with the values written in (what --dry-run prints). */
export interface QueueStatement {
  text: string;
  values: (string | boolean | Date | string[] | null)[];
  literal: string;
  lockLevel: string;
  reason: string;
}

const lit = (v: string | null) => (v === null ? 'NULL' : pg.escapeLiteral(v));

/** What pauseQueue / resumeQueue run. */
export function pauseStatement(queue: string, paused: boolean): QueueStatement {
  checkQueueName(queue);
  return {
    text: 'SELECT qmaint.set_queue_paused($1, $2) AS was',
    values: [queue, paused],
    literal: `SELECT qmaint.set_queue_paused(${lit(queue)}, ${paused})`,
    lockLevel: 'ROW EXCLUSIVE on qmaint.queues (one row)',
    reason: paused ? `pause queue ${queue}: consumers claim nothing from it, running jobs finish` : `resume queue ${queue}: consumers claim from it again`,
  };
}

/** The result of pausing or resuming a queue. */
export interface PauseResult {
  queue: string;
  paused: boolean;
  /** False when the queue already was in that state. */
  changed: boolean;
}

async function setPaused(db: Queryable, queue: string, paused: boolean): Promise<PauseResult> {
  const st = pauseStatement(queue, paused);
  const { rows } = await db.query<{ was: boolean }>(st.text, st.values);
  return { queue, paused, changed: rows[0]!.was !== paused };
}

/** Pause a queue: no consumer claims from it until resumeQueue; running jobs finish. */
export function pauseQueue(db: Queryable, queue: string): Promise<PauseResult> {
  return setPaused(db, queue, true);
}

/** Resume a paused queue (and wake its idle consumers). */
export function resumeQueue(db: Queryable, queue: string): Promise<PauseResult> {
  return setPaused(db, queue, false);
}

/** What setDeadLetter runs. */
export function deadLetterStatement(queue: string, deadLetter: string | null): QueueStatement {
  checkQueueName(queue);
  if (deadLetter !== null) checkQueueName(deadLetter);
  if (deadLetter === queue) throw badInput(`queue ${queue} cannot be its own dead-letter queue; name another queue`);
  return {
    text: 'SELECT qmaint.set_dead_letter($1, $2)',
    values: [queue, deadLetter],
    literal: `SELECT qmaint.set_dead_letter(${lit(queue)}, ${lit(deadLetter)})`,
    lockLevel: 'ROW EXCLUSIVE on qmaint.queues (one row)',
    reason:
      deadLetter === null
        ? `queue ${queue} keeps its jobs that fail for good`
        : `jobs of queue ${queue} that fail for good move to queue ${deadLetter} (still failed; jobs redrive puts them back)`,
  };
}

/** Name (or with null clear) the dead-letter queue of a queue. */
export async function setDeadLetter(db: Queryable, queue: string, deadLetter: string | null): Promise<void> {
  const st = deadLetterStatement(queue, deadLetter);
  await db.query(st.text, st.values);
}

/** Which dead-lettered jobs to put back, and where. */
export interface RedriveSelector {
  /** The dead-letter queue the jobs are in. */
  from: string;
  /** Where they go; default the one queue whose dead-letter queue `from` is. */
  to?: string;
  /** Only these jobs of `from` (default: all its failed jobs). */
  ids?: string[];
}

/** What redriveJobs runs. */
export function redriveStatement(sel: RedriveSelector, now: Date): QueueStatement {
  checkQueueName(sel.from);
  if (sel.to !== undefined) checkQueueName(sel.to);
  if (sel.to === sel.from) throw badInput(`jobs cannot be redriven into the queue they are in (${sel.from}); retry them instead`);
  const ids = checkIds(sel.ids) ?? null;
  const to = sel.to ?? null;
  return {
    text: 'SELECT id FROM qmaint.redrive_jobs($1, $2, $3::bigint[], $4::timestamptz) AS id',
    values: [sel.from, to, ids, now],
    literal: `SELECT id FROM qmaint.redrive_jobs(${lit(sel.from)}, ${lit(to)}, ${ids === null ? 'NULL' : `ARRAY[${ids.join(', ')}]::bigint[]`}, ${lit(now.toISOString())}::timestamptz) AS id`,
    lockLevel: 'ROW EXCLUSIVE on qmaint.jobs and qmaint.job_keys (row locks on the matching jobs)',
    reason: `put the failed jobs of ${sel.from} back in ${to ?? 'the queue whose dead-letter queue it is'} (retries from 0; a keyed job whose key a live job holds stays)`,
  };
}

/** Put the failed jobs of a dead-letter queue back in a queue (retry_count 0, ready now). Returns their ids. */
export async function redriveJobs(db: Queryable, sel: RedriveSelector, now: Date): Promise<string[]> {
  const st = redriveStatement(sel, now);
  try {
    const { rows } = await db.query<{ id: string }>(st.text, st.values);
    return rows.map((r) => r.id);
  } catch (err) {
    // qmaint.redrive_jobs refusing its arguments (no single source queue to go back to).
    if (sqlState(err) === '22023') throw badInput(`${(err as Error).message}; name the queue the jobs go back to`);
    throw err;
  }
}

/** One queue as `listQueues` reports it: paused state, dead-letter queue, depth and completion rate. */
export interface QueueInfo {
  queue: string;
  paused: boolean;
  deadLetter: string | null;
  /** Queued jobs (ready now or later). */
  queued: number;
  /** Queued and ready to run now. */
  ready: number;
  running: number;
  /** Jobs completed in the last `windowSeconds`, per minute (jobs in partitions from the low-water mark on: see {@link listQueues}). */
  completedPerMinute: number;
  windowSeconds: number;
}

/**
 * Every queue that has a row in qmaint.queues (a consumer ran, it was
 * paused, or it has a dead-letter queue) or live jobs: paused state, depth
 * (through the partial claim and running-jobs indexes, in the partitions from
 * the low-water mark on, where every live job is) and the completion rate over
 * the last `windowSeconds` (default 300). The rate reads the completed jobs of
 * the partitions from the low-water mark on, never the whole history: a job
 * that completed in the window in a partition the mark has since passed (rotate
 * moved it on because that partition holds no live job any more) is not
 * counted, so just after the mark moves the rate can read low for one window.
 */
export async function listQueues(db: Queryable, now: Date, windowSeconds = 300): Promise<QueueInfo[]> {
  if (!Number.isInteger(windowSeconds) || windowSeconds < 1 || windowSeconds > 86_400)
    throw badInput(`the rate window must be a whole number of seconds from 1 to 86400, got ${windowSeconds}`);
  // Live jobs sit at or above the low-water mark, so the mark, passed as a
  // value, prunes every partition below it at plan time (as listJobs does; a
  // job made live below the mark meanwhile lowered it: read it again and
  // count again). Completions are counted from the mark on too: see the TSDoc.
  let mark = await readLowWater(db);
  for (;;) {
    const counted = await countQueues(db, now, windowSeconds, mark);
    const again = mark === null ? null : await readLowWater(db);
    if (mark === null || (again !== null && again.getTime() >= mark.getTime())) return counted;
    mark = again;
  }
}

async function countQueues(db: Queryable, now: Date, windowSeconds: number, mark: Date | null): Promise<QueueInfo[]> {
  const { rows } = await db.query<{
    queue: string;
    paused: boolean | null;
    dead_letter: string | null;
    queued: number;
    ready: number;
    running: number;
    completed: number;
  }>(
    `WITH live AS (
       SELECT queue, count(*)::int AS queued, count(*) FILTER (WHERE run_at <= $1)::int AS ready, 0 AS running
         FROM qmaint.jobs WHERE status = 'queued' AND created_at >= $3::timestamptz GROUP BY queue
       UNION ALL
       SELECT queue, 0, 0, count(*)::int FROM qmaint.jobs WHERE status = 'running' AND created_at >= $3::timestamptz GROUP BY queue
     ), done AS (
       SELECT queue, count(*)::int AS completed FROM qmaint.jobs
        WHERE status = 'completed' AND created_at >= $3::timestamptz AND updated_at > $1::timestamptz - make_interval(secs => $2) AND updated_at <= $1
        GROUP BY queue
     ), names AS (
       SELECT queue FROM qmaint.queues UNION SELECT queue FROM live
     )
     SELECT n.queue, q.paused, q.dead_letter,
            coalesce(sum(l.queued), 0)::int AS queued, coalesce(sum(l.ready), 0)::int AS ready, coalesce(sum(l.running), 0)::int AS running,
            coalesce(max(d.completed), 0)::int AS completed
       FROM names n
       LEFT JOIN qmaint.queues q ON q.queue = n.queue
       LEFT JOIN live l ON l.queue = n.queue
       LEFT JOIN done d ON d.queue = n.queue
      GROUP BY n.queue, q.paused, q.dead_letter
      ORDER BY n.queue`,
    [now, windowSeconds, mark ?? '-infinity'],
  );
  return rows.map((r) => ({
    queue: r.queue,
    paused: r.paused ?? false,
    deadLetter: r.dead_letter,
    queued: r.queued,
    ready: r.ready,
    running: r.running,
    completedPerMinute: Math.round((r.completed * 60 * 100) / windowSeconds) / 100,
    windowSeconds,
  }));
}
