// Scale: the everyday read commands against a 10-million-job history in 1,000
// hourly partitions. Each command runs in-process through runCommand (the CLI
// without Node's start-up), connecting afresh as a user's call does; the figure
// is the median of several calls after one warm-up. The baseline beside each is
// the same command on a 10-partition table with no history, in the same run.
import { runCommand } from '../../src/cli/main.js';
import type { Db } from '../../src/db.js';
import { fmt, percentile, type BenchContext, type BenchResult, type BenchSuite } from './harness.js';

const HOUR = 3_600_000;

async function hourlyPartitions(db: Db, from: Date, to: Date): Promise<void> {
  await db.query(`UPDATE qmaint.partition_policy SET partition_interval = '1 hour', premake = 3, retention = '60 days', lock_timeout = '2s'`);
  await db.query(
    `DO $$ DECLARE p regclass; BEGIN FOR p IN SELECT partition FROM qmaint.partitions_of('qmaint.jobs') LOOP EXECUTE format('DROP TABLE %s', p); END LOOP; END $$`,
  );
  const { rows } = await db.query<{ statement: string }>(`SELECT statement FROM qmaint.create_plan('qmaint.jobs', $1, $2, 5000)`, [from, to]);
  for (const r of rows) await db.query(r.statement);
}

/**
 * `rows` jobs spread evenly over the past `hours` partitions, written into each
 * partition directly (no routing): completed history, with a few thousand failed
 * and, in the newest hours, queued and running jobs as a live queue has.
 */
async function history(db: Db, now: Date, rows: number, log: (s: string) => void): Promise<void> {
  const { rows: parts } = await db.query<{ partition: string; lower_bound: Date }>(
    `SELECT partition::text AS partition, lower_bound FROM qmaint.partitions_of('qmaint.jobs') WHERE upper_bound <= $1 ORDER BY lower_bound`,
    [now],
  );
  const per = Math.ceil(rows / parts.length);
  let written = 0;
  for (const [i, p] of parts.entries()) {
    const n = Math.min(per, rows - written);
    if (n <= 0) break;
    const live = i >= parts.length - 3; // the newest three hours hold the live queue
    await db.query(
      `INSERT INTO ${p.partition} (queue, payload, status, created_at, run_at, updated_at, retry_count)
       SELECT 'q' || (g % 4), jsonb_build_object('n', g),
              (CASE WHEN $3 AND g % 10 < 3 THEN 'queued' WHEN $3 AND g % 50 = 3 THEN 'running' WHEN g % 1000 = 7 THEN 'failed' ELSE 'completed' END)::qmaint.job_status,
              $1::timestamptz + (g % 3600) * interval '1 second', $1::timestamptz, $1::timestamptz + interval '1 minute', 0
         FROM generate_series(1, $2) g`,
      [p.lower_bound, n, live],
    );
    written += n;
    if (i % 100 === 99) log(`scale: ${written.toLocaleString('en-US')} of ${rows.toLocaleString('en-US')} jobs written`);
  }
  await db.query(`UPDATE qmaint.jobs SET locked_by = 'bench', locked_until = $1::timestamptz + interval '1 hour' WHERE status = 'running'`, [now]);
}

/** Median and p90 wall time of `calls` runs of one command (after a warm-up run); exit 0, or 4 for health's critical verdict, is success. */
async function timeCommand(url: string, argv: string[], calls: number): Promise<{ median: number; p90: number }> {
  const times: number[] = [];
  for (let i = 0; i <= calls; i++) {
    const start = performance.now();
    const r = await runCommand([...argv, '--json', '--database-url', url]);
    const ms = performance.now() - start;
    if (r.exitCode !== 0 && !(argv[0] === 'health' && r.exitCode === 4)) throw new Error(`qmaint ${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`);
    if (i > 0) times.push(ms);
  }
  times.sort((a, b) => a - b);
  return { median: percentile(times, 50), p90: percentile(times, 90) };
}

export const scaleSuite: BenchSuite = {
  id: 'scale',
  title: 'Scale: read commands against 10 million jobs in 1,000 partitions',
  async run(ctx: BenchContext): Promise<BenchResult> {
    const rows = Math.max(100_000, Math.round(10_000_000 * ctx.scale));
    const calls = 5;
    const now = new Date(Math.floor(Date.now() / HOUR) * HOUR);
    const big = await ctx.newDatabase();
    const small = await ctx.newDatabase();
    ctx.log(`scale: 1,000 hourly partitions, ${rows.toLocaleString('en-US')} jobs`);
    await hourlyPartitions(big.db, new Date(now.getTime() - 996 * HOUR), new Date(now.getTime() + 4 * HOUR));
    const built = performance.now();
    await history(big.db, now, rows, (line) => ctx.log(line));
    await big.db.query('VACUUM ANALYZE qmaint.jobs');
    await big.db.query('SELECT qmaint.rotate_all($1)', [now]);
    const buildSeconds = (performance.now() - built) / 1000;
    await hourlyPartitions(small.db, new Date(now.getTime() - 6 * HOUR), new Date(now.getTime() + 4 * HOUR));
    await small.db.query(`INSERT INTO qmaint.jobs (queue, payload, created_at, run_at) SELECT 'q' || (g % 4), '{}', $1, $1 FROM generate_series(1, 100) g`, [
      now,
    ]);
    await small.db.query('VACUUM ANALYZE qmaint.jobs');
    const { rows: count } = await big.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.partitions_of('qmaint.jobs')`);

    const commands: { argv: string[]; goal: number }[] = [
      { argv: ['status'], goal: 200 },
      { argv: ['jobs', 'list', '--status', 'queued', '--limit', '50'], goal: 50 },
      { argv: ['partitions', 'list'], goal: 500 },
      { argv: ['health'], goal: 2000 },
    ];
    const results: { argv: string[]; goal: number; big: { median: number; p90: number }; small: { median: number } }[] = [];
    for (const c of commands) {
      ctx.log(`scale: qmaint ${c.argv.join(' ')}`);
      const b = await timeCommand(big.url, c.argv, calls);
      const s = await timeCommand(small.url, c.argv, calls);
      results.push({ ...c, big: b, small: s });
    }
    const met = results.every((r) => r.big.median <= r.goal);
    const markdown = [
      `Parameters: ${count[0]!.n} hourly partitions holding ${rows.toLocaleString('en-US')} jobs (completed history, 0.1% failed; the newest three hours hold the live queue: 30% queued, 2% running), written into each partition directly (${fmt(buildSeconds, 0)} s to build, VACUUM ANALYZE included). Each command runs in-process through \`runCommand\` with \`--json\`, connecting afresh per call as a user's call does (Node's own start-up of about 0.5 s is not included); median and p90 of ${calls} calls after one warm-up. Beside it, the same command on 10 partitions holding 100 jobs, in the same run. Scale ${ctx.scale}.`,
      '',
      '| command | median | p90 | goal | 10 partitions, 100 jobs | verdict |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
      ...results.map(
        (r) =>
          `| \`qmaint ${r.argv.join(' ')}\` | ${fmt(r.big.median, 0)} ms | ${fmt(r.big.p90, 0)} ms | ≤ ${r.goal} ms | ${fmt(r.small.median, 0)} ms | ${r.big.median <= r.goal ? 'met' : '**missed**'} |`,
      ),
    ].join('\n');
    return { markdown, targetsMet: met };
  },
};
