import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { CLI, cleanEnv, eventually, freshDatabase, pgbouncerUrl, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-work-'));
const module = (name: string, body: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, body);
  return file;
};
// Records each handled id in a table (the ledger); a payload with "boom" throws, one with "hang" never ends.
const recorder = module(
  'recorder.mjs',
  `import pg from ${JSON.stringify(path.resolve('node_modules/pg/lib/index.js'))};
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
export default async (job) => {
  if (job.payload.hang) { await pool.query('INSERT INTO hung VALUES ($1)', [job.id]); return new Promise(() => {}); }
  if (job.payload.boom) throw new Error('boom in job ' + job.id);
  await pool.query('INSERT INTO handled VALUES ($1, $2)', [job.id, job.retryCount]);
};
export const close = () => pool.end();
`,
);

async function statuses(queue: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ status: string; n: number }>('SELECT status::text, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 GROUP BY 1', [
    queue,
  ]);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

await t.db.query('CREATE TABLE handled (id bigint, retry_count int)');
await t.db.query('CREATE TABLE hung (id bigint)');

describe('qmaint work', () => {
  it('--drain works the queue and exits 0; a throwing handler fails only its job', async () => {
    await enqueueMany(
      t.db,
      'cli',
      Array.from({ length: 50 }, (_, i) => ({ i })),
    );
    const boom = await enqueue(t.db, 'cli', { boom: true }, { maxRetries: 0 });
    const r = await runCli(['work', '--queue', 'cli', '--handler', recorder, '--drain', '--concurrency', '4', '--batch', '8', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, queue: 'cli', drained: true, completed: 50, failed: 1, returned: 0 });
    expect(r.stderr).toContain(`job ${boom} failed for good: boom in job ${boom}`);
    expect(await statuses('cli')).toEqual({ completed: 50, failed: 1 });
    expect((await t.db.query('SELECT count(DISTINCT id)::int AS n FROM handled')).rows[0]!.n).toBe(50);
  });

  it('a missing or broken handler module exits 2 with one line', async () => {
    const broken = module('broken.mjs', 'export default async (job) => { syntax error here');
    const noDefault = module('nodefault.mjs', 'export const handler = async () => {};');
    for (const [file, message] of [
      [path.join(dir, 'missing.mjs'), /handler module .*missing\.mjs not found/],
      [broken, /handler module .*broken\.mjs failed to load/],
      [noDefault, /has no default export function/],
    ] as const) {
      const r = await runCli(['work', '--queue', 'cli', '--handler', file], { env });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });

  it('SIGTERM stops gracefully: the running job finishes, the unstarted ones go back', async () => {
    const slow = module('slow.mjs', `export default async () => { await new Promise((r) => setTimeout(r, 700)); };\n`);
    await enqueueMany(
      t.db,
      'sigterm',
      Array.from({ length: 6 }, (_, i) => ({ i })),
    );
    const child = spawn(process.execPath, [CLI, 'work', '--queue', 'sigterm', '--handler', slow, '--concurrency', '1', '--batch', '6', '--json'], { env });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await eventually(async () => (await statuses('sigterm')).running === 6);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const doc = JSON.parse(stdout) as { completed: number; returned: number; signal: string };
    expect(doc).toMatchObject({ completed: 1, returned: 5, signal: 'SIGTERM' });
    expect(await statuses('sigterm')).toEqual({ completed: 1, queued: 5 });
  });

  it('a consumer killed with SIGKILL mid-job: another consumer completes its jobs after the lease', async () => {
    const ids = await Promise.all([1, 2, 3].map((i) => enqueue(t.db, 'crash', { hang: true, i })));
    const child = spawn(process.execPath, [CLI, 'work', '--queue', 'crash', '--handler', recorder, '--lease', '2s', '--concurrency', '3'], { env });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('close', (_code, signal) => r(signal)));
    await eventually(async () => (await t.db.query('SELECT count(*)::int AS n FROM hung')).rows[0]!.n === 3);
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(await statuses('crash')).toEqual({ running: 3 });
    // The rescuer (run by the second consumer) puts them back once the lease is out; this time they finish.
    await t.db.query(`UPDATE qmaint.jobs SET payload = payload - 'hang' WHERE queue = 'crash'`);
    const rescued: number[] = [];
    const c = new Consumer(t.db, {
      queue: 'crash',
      listen: false,
      rescueEveryMs: 200,
      pollMinMs: 20,
      pollMaxMs: 100,
      backoffBaseMs: 1,
      backoffCapMs: 5,
      handler: async (job) => {
        await t.db.query('INSERT INTO handled VALUES ($1, $2)', [job.id, job.retryCount]);
      },
    });
    c.on('rescued', (r) => rescued.push(r.requeued));
    await c.start();
    await eventually(async () => (await statuses('crash')).completed === 3, 20_000);
    await c.stop();
    expect(rescued.reduce((a, b) => a + b, 0)).toBe(3);
    const { rows } = await t.db.query('SELECT id, retry_count FROM handled WHERE id = ANY ($1::bigint[]) ORDER BY id', [ids]);
    expect(rows).toEqual([...ids].sort((a, b) => Number(a) - Number(b)).map((id) => ({ id, retry_count: 1 })));
  });

  it('an idle worker survives a failed low-water refresh (statement_timeout under a lock) and keeps working', async () => {
    await t.db.query(`ALTER DATABASE "${t.name}" SET statement_timeout = '1s'`);
    const child = spawn(process.execPath, [CLI, 'work', '--queue', 'idle-fault', '--handler', recorder, '--poll-max', '200ms', '--json'], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      await eventually(() => stderr.includes('working queue idle-fault'));
      const holder = await t.client();
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE qmaint.partition_policy IN ACCESS EXCLUSIVE MODE');
      await new Promise((r) => setTimeout(r, 3000));
      await holder.query('COMMIT');
      const id = await enqueue(t.db, 'idle-fault', {});
      await eventually(async () => (await statuses('idle-fault')).completed === 1, 20_000);
      child.kill('SIGTERM');
      expect(await exited, stderr).toBe(0);
      // Which step hits the lock first depends on where the idle loop is (the start-up rescue, a claim's
      // periodic low-water read, the idle refresh); each is reported and retried.
      expect(stderr).toMatch(/database error during (low-water refresh|claim|rescue): canceling statement due to statement timeout \(retrying\)/);
      expect(JSON.parse(stdout)).toMatchObject({ ok: true, completed: 1 });
      expect((await t.db.query('SELECT id FROM handled WHERE id = $1', [id])).rowCount).toBe(1);
    } finally {
      child.kill('SIGKILL');
      await t.db.query(`ALTER DATABASE "${t.name}" RESET statement_timeout`);
    }
  });

  it('transaction mode: an attempt that crashed the worker counts (the claim committed before the handler ran)', async () => {
    const suicide = module('suicide.mjs', `export default async () => { process.kill(process.pid, 'SIGKILL'); await new Promise(() => {}); };\n`);
    const id = await enqueue(t.db, 'tx-crash', {}, { maxRetries: 0 });
    const r = await runCli(['work', '--queue', 'tx-crash', '--handler', suicide, '--mode', 'transaction', '--concurrency', '1', '--lease', '5s'], {
      env,
    });
    expect(r.signal).toBe('SIGKILL');
    const { rows } = await t.db.query('SELECT status::text, attempt, retry_count FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]).toEqual({ status: 'running', attempt: 1, retry_count: 0 });
    // Once its lease is out the rescuer fails it: no retries were left, so no crash loop.
    await t.db.query(`SELECT qmaint.rescue_expired(now() + interval '6 seconds')`);
    const after = await t.db.query('SELECT status::text, last_error FROM qmaint.jobs WHERE id = $1', [id]);
    expect(after.rows[0]).toMatchObject({ status: 'failed', last_error: expect.stringMatching(/lease of attempt \d+ held by .* expired/) as string });
  });

  it("transaction mode: job.client is the handler module's own pg, so the type parsers it sets apply", async () => {
    // The CLI is one bundled file (dist/cli.js) with pg left out of it: were pg
    // bundled, job.client would be another copy's client and return a Date here.
    const parsing = module(
      'parsing.mjs',
      `import pg from ${JSON.stringify(path.resolve('node_modules/pg/lib/index.js'))};
pg.types.setTypeParser(pg.types.builtins.DATE, (text) => 'date ' + text);
export default async (job) => {
  const { rows } = await job.client.query("SELECT DATE '2026-12-02' AS d");
  await job.client.query('INSERT INTO parsed VALUES ($1, $2)', [job.id, typeof rows[0].d === 'string' ? rows[0].d : 'not parsed: ' + String(rows[0].d)]);
};
`,
    );
    await t.db.query('CREATE TABLE parsed (id bigint, d text)');
    const id = await enqueue(t.db, 'tx-parse', {});
    const r = await runCli(['work', '--queue', 'tx-parse', '--handler', parsing, '--mode', 'transaction', '--drain', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ completed: 1, failed: 0 });
    expect((await t.db.query('SELECT id::text, d FROM parsed')).rows).toEqual([{ id, d: 'date 2026-12-02' }]);
  });

  it('transaction mode: an attempt that ran the worker out of memory counts too', async () => {
    const hog = module('hog.mjs', `export default async () => { const keep = []; for (;;) keep.push(new Array(1e6).fill(1)); };\n`);
    const id = await enqueue(t.db, 'tx-oom', {}, { maxRetries: 0 });
    const r = await runCli(['work', '--queue', 'tx-oom', '--handler', hog, '--mode', 'transaction', '--concurrency', '1', '--lease', '5s'], {
      env: { ...env, NODE_OPTIONS: '--max-old-space-size=64' },
    });
    expect(r.code).not.toBe(0); // V8 gave up: the process died (abort), no orderly exit
    expect(r.stderr).toMatch(/heap out of memory/i);
    const { rows } = await t.db.query('SELECT status::text, attempt, retry_count FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]).toEqual({ status: 'running', attempt: 1, retry_count: 0 });
    await t.db.query(`SELECT qmaint.rescue_expired(now() + interval '6 seconds')`);
    const after = await t.db.query('SELECT status::text FROM qmaint.jobs WHERE id = $1', [id]);
    expect(after.rows[0]).toEqual({ status: 'failed' });
  });

  it('--timeout: a hung handler fails its job at the deadline', async () => {
    const id = await enqueue(t.db, 'cli-timeout', { hang: true }, { maxRetries: 0 });
    const r = await runCli(['work', '--queue', 'cli-timeout', '--handler', recorder, '--drain', '--timeout', '0.5', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ failed: 1, timedOut: 1, completed: 0 });
    expect(r.stderr).toMatch(new RegExp(`job ${id} timed out after 0.5 s`));
    expect(await statuses('cli-timeout')).toEqual({ failed: 1 });
  });

  it.runIf(pgbouncerUrl)('works through PgBouncer in transaction pooling mode (no LISTEN, polling)', async () => {
    const bouncerEnv = cleanEnv({ DATABASE_URL: t.bouncerUrl! });
    await enqueueMany(
      t.db,
      'bouncer',
      Array.from({ length: 200 }, (_, i) => ({ i })),
    );
    await enqueue(t.db, 'bouncer', { boom: true }, { maxRetries: 0 });
    const r = await runCli(['work', '--queue', 'bouncer', '--handler', recorder, '--drain', '--no-listen', '--concurrency', '5', '--batch', '20', '--json'], {
      env: bouncerEnv,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ completed: 200, failed: 1 });
    expect(await statuses('bouncer')).toEqual({ completed: 200, failed: 1 });
    // Enqueue through PgBouncer too, in a transaction, and the transaction mode consumer.
    const e = await runCli(['enqueue', '--queue', 'bouncer2', '--file', '-'], { env: bouncerEnv, input: '{"a":1}\n{"a":2}\n' });
    expect(e.code, e.stderr).toBe(0);
    const tx = await runCli(['work', '--queue', 'bouncer2', '--handler', recorder, '--drain', '--no-listen', '--mode', 'transaction', '--concurrency', '2'], {
      env: bouncerEnv,
    });
    expect(tx.code, tx.stderr).toBe(0);
    expect(await statuses('bouncer2')).toEqual({ completed: 2 });
    // LISTEN on a direct connection while claims go through PgBouncer; and a forgotten --no-listen still works (it polls).
    await enqueueMany(t.db, 'bouncer3', [1, 2, 3]);
    const direct = await runCli(['work', '--queue', 'bouncer3', '--handler', recorder, '--drain', '--listen-url', t.url], { env: bouncerEnv });
    expect(direct.code, direct.stderr).toBe(0);
    await enqueueMany(t.db, 'bouncer3', [4, 5]);
    const forgot = await runCli(['work', '--queue', 'bouncer3', '--handler', recorder, '--drain'], { env: bouncerEnv });
    expect(forgot.code, forgot.stderr).toBe(0);
    expect(await statuses('bouncer3')).toEqual({ completed: 5 });
  });
});
