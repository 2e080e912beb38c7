// Scale: the everyday read commands against a 10-million-job history in 1,000
// hourly partitions (10 million times the scale factor: npm run bench --
// --suite scale --scale 0.1). Each command is timed in-process through
// runCommand (the CLI without Node's start-up, connecting afresh as a user's
// call does: the figure judged against the target), as the library call alone,
// and as the real CLI process; medians of several calls after one warm-up. The
// baseline beside each is the same command on a 10-partition table with no
// history, in the same run. buildScaleDatabase is exported for measuring plans
// by hand on the same data.
import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { runCommand } from '../../src/cli/main.js';
import type { Db } from '../../src/db.js';
import { runHealth } from '../../src/health/checks.js';
import { resolveThresholds } from '../../src/health/thresholds.js';
import { listPartitions } from '../../src/partitions/index.js';
import { collectSamples } from '../../src/metrics/database.js';
import { listJobs, queueStatus } from '../../src/queue/admin.js';
import { claimQuery, LOW_WATER_SQL } from '../../src/queue/claim.js';
import * as ui from '../../src/ui/data.js';
import { fmt, percentile, ROOT, type BenchContext, type BenchResult, type BenchSuite } from './harness.js';

const HOUR = 3_600_000;
/** How often a dashboard page polls (src/ui, ui/app.js). */
const UI_POLL_MS = 2000;

async function hourlyPartitions(db: Db, from: Date, to: Date): Promise<void> {
  await db.query(`UPDATE qmaint.partition_policy SET partition_interval = '1 hour', premake = 3, retention = '60 days', lock_timeout = '2s'`);
  await db.query(
    `DO $$ DECLARE p regclass; BEGIN FOR p IN SELECT partition FROM qmaint.partitions_of('qmaint.jobs') LOOP EXECUTE format('DROP TABLE %s', p); END LOOP; END $$`,
  );
  const { rows } = await db.query<{ statement: string }>(`SELECT statement FROM qmaint.create_plan('qmaint.jobs', $1, $2, 5000)`, [from, to]);
  for (const r of rows) await db.query(r.statement);
}

/** What {@link buildHistory} writes: sizes and the shape of the live queue. */
export interface HistoryShape {
  /** Jobs in all, spread evenly over the partitions wholly before now. */
  rows: number;
  /** Newest partitions holding the live queue (30% queued, 2% running). */
  liveHours: number;
  /** Delayed jobs (run_at a day ahead) enqueued `delayedHoursBack` ago: they hold the low-water mark back that far, as a real queue's scheduled jobs do. */
  delayed: number;
  delayedHoursBack: number;
}

/**
 * `shape.rows` jobs spread evenly over the partitions wholly before `now`,
 * written into each partition directly (INSERT ... SELECT generate_series, no
 * routing through the parent), two partitions at a time: completed history
 * with 0.1% failed and 0.02% cancelled (updated a minute after they were
 * made), in the newest `liveHours` partitions the live queue (30% queued,
 * 2% running under a lease), and a few delayed queued jobs further back.
 * Eight queues, ids ascending with created_at as a real history's are.
 */
