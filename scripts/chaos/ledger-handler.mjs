// The `qmaint work --handler` module of the chaos run (scripts/chaos/harness.ts):
// each execution writes one row (job id, queue, attempt, this worker's pid) into
// chaos_ledger in the queue's own database, then returns. Half the jobs take a
// few milliseconds more, so a kill often lands while handlers are running.
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4, application_name: `chaos-ledger:${process.pid}` });
// A ledger connection the harness terminated while idle: the pool drops it and opens another.
pool.on('error', () => undefined);

export default async function handle(job) {
  await pool.query('INSERT INTO chaos_ledger (job_id, queue, retry_count, pid) VALUES ($1, $2, $3, $4)', [job.id, job.queue, job.retryCount, process.pid]);
  if (Number(job.id) % 2 === 0) await new Promise((resolve) => setTimeout(resolve, Number(job.id) % 7));
}

export const close = () => pool.end();
