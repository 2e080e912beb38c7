// The numbers behind docs/scale-out.md: on the server of DATABASE_URL (a
// throwaway one: it enqueues and drains jobs in queue 'scale_measure'),
// enqueue N jobs by COPY, drain them with one library consumer (concurrency
// 10, batch 100, no-op handler), then VACUUM the partitions that hold them.
// WAL is the server-wide pg_current_wal_lsn() difference around each phase
// (run it on an otherwise idle server). Usage:
//   DATABASE_URL=postgres://... npx tsx scripts/scale/measure.ts [N]
import { connect } from '../../src/db.js';
import { migrate } from '../../src/migrate.js';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueueMany } from '../../src/queue/enqueue.js';

const n = Number(process.argv[2] ?? 100_000);
const db = await connect({ databaseUrl: process.env.DATABASE_URL, max: 12 });
const lsn = async () => (await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
const walSince = async (from: string) =>
  Number((await db.query<{ b: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS b', [from])).rows[0]!.b);
try {
  await migrate(db);
  await db.query('CHECKPOINT');
  let mark = await lsn();
  let t = Date.now();
  for (let done = 0; done < n; done += 10_000) {
    await enqueueMany(
      db,
      'scale_measure',
      Array.from({ length: Math.min(10_000, n - done) }, (_, i) => ({ i: done + i })),
    );
  }
  const enqueue = { ms: Date.now() - t, wal: await walSince(mark) };
  mark = await lsn();
  t = Date.now();
  const consumer = new Consumer(db, {
    queue: 'scale_measure',
    handler: () => Promise.resolve(),
    concurrency: 10,
    batch: 100,
    leaseSeconds: 60,
    drain: true,
    listen: false,
  });
  await consumer.start();
  await consumer.done;
  const drain = { ms: Date.now() - t, wal: await walSince(mark) };
  const { rows: parts } = await db.query<{ p: string }>(`SELECT DISTINCT tableoid::regclass::text AS p FROM qmaint.jobs WHERE queue = 'scale_measure'`);
  mark = await lsn();
  t = Date.now();
  for (const p of parts) await db.query(`VACUUM ${p.p}`);
  const vacuum = { ms: Date.now() - t, wal: await walSince(mark) };
  const { rows: v } = await db.query<{ v: string }>('SHOW server_version');
  const per = (x: { ms: number; wal: number }) => ({
    ...x,
    walPerJob: Math.round(x.wal / n),
    perMillion: { seconds: Math.round((x.ms / n) * 1000), walMB: Math.round(x.wal / n) },
  });
  console.log(
    JSON.stringify(
      { server: v[0]!.v, jobs: n, enqueue: per(enqueue), drain: { ...per(drain), jobsPerSecond: Math.round(n / (drain.ms / 1000)) }, vacuum: per(vacuum) },
      null,
      2,
    ),
  );
  await db.query(`DELETE FROM qmaint.jobs WHERE queue = 'scale_measure'`);
} finally {
  await db.close();
}
