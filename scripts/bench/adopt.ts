// Adopting a live, unpartitioned queue table (issue 16): `qmaint adopt` on a
// seed-style table of 1M rows (QMAINT_BENCH_SCALE scales it) while producers
// and consumers run as separate processes, against pg_partman's migration of
// the same table (rename, new partitioned parent, create_parent,
// partition_data_proc moving the rows in batches) under the same load, and
// against the same load with nothing happening (the same-run baseline for
// the longest stall). pg_partman is Debian's postgresql-15-partman, so the
// suite runs on the run's PostgreSQL 15 server only, and installs the package
// with apt-get when it is missing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { adopt } from '../../src/adopt/index.js';
import type { Db } from '../../src/db.js';
import { seedTableSql, startLoad, type WorkerReport } from '../adopt/load.js';
import { fmt, type BenchContext, type BenchResult, type BenchSuite } from './harness.js';

interface Run {
  what: string;
  wallMs: number;
  walBytes: number;
  stallMs: number;
  errors: number;
  inserted: number;
  claimed: number;
  note: string;
}

async function wal(db: Db): Promise<string> {
  return (await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
}

async function walSince(db: Db, lsn: string): Promise<number> {
  return Number((await db.query<{ b: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS b', [lsn])).rows[0]!.b);
}

function summarize(what: string, wallMs: number, walBytes: number, reports: WorkerReport[], note: string): Run {
  return {
    what,
    wallMs,
    walBytes,
    stallMs: Math.max(...reports.map((r) => r.maxMs)),
    errors: reports.reduce((n, r) => n + r.errors.length, 0),
    inserted: reports.filter((r) => r.role === 'producer').reduce((n, r) => n + r.ids.length, 0),
    claimed: reports.filter((r) => r.role === 'consumer').reduce((n, r) => n + r.ids.length, 0),
    note: [note, ...new Set(reports.flatMap((r) => r.errors).map((e) => `failed: ${e.replace(/\|/g, '/')}`))].slice(0, 3).join('; '),
  };
}

/** Run `work` while 2 producers and 2 consumers use app.jobs. */
async function underLoad(
  db: Db,
  url: string,
  work: () => Promise<string>,
): Promise<{ wallMs: number; walBytes: number; reports: WorkerReport[]; note: string }> {
  const load = await startLoad(url, 'app.jobs', { producers: 2, consumers: 2, tag: 'bench' });
  let reports: WorkerReport[] = [];
  try {
    const lsn = await wal(db);
    const t0 = performance.now();
    const note = await work();
    const wallMs = performance.now() - t0;
    const walBytes = await walSince(db, lsn);
    await new Promise((r) => setTimeout(r, 500));
    reports = await load.stop();
    return { wallMs, walBytes, reports, note };
  } finally {
    if (reports.length === 0) await load.stop().catch(() => undefined);
  }
}

/** Have pg_partman (Debian package) for the PostgreSQL 15 server, or say why not. */
function partmanAvailable(): string | null {
  if (existsSync('/usr/share/postgresql/15/extension/pg_partman.control')) return null;
  try {
    execFileSync('apt-get', ['install', '-y', 'postgresql-15-partman'], { stdio: 'ignore' });
    return null;
  } catch (err) {
    return `apt-get install postgresql-15-partman failed: ${(err as Error).message}`;
  }
}

/** qmaint adopt and pg_partman (and, when asked, the baseline) on a seed-style table of `rows` rows, each under the same load. */
async function runSize(ctx: BenchContext, rows: number, why: string | null, baseline: boolean): Promise<(Run & { rows: number })[]> {
  const runs: (Run & { rows: number })[] = [];
  const push = (run: Run) => runs.push({ ...run, rows });
  // Baseline: the same load for as long as nothing happens (once, on the smallest table).
  if (baseline) {
    const { url, db } = await ctx.newDatabase();
    ctx.log(`adopt: seeding ${rows} rows (baseline)`);
    await db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', rows)}`);
    const r = await underLoad(db, url, async () => {
      await new Promise((res) => setTimeout(res, 5000));
      return 'same load, 5 s, no DDL';
    });
    push(summarize('baseline (no conversion)', r.wallMs, r.walBytes, r.reports, r.note));
  }

  // qmaint adopt.
  {
    const { url, db } = await ctx.newDatabase();
    ctx.log(`adopt: seeding ${rows} rows (qmaint adopt)`);
    await db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', rows)}`);
    const r = await underLoad(db, url, async () => {
      const result = await adopt(db, { table: 'app.jobs', column: 'created_at', interval: '1 day', lockTimeout: '2s' });
      if (result.dryRun || !result.ran) throw new Error('adopt did not run');
      return result.results.map((s) => `${s.action} ${s.ms} ms`).join(', ');
    });
    push(summarize('qmaint adopt', r.wallMs, r.walBytes, r.reports, r.note));
  }

  // pg_partman 4.x: rename, partitioned parent under the old name, create_parent, partition_data_proc.
  if (why === null) {
    const { url, db } = await ctx.newDatabase();
    ctx.log(`adopt: seeding ${rows} rows (pg_partman)`);
    await db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', rows)} CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman`);
    const start = (await db.query<{ s: string }>(`SELECT date_trunc('day', min(created_at))::text AS s FROM app.jobs`)).rows[0]!.s;
    const r = await underLoad(db, url, async () => {
      await db.query(`BEGIN; SET LOCAL lock_timeout = '2s'; ALTER TABLE app.jobs RENAME TO jobs_old;
        CREATE TABLE app.jobs (LIKE app.jobs_old INCLUDING ALL) PARTITION BY RANGE (created_at);
        ALTER SEQUENCE app.jobs_id_seq OWNED BY app.jobs.id; COMMIT`);
      await db.query(`SELECT partman.create_parent('app.jobs', 'created_at', 'native', 'daily', p_premake := 3, p_start_partition := $1)`, [start]);
      const t0 = performance.now();
      await db.query(
        `CALL partman.partition_data_proc('app.jobs', p_interval := '1 minute', p_batch := 100000, p_wait := 0, p_source_table := 'app.jobs_old', p_quiet := true)`,
      );
      const left = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM app.jobs_old`)).rows[0]!.n;
      return `partition_data_proc ${Math.round(performance.now() - t0)} ms, ${left} rows left behind; queued rows stay invisible to claims on app.jobs until their batch is moved`;
    });
    push(summarize('pg_partman partition_data_proc', r.wallMs, r.walBytes, r.reports, r.note));
  } else {
    ctx.log(`adopt: pg_partman comparison skipped: ${why}`);
  }
  return runs;
}

export const adoptSuite: BenchSuite = {
  id: 'adopt',
  title: 'Adopt: partitioning a live queue table, qmaint adopt vs pg_partman',
  servers: ['pg15'],
  async run(ctx: BenchContext): Promise<BenchResult> {
    // 1M and 10M rows (scaled): the conversion's cost against the table's size.
    const sizes = [1_000_000, 10_000_000].map((n) => Math.max(10_000, Math.round(n * ctx.scale)));
    const runs: (Run & { rows: number })[] = [];
    const why = partmanAvailable();
    for (const [i, rows] of sizes.entries()) runs.push(...(await runSize(ctx, rows, why, i === 0)));

    const table = [
      '| rows | method | wall time | longest insert/claim stall | WAL | failed inserts/claims | rows inserted / claimed meanwhile | notes |',
      '| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |',
      ...runs.map(
        (r) =>
          `| ${r.rows.toLocaleString('en-US')} | ${r.what} | ${fmt(r.wallMs / 1000)} s | ${fmt(r.stallMs, 0)} ms | ${fmt(r.walBytes / 2 ** 20, 1)} MiB | ${r.errors} | ${r.inserted} / ${r.claimed} | ${r.note} |`,
      ),
    ];
    const adoptRuns = runs.filter((r) => r.what === 'qmaint adopt');
    const worst = adoptRuns.reduce((a, b) => (b.stallMs > a.stallMs || b.errors > a.errors ? b : a));
    const base = runs[0]!;
    const met = adoptRuns.every((r) => r.errors === 0 && r.stallMs < 3000);
    const markdown = [
      `- Seed-style tables of ${sizes.map((n) => n.toLocaleString('en-US')).join(' and ')} rows (id, payload, status, retry_count, created_at; partial index on queued), 2 producer and 2 consumer processes (classic SKIP LOCKED CTE) throughout; lockTimeout 2 s.`,
      ...(why === null ? [] : [`- pg_partman not measured in this run: ${why}.`]),
      '',
      ...table,
      '',
      `Target: no failed insert or claim and a longest stall under lockTimeout + 1 s (3,000 ms) for qmaint adopt at every size: ${met ? 'met' : 'missed'} (its longest stall ${fmt(worst.stallMs, 0)} ms; baseline stall ${fmt(base.stallMs, 0)} ms).`,
    ].join('\n');
    return { markdown, targetsMet: met };
  },
};