export async function buildHistory(db: Db, now: Date, shape: HistoryShape, log: (s: string) => void): Promise<void> {
  const { rows: parts } = await db.query<{ partition: string; lower_bound: Date }>(
    `SELECT partition::text AS partition, lower_bound FROM qmaint.partitions_of('qmaint.jobs') WHERE upper_bound <= $1 ORDER BY lower_bound`,
    [now],
  );
  const per = Math.ceil(shape.rows / parts.length);
  // Ids are taken in partition order, so they ascend with created_at even though two partitions are written at once.
  const { rows: first } = await db.query<{ id: string }>(`SELECT setval('qmaint.jobs_id_seq', nextval('qmaint.jobs_id_seq') + $1) - $1 AS id`, [shape.rows]);
  const base = BigInt(first[0]!.id);
  let written = 0;
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < parts.length; i = next++) {
      const p = parts[i]!;
      const start = Math.min(shape.rows, i * per);
      const n = Math.min(per, shape.rows - start);
      if (n <= 0) return;
      const live = i >= parts.length - shape.liveHours;
      await db.query(
        `INSERT INTO ${p.partition} (id, queue, payload, status, priority, created_at, run_at, updated_at, retry_count, locked_by, locked_until)
         SELECT $4::bigint + g, 'q' || ((g / 7) % 8), jsonb_build_object('n', g, 'kind', 'bench'), s.status, (g % 3)::int,
                $1::timestamptz + ((g * 3599) / $2) * interval '1 second', $1::timestamptz + ((g * 3599) / $2) * interval '1 second',
                $1::timestamptz + ((g * 3599) / $2) * interval '1 second' + CASE WHEN s.status IN ('queued', 'running') THEN interval '0' ELSE interval '1 minute' END,
                CASE WHEN s.status = 'failed' THEN 5 ELSE 0 END,
                CASE WHEN s.status = 'running' THEN 'bench-worker' END,
                CASE WHEN s.status = 'running' THEN $5::timestamptz + interval '1 hour' END
           FROM generate_series(0, $2 - 1) g
          CROSS JOIN LATERAL (SELECT (CASE WHEN $3 AND g % 100 < 30 THEN 'queued' WHEN $3 AND g % 100 < 32 THEN 'running'
                                           WHEN g % 1000 = 7 THEN 'failed' WHEN g % 5000 = 11 THEN 'cancelled' ELSE 'completed' END)::qmaint.job_status AS status) s`,
        [p.lower_bound, n, live, (base + BigInt(start)).toString(), now],
      );
      written += n;
      if (i % 100 === 99) log(`scale: ${written.toLocaleString('en-US')} of ${shape.rows.toLocaleString('en-US')} jobs written`);
    }
  };
  await Promise.all([worker(), worker()]);
  const back = parts[Math.max(0, parts.length - shape.delayedHoursBack)]!;
  await db.query(
    `INSERT INTO ${back.partition} (queue, payload, created_at, run_at, updated_at)
     SELECT 'q' || (g % 8), '{"delayed": true}', $1::timestamptz + interval '30 minutes', $2::timestamptz + interval '1 day', $1::timestamptz + interval '30 minutes'
       FROM generate_series(1, $3) g`,
    [back.lower_bound, now, shape.delayed],
  );
}

/** A fresh qmaint.jobs of 1,000 hourly partitions (996 before the hour holding `now`, 3 ahead) holding `rows` jobs, analysed, with the low-water mark where rotate puts it; returns the build time in seconds. */
export async function buildScaleDatabase(db: Db, now: Date, rows: number, log: (s: string) => void): Promise<number> {
  await hourlyPartitions(db, new Date(now.getTime() - 996 * HOUR), new Date(now.getTime() + 4 * HOUR));
  const built = performance.now();
  await buildHistory(db, now, { rows, liveHours: 3, delayed: 20, delayedHoursBack: 24 }, log);
  await db.query('VACUUM ANALYZE qmaint.jobs');
  await db.query('SELECT qmaint.rotate_all($1)', [now]);
  return (performance.now() - built) / 1000;
}

/**
 * The write paths that must stay cheap however long the history: each run in
 * a transaction that is rolled back, on one connection of its own, so the data
 * stays as built. `first` is the first call on a new connection, `firstSix`
 * the first six together (what a new connection pays before its plans are
 * cached), `steady` the
 * median of calls 8 to 12 on the same one (PL/pgSQL caches a generic plan
 * after five calls of a function, so the two can differ).
 */
async function writePaths(url: string, now: Date): Promise<{ what: string; first: number; firstSix: number; steady: number }[]> {
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  // Three keyed jobs whose payload the replace rewrites.
  await setup.query(`SELECT * FROM qmaint.enqueue_keyed('keyed', ARRAY['k1', 'k2', 'k3'], ARRAY['{}', '{}', '{}']::jsonb[], 'skip')`);
  const { rows: mark } = await setup.query<{ low_water: Date | null }>(LOW_WATER_SQL);
  await setup.end();
  const claim = claimQuery({ queue: 'q3', batch: 100, leaseSeconds: 60, workerId: 'bench', lowWater: mark[0]?.low_water ?? null });
  const ops: { what: string; sql: string; values: unknown[] }[] = [
    { what: "claim 100 jobs of queue q3 (the consumer's statement)", sql: claim.text, values: claim.values },
    { what: 'rescue_expired() with no lease run out', sql: 'SELECT qmaint.rescue_expired($1)', values: [now] },
    {
      what: 'rescue_expired() two hours on: every running job (2% of the live hours) back in the queue',
      sql: 'SELECT qmaint.rescue_expired($1)',
      values: [new Date(now.getTime() + 2 * HOUR)],
    },
    {
      what: 'enqueue_keyed replacing the payloads of 3 queued keyed jobs',
      sql: `SELECT * FROM qmaint.enqueue_keyed('keyed', ARRAY['k1', 'k2', 'k3'], ARRAY['{"v": 2}', '{}', '{}']::jsonb[], 'replace')`,
      values: [],
    },
  ];
  const out: { what: string; first: number; firstSix: number; steady: number }[] = [];
  for (const op of ops) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const times: number[] = [];
    for (let i = 0; i < 12; i++) {
      await c.query('BEGIN');
      const start = performance.now();
      await c.query(op.sql, op.values);
      times.push(performance.now() - start);
      await c.query('ROLLBACK');
    }
    await c.end();
    const steady = times.slice(7).sort((a, b) => a - b);
    out.push({ what: op.what, first: times[0]!, firstSix: times.slice(0, 6).reduce((a, b) => a + b, 0), steady: percentile(steady, 50) });
  }
  return out;
}

