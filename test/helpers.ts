import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { connect, type Db } from '../src/db.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'bin', 'qmaint.js');

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = '/' + database;
  return parsed.toString();
}

export interface TestDatabase {
  name: string;
  /** Direct URL of this database. */
  url: string;
  /** URL of this database through PgBouncer (transaction pooling), when QMAINT_TEST_PGBOUNCER_URL is set. */
  bouncerUrl: string | undefined;
  /** A pool on it (closed automatically after the file). */
  db: Db;
  /** A fresh unpooled client (closed automatically after the file). */
  client(): Promise<pg.Client>;
}

const opened: { end(): Promise<void> }[] = [];
let registered = false;

function registerCleanup(): void {
  if (registered) return;
  registered = true;
  afterAll(async () => {
    for (const c of opened.splice(0).reverse()) await c.end().catch(() => undefined);
  });
}

/**
 * A new database cloned from the migrated template: the qmaint schema is
 * installed, nothing else. Dropped when the test run ends.
 */
export async function freshDatabase(options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  registerCleanup();
  const serverUrl = inject('serverUrl');
  const name = `${inject('runPrefix')}${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    if (options.migrated === false) await admin.query(`CREATE DATABASE "${name}"`);
    else await createFromTemplate(admin, name, inject('templateDb'));
  } finally {
    await admin.end();
  }
  const url = withDatabase(serverUrl, name);
  const db = await connect({ databaseUrl: url, applicationName: 'qmaint-test' });
  opened.push({ end: () => db.close() });
  const bouncer = process.env.QMAINT_TEST_PGBOUNCER_URL;
  return {
    name,
    url,
    bouncerUrl: bouncer ? withDatabase(bouncer, name) : undefined,
    db,
    async client() {
      const client = new pg.Client({ connectionString: url, application_name: 'qmaint-test' });
      client.on('error', () => undefined);
      await client.connect();
      opened.push(client);
      return client;
    },
  };
}

async function createFromTemplate(admin: pg.Client, name: string, template: string): Promise<void> {
  // Concurrent clones of one template can collide ("source database is being
  // accessed by other users"); retry briefly.
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.query(`CREATE DATABASE "${name}" TEMPLATE "${template}"`);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== '55006' || attempt > 50) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
}

/** URL of the pg_cron database on PostgreSQL 15 (CI sets it), or undefined. */
export const pgcronUrl = process.env.QMAINT_TEST_PGCRON_URL;
/** PgBouncer in transaction pooling mode (CI sets it), or undefined. */
export const pgbouncerUrl = process.env.QMAINT_TEST_PGBOUNCER_URL;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as the one JSON document of --json. */
  json<T = Record<string, unknown>>(): T;
}

/** Environment for a spawned CLI: no database configured unless the test says so. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'DATABASE_URL' || k.startsWith('PG') || k.startsWith('QMAINT_')) continue;
    env[k] = v;
  }
  env.NO_COLOR = '1';
  return { ...env, ...extra };
}

/** Run the built CLI (`node bin/qmaint.js ARGS`) and collect its output and exit code. */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string | Buffer; cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: options.env ?? cleanEnv(), cwd: options.cwd ?? ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout,
        stderr,
        json<T>() {
          try {
            return JSON.parse(stdout) as T;
          } catch {
            throw new Error(`stdout is not one JSON document:\n${stdout}\nstderr:\n${stderr}`);
          }
        },
      });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Poll until fn returns a truthy value or the time runs out. */
export async function eventually<T>(
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Split a command line into words the way a POSIX shell does, by asking one
 * (/bin/sh, in cwd, so an unquoted * expands against the files there).
 */
export function shellWords(line: string, cwd: string): string[] {
  const r = spawnSync('/bin/sh', ['-c', `printf '%s\\0' ${line}`], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`/bin/sh could not parse ${line}: ${r.stderr}`);
  return r.stdout.split('\0').slice(0, -1);
}

export interface ParsedMetrics {
  samples: { name: string; labels: Record<string, string>; value: number }[];
  types: Map<string, string>;
}

/** Resolves true when a TCP connection to host:port is accepted, false when it is refused. */
export function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A strict reader of the Prometheus text format: every line must be a comment or a sample. */
export function parsePrometheus(text: string): ParsedMetrics {
  const samples: ParsedMetrics['samples'] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$/.test(line)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g))
      labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    // NaN in any case: prom-client writes `Nan` (an event-loop lag with no sample yet), and Prometheus
    // parses values with Go's strconv.ParseFloat, which takes it.
    if (Number.isNaN(value) && m[3]!.toLowerCase() !== 'nan') throw new Error(`bad value in ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types };
}
