// The `qmaint work --handler` module of the failover run: each execution writes
// one row (job id, payload n, attempt, this worker's pid) into failover_ledger
// through a pool that follows the primary (the library's clientOptions), then returns.
import pg from 'pg';
import { clientOptions } from '../../dist/index.js';

const pool = new pg.Pool({
  ...clientOptions(process.env.DATABASE_URL, 'DATABASE_URL'),
  max: 4,
  application_name: `failover-ledger:${process.pid}`,
  connectionTimeoutMillis: 2000,
});
pool.on('error', () => undefined);

export default async function handle(job) {
  await pool.query('INSERT INTO failover_ledger (job_id, n, attempt, pid) VALUES ($1, $2, $3, $4)', [job.id, job.payload.n, job.attempt, process.pid]);
}

export const close = () => pool.end();
