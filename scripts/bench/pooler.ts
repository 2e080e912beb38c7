// PgBouncer in transaction pooling mode against a direct connection, on the same
// PostgreSQL 15 server in the same run: the whole `qmaint work --drain` process,
// and COPY enqueue. The embedded server has no PgBouncer, so this suite runs on
// the run's PostgreSQL 15 server only (scripts/pg15.sh's cluster, or the pair
// given in QMAINT_BENCH_PG15_URL / QMAINT_BENCH_PGBOUNCER_URL).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type Db } from '../../src/db.js';
import { enqueueMany } from '../../src/queue/enqueue.js';
import { fmt, workDrain, type BenchContext, type BenchResult, type BenchSuite } from './harness.js';

const QUEUE = 'bench';

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = '/' + name;
  return u.toString();
}

async function fill(db: Db, jobs: number): Promise<number> {
  await db.query('TRUNCATE qmaint.jobs');
  let i = 0;
  const start = performance.now();
  await enqueueMany(db, QUEUE, {
    *[Symbol.iterator]() {
      while (i < jobs) yield { n: i++, kind: 'bench' };
    },
  });
  return jobs / ((performance.now() - start) / 1000);
}

export const poolerSuite: BenchSuite = {
  id: 'pooler',
  title: 'PgBouncer: transaction pooling against a direct connection',
  servers: ['pg15'],
  async run(ctx: BenchContext): Promise<BenchResult> {
    const jobs = Math.max(2000, Math.round(100_000 * ctx.scale));
    const rounds = ctx.scale >= 1 ? 3 : 1;
    if (!ctx.pgbouncerUrl)
      throw new Error('the pooler suite needs PgBouncer in front of the server: set QMAINT_BENCH_PGBOUNCER_URL beside QMAINT_BENCH_PG15_URL');
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'qmaint-bench-pooler-'));
    const handler = path.join(tmp, 'noop.mjs');
    writeFileSync(handler, 'export default async () => {};\n');
    const rows: { direct: { drain: number; enqueue: number }; pooled: { drain: number; enqueue: number } }[] = [];
    try {
      const { url: directUrl, db: direct, name } = await ctx.newDatabase();
      const pooledUrl = withDatabase(ctx.pgbouncerUrl, name);
      const pooled = await connect({ databaseUrl: pooledUrl, applicationName: 'qmaint-bench' });
      try {
        for (let r = 0; r < rounds; r++) {
          ctx.log(`pooler: round ${r + 1} of ${rounds}, ${jobs} jobs`);
          const dEnq = await fill(direct, jobs);
          await direct.query('VACUUM ANALYZE qmaint.jobs');
          const dDrain = jobs / (await workDrain(directUrl, QUEUE, handler, jobs));
          const pEnq = await fill(pooled, jobs);
          await direct.query('VACUUM ANALYZE qmaint.jobs');
          const pDrain = jobs / (await workDrain(pooledUrl, QUEUE, handler, jobs));
          rows.push({ direct: { drain: dDrain, enqueue: dEnq }, pooled: { drain: pDrain, enqueue: pEnq } });
        }
      } finally {
        await pooled.close();
        await ctx.dropDatabase(direct);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    // The median round by drain ratio: both sides of a round saw about the same load.
    rows.sort((a, b) => a.pooled.drain / a.direct.drain - b.pooled.drain / b.direct.drain);
    const mid = rows[Math.floor((rows.length - 1) / 2)]!;
    const drainRatio = mid.pooled.drain / mid.direct.drain;
    const enqRatio = mid.pooled.enqueue / mid.direct.enqueue;
    const markdown = [
      `Parameters: PgBouncer in transaction pooling mode in front of the server (scripts/pg15.sh), ${jobs.toLocaleString('en-US')} no-op jobs; the drain is the whole \`qmaint work --drain --concurrency 10 --batch 100\` process, enqueue is COPY through \`enqueueMany\`; direct then pooled in each of ${rounds} round(s), the median round by drain ratio. Scale ${ctx.scale}.`,
      '',
      '| measurement | through PgBouncer | direct | ratio | goal | verdict |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
      `| drain, jobs/s | ${fmt(mid.pooled.drain)} | ${fmt(mid.direct.drain)} | ${fmt(drainRatio)}× | ≥ 0.8× | ${drainRatio >= 0.8 ? 'met' : '**missed**'} |`,
      `| COPY enqueue, jobs/s | ${fmt(mid.pooled.enqueue)} | ${fmt(mid.direct.enqueue)} | ${fmt(enqRatio)}× | — | reported |`,
    ].join('\n');
    return { markdown, targetsMet: drainRatio >= 0.8 };
  },
};