/** Median and p90 of `calls` timed runs after one warm-up. */
async function timed(calls: number, f: () => Promise<void>): Promise<{ median: number; p90: number }> {
  const times: number[] = [];
  for (let i = 0; i <= calls; i++) {
    const start = performance.now();
    await f();
    if (i > 0) times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return { median: percentile(times, 50), p90: percentile(times, 90) };
}

/** Exit 0, or 4 for health's critical verdict, is success. */
function checkExit(argv: string[], code: number | null, stderr: string): void {
  if (code !== 0 && !(argv[0] === 'health' && code === 4)) throw new Error(`qmaint ${argv.join(' ')} exited ${code}: ${stderr.trim()}`);
}

/** One command in-process through runCommand (the CLI without Node's start-up), connecting afresh as a user's call does. */
function inProcess(url: string, argv: string[]): () => Promise<void> {
  return async () => {
    const r = await runCommand([...argv, '--json', '--database-url', url]);
    checkExit(argv, r.exitCode, r.stderr);
  };
}

/** One command as the real CLI process (node bin/qmaint.js, the built dist/). */
function asProcess(url: string, argv: string[]): () => Promise<void> {
  return () =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'qmaint.js'), ...argv, '--json', '--database-url', url], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0 || (argv[0] === 'health' && code === 4)) resolve();
        else reject(new Error(`qmaint ${argv.join(' ')} exited ${code}: ${err.trim()}`));
      });
    });
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
    const buildSeconds = await buildScaleDatabase(big.db, now, rows, (line) => ctx.log(line));
    await hourlyPartitions(small.db, new Date(now.getTime() - 6 * HOUR), new Date(now.getTime() + 4 * HOUR));
    await small.db.query(`INSERT INTO qmaint.jobs (queue, payload, created_at, run_at) SELECT 'q' || (g % 4), '{}', $1, $1 FROM generate_series(1, 100) g`, [
      now,
    ]);
    await small.db.query('VACUUM ANALYZE qmaint.jobs');
    const { rows: count } = await big.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.partitions_of('qmaint.jobs')`);
    const health = { now, thresholds: resolveThresholds(), statementTimeout: '30s', batch: 100, leaseSeconds: 60 };

    const commands: { argv: string[]; goal: number | null; library: (db: Db) => Promise<unknown> }[] = [
      { argv: ['status'], goal: 200, library: (db) => queueStatus(db, now) },
      { argv: ['status', '--exact'], goal: null, library: (db) => queueStatus(db, now, { exact: true }) },
      { argv: ['jobs', 'list', '--status', 'queued', '--limit', '50'], goal: 50, library: (db) => listJobs(db, { status: 'queued', limit: 50 }) },
      { argv: ['partitions', 'list'], goal: 500, library: (db) => listPartitions(db, { now }) },
      { argv: ['health'], goal: 2000, library: (db) => runHealth(db, health) },
    ];
    const nodeStart = await timed(calls, asProcess(big.url, ['--version']));
    // What every command pays on this server before its own work: a new connection, and the first statement
    // through qmaint.jobs on it (one that prunes every partition: PostgreSQL still reads all their bounds).
    const fresh = await timed(calls, async () => {
      const c = new pg.Client({ connectionString: big.url });
      await c.connect();
      await c.query('SELECT 1');
      await c.end();
    });
    const touches: number[] = [];
    for (let i = 0; i < calls; i++) {
      const c = new pg.Client({ connectionString: big.url });
      await c.connect();
      const start = performance.now();
      await c.query(`SELECT count(*) FROM qmaint.jobs WHERE created_at < '-infinity'`);
      touches.push(performance.now() - start);
      await c.end();
    }
    const firstTouch = percentile(
      touches.sort((a, b) => a - b),
      50,
    );
    const { rows: auth } = await big.db.query<{ m: string }>(
      `SELECT string_agg(DISTINCT auth_method, ', ') AS m FROM pg_hba_file_rules WHERE type = 'host' AND error IS NULL`,
    );
    const results: { argv: string[]; goal: number | null; command: { median: number; p90: number }; library: number; process: number; small: number }[] = [];
    for (const c of commands) {
      ctx.log(`scale: qmaint ${c.argv.join(' ')}`);
      const command = await timed(calls, inProcess(big.url, c.argv));
      const library = (await timed(calls, async () => void (await c.library(big.db)))).median;
      const proc = (await timed(3, asProcess(big.url, c.argv))).median;
      const s = (await timed(calls, inProcess(small.url, c.argv))).median;
      results.push({ ...c, command, library, process: proc, small: s });
    }
    // The dashboard's reads (src/ui/data.ts), each what one page's poll asks of the database, on the same data.
    const uiSettings = ui.DEFAULT_UI_SETTINGS;
    const { rows: anyJob } = await big.db.query<{ id: string }>(`SELECT id::text FROM qmaint.jobs WHERE status = 'queued' ORDER BY id DESC LIMIT 1`);
    const pages: { page: string; read: string; f: () => Promise<unknown> }[] = [
      { page: 'Overview', read: 'queues, depth, throughput', f: () => ui.overview(big.db, now) },
      { page: 'Overview', read: 'health verdicts', f: () => ui.health(big.db, now, uiSettings) },
      { page: 'Overview', read: 'pg_cron state', f: () => ui.pgCron(big.db, 10) },
      { page: 'Jobs', read: 'queued, first page of 50', f: () => ui.jobs(big.db, new URLSearchParams({ status: 'queued', limit: '50' })) },
      { page: 'Jobs', read: 'any status, queue q3, first page', f: () => ui.jobs(big.db, new URLSearchParams({ queue: 'q3', limit: '50' })) },
      { page: 'Jobs', read: 'one job', f: () => ui.job(big.db, anyJob[0]!.id) },
      { page: 'Partitions', read: 'the timeline', f: () => ui.partitions(big.db, now) },
      { page: 'Partitions', read: "the next rotate's plan", f: () => ui.rotatePlan(big.db, now, uiSettings) },
      { page: 'Vacuum', read: 'partitions, profiles, xmin horizon', f: () => ui.vacuum(big.db, now, uiSettings) },
      { page: 'Vacuum', read: 'stored churn samples', f: () => ui.churnSamples(big.db, now) },
      { page: 'Vacuum', read: "vacuum tune's plan", f: () => ui.tunePlan(big.db, now, uiSettings) },
      { page: 'Claim plan', read: 'explain dequeue (queue q3)', f: () => ui.explain(big.db, uiSettings, 'q3') },
      { page: 'Maintenance runs', read: 'recent runs', f: () => ui.runs(big.db) },
      // Not a page: what the daemon's /metrics reads once per scrape (10 s timeout; Prometheus scrapes every 15 s by default).
      { page: '`/metrics` (daemon)', read: 'one scrape: qmaint.metrics_samples()', f: () => collectSamples(big.db) },
    ];
    const pageTimes: { page: string; read: string; t: { median: number; p90: number } }[] = [];
    for (const p of pages) {
      ctx.log(`scale: ui ${p.page}: ${p.read}`);
      pageTimes.push({ ...p, t: await timed(calls, async () => void (await p.f())) });
    }
    ctx.log('scale: write paths');
    const writes = await writePaths(big.url, now);
    const smallWrites = await writePaths(small.url, now);
    const pagesOk = pageTimes.every((p) => p.t.median < UI_POLL_MS);
    const met = pagesOk && results.every((r) => r.goal === null || r.command.median <= r.goal);
    const markdown = [
      `Parameters: ${count[0]!.n} hourly partitions holding ${rows.toLocaleString('en-US')} jobs in 8 queues (completed history with 0.1% failed and 0.02% cancelled; the newest three hours hold the live queue: 30% queued, 2% running; 20 delayed jobs a day back hold the low-water mark there, so the live scans cover 25 partitions), written into each partition directly by INSERT ... SELECT generate_series, two partitions at a time (${fmt(buildSeconds, 0)} s to build, VACUUM ANALYZE included; making the 1,000 partitions beforehand is not counted). Scale ${ctx.scale}.`,
      '',
      `Each command three ways, median of ${calls} calls after one warm-up: **command**, in-process through \`runCommand\` with \`--json\`, connecting afresh and checking the schema as every call does (what the target is judged on); **library**, the library call alone on a connected pool; **process**, the real CLI process \`node bin/qmaint.js ... --json\` (median of 3), which adds Node's start-up (\`qmaint --version\` as a process: ${fmt(nodeStart.median, 0)} ms). Every command figure includes two costs of this server that no command can avoid: a new connection (TCP, authentication by ${auth[0]?.m ?? 'an unknown method'} in pg_hba.conf, \`SELECT 1\`) takes ${fmt(fresh.median, 1)} ms, and the first statement through \`qmaint.jobs\` on a new connection takes ${fmt(firstTouch, 1)} ms even when it prunes every partition (PostgreSQL reads the bounds of all ${fmt(count[0]!.n, 0)} partitions once per connection). Beside them, the command on 10 partitions holding 100 jobs, in the same run. \`status\` counts queued and running jobs exactly and estimates the history from the statistics (see docs/cli.md); \`status --exact\` counts every row and has no target.`,
      '',
      '| command | command median | p90 | library | process | target | 10 partitions, 100 jobs | verdict |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...results.map(
        (r) =>
          `| \`qmaint ${r.argv.join(' ')}\` | ${fmt(r.command.median, 0)} ms | ${fmt(r.command.p90, 0)} ms | ${fmt(r.library, 0)} ms | ${fmt(r.process, 0)} ms | ${r.goal === null ? 'none' : `≤ ${r.goal} ms`} | ${fmt(r.small, 0)} ms | ${r.goal === null ? 'n/a' : r.command.median <= r.goal ? 'met' : '**missed**'} |`,
      ),
      '',
      '### The dashboard on the same data',
      '',
      `Each read a page of \`qmaint ui\` makes (\`src/ui/data.ts\`), on a connected pool, median and p90 of ${calls} calls after one warm-up. A page polls every ${UI_POLL_MS / 1000} s, and the server shares an answer between open pages for 1.5–15 s (health 15 s, the claim explain 5 s), so a read must take well under the poll interval: the verdict is whether its median does. The last row is no page: it is the one read a \`qmaint schedule daemon\` makes per scrape of its \`/metrics\` (under a 10 s timeout), judged the same way.`,
      '',
      '| page | read | median | p90 | verdict |',
      '| --- | --- | ---: | ---: | --- |',
      ...pageTimes.map(
        (p) => `| ${p.page} | ${p.read} | ${fmt(p.t.median, 0)} ms | ${fmt(p.t.p90, 0)} ms | ${p.t.median < UI_POLL_MS ? 'met' : '**missed**'} |`,
      ),
      '',
      '### Write paths on the same data',
      '',
      `What the consumer, the rescuer and a keyed enqueue cost at this size. Each runs in a transaction that is rolled back, on a connection of its own: **first** is the first call on that connection, **first six** the first six calls together (what a new connection pays before PL/pgSQL has cached its plans: it plans a statement afresh for each of its first five runs unless told otherwise), **steady** the median of calls 8 to 12. Beside them, the same on the 10 partitions holding 100 jobs (which hold no running job, so the second rescue has nothing to do there). No targets: these rows keep the write paths from growing with the history again (see docs/queue.md, the claim and the rescuer).`,
      '',
      '| statement | first | first six | steady | 10 partitions: first | steady |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      ...writes.map(
        (w, i) =>
          `| ${w.what} | ${fmt(w.first, 1)} ms | ${fmt(w.firstSix, 0)} ms | ${fmt(w.steady, 1)} ms | ${fmt(smallWrites[i]!.first, 1)} ms | ${fmt(smallWrites[i]!.steady, 1)} ms |`,
      ),
    ].join('\n');
    return { markdown, targetsMet: met };
  },
};
