// One worker, many queues: qmaint work --tasks MODULE, per-queue concurrency,
// a paused queue among them, and the bad modules refused with exit 2.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueueMany } from '../../src/queue/enqueue.js';
import { pauseQueue } from '../../src/queue/queues.js';
import { QmaintError } from '../../src/errors.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-tasks-'));
const module = (name: string, body: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, body);
  return file;
};
const pgPath = JSON.stringify(path.resolve('node_modules/pg/lib/index.js'));

/**
 * A tasks module over `queues` (name → concurrency, or null for a bare
 * handler): each handler counts the handlers of its queue running at once,
 * inside the worker process, and `close` stores each queue's peak and count.
 */
function peakModule(name: string, queues: Record<string, number | null>): string {
  return module(
    name,
    `import pg from ${pgPath};
const running = {}, peak = {}, handled = {};
const handler = (queue) => async (job) => {
  if (job.queue !== queue) throw new Error('job of ' + job.queue + ' given to the handler of ' + queue);
  running[queue] = (running[queue] ?? 0) + 1;
  peak[queue] = Math.max(peak[queue] ?? 0, running[queue]);
  await new Promise((r) => setTimeout(r, 25));
  running[queue]--;
  handled[queue] = (handled[queue] ?? 0) + 1;
};
const queues = ${JSON.stringify(queues)};
export default Object.fromEntries(Object.entries(queues).map(([q, c]) => [q, c === null ? handler(q) : { handler: handler(q), concurrency: c }]));
export const close = async () => {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  for (const q of Object.keys(peak)) await client.query('INSERT INTO peaks VALUES ($1, $2, $3, $4)', ['${name}', q, peak[q], handled[q]]);
  await client.end();
};
`,
  );
}

await t.db.query('CREATE TABLE peaks (module text, queue text, peak int, handled int)');

async function peaks(name: string): Promise<Record<string, { peak: number; handled: number }>> {
  const { rows } = await t.db.query<{ queue: string; peak: number; handled: number }>('SELECT queue, peak, handled FROM peaks WHERE module = $1', [name]);
  return Object.fromEntries(rows.map((r) => [r.queue, { peak: r.peak, handled: r.handled }]));
}

async function statuses(queue: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ status: string; n: number }>('SELECT status::text, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 GROUP BY 1', [
    queue,
  ]);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

const jobs = (n: number) => Array.from({ length: n }, (_, i) => ({ i }));

describe('qmaint work --tasks', () => {
  for (const mode of ['lease', 'transaction'] as const) {
    it(`${mode} mode: drains three queues, each within its own concurrency, and skips a paused one`, async () => {
      const q = (s: string) => `${mode}-${s}`;
      const file = peakModule(`${mode}.mjs`, { [q('a')]: 2, [q('b')]: 3, [q('c')]: null, [q('paused')]: null });
      for (const s of ['a', 'b', 'c', 'paused']) await enqueueMany(t.db, q(s), jobs(24));
      await pauseQueue(t.db, q('paused'));
      const r = await runCli(['work', '--tasks', file, '--concurrency', '7', '--batch', '4', '--mode', mode, '--drain', '--json'], { env, timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      const doc = r.json<{ queue: string | null; queues: string[]; completed: number; drained: boolean }>();
      expect(doc).toMatchObject({ queue: null, queues: [q('a'), q('b'), q('c'), q('paused')], completed: 72, drained: true });
      for (const s of ['a', 'b', 'c']) expect(await statuses(q(s)), s).toEqual({ completed: 24 });
      expect(await statuses(q('paused'))).toEqual({ queued: 24 });
      const seen = await peaks(`${mode}.mjs`);
      expect(Object.keys(seen).sort()).toEqual([q('a'), q('b'), q('c')]);
      // Each queue's own limit holds, and is reached: the limit is what bounds it.
      expect(seen[q('a')]!.peak).toBe(2);
      expect(seen[q('b')]!.peak).toBeLessThanOrEqual(3);
      expect(seen[q('b')]!.peak).toBeGreaterThan(1);
      expect(seen[q('c')]!.peak).toBeLessThanOrEqual(7);
      expect(seen[q('a')]!.peak + seen[q('b')]!.peak).toBeLessThanOrEqual(7);
    });
  }

  it('without --concurrency the queues’ own concurrency adds up; --queue/--handler still works', async () => {
    const file = peakModule('sum.mjs', { 'sum-a': 1, 'sum-b': 2 });
    await enqueueMany(t.db, 'sum-a', jobs(6));
    await enqueueMany(t.db, 'sum-b', jobs(6));
    const r = await runCli(['work', '--tasks', file, '--drain'], { env, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/working queues sum-a \(1\), sum-b \(2\) as .* \(concurrency 3, lease mode\)/);
    expect((await peaks('sum.mjs'))['sum-a']!.peak).toBe(1);
    const single = module('single.mjs', 'export default async () => {};\n');
    await enqueueMany(t.db, 'single', jobs(3));
    const one = await runCli(['work', '--queue', 'single', '--handler', single, '--drain', '--json'], { env });
    expect(one.code, one.stderr).toBe(0);
    expect(one.json()).toMatchObject({ queue: 'single', queues: ['single'], completed: 3 });
  });

  it('a TypeScript tasks module runs under a loader (Node 20: NODE_OPTIONS=--import tsx), as docs/queue.md says', async () => {
    const file = module(
      'typed.ts',
      `interface Payload { n: number }
const seen: number[] = [];
export default { 'ts-q': { handler: async (job: { payload: Payload }): Promise<void> => void seen.push(job.payload.n), concurrency: 2 } };
`,
    );
    await enqueueMany(t.db, 'ts-q', jobs(3));
    const r = await runCli(['work', '--tasks', file, '--drain', '--json'], { env: { ...env, NODE_OPTIONS: '--import tsx' }, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ queues: ['ts-q'], completed: 3 });
  });

  it('a bad tasks module or bad flags: exit 2, one line, nothing claimed', async () => {
    await enqueueMany(t.db, 'bad', jobs(2));
    const noDefault = module('no-default.mjs', 'export const bad = {};\n');
    const notFunction = module('not-function.mjs', "export default { bad: { handler: 'nope' } };\n");
    const badName = module('bad-name.mjs', `export default { '${'x'.repeat(129)}': async () => {} };\n`);
    const badConcurrency = module('bad-concurrency.mjs', 'export default { bad: { handler: async () => {}, concurrency: 0 } };\n');
    const throws = module('throws.mjs', "throw new Error('module exploded');\n");
    const handlerFile = module('fine.mjs', 'export default async () => {};\n');
    const cases: [string[], RegExp][] = [
      [['--tasks', path.join(dir, 'missing.mjs')], /tasks module .*missing\.mjs not found/],
      [['--tasks', noDefault], /has no default export object/],
      [['--tasks', notFunction], /the handler of queue bad is not a function/],
      [['--tasks', badName], /queue name "x+" is not valid/],
      [['--tasks', badConcurrency], /queue bad: concurrency must be a whole number of at least 1/],
      [['--tasks', throws], /failed to load \(module exploded\)/],
      [['--tasks', handlerFile, '--queue', 'bad', '--handler', handlerFile], /either --tasks, or --queue and --handler/],
      [['--queue', 'bad'], /name the work: --queue and --handler/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(['work', ...args, '--drain'], { env });
      expect(r.code, args.join(' ')).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, args.join(' ')).toHaveLength(1);
      expect(lines[0], args.join(' ')).toMatch(message);
    }
    expect(await statuses('bad')).toEqual({ queued: 2 });
  });
});

describe('Consumer with queues', () => {
  it('refuses both forms at once, no queue, and a task keyed under another queue', () => {
    const h = () => undefined;
    expect(() => new Consumer(t.db, { queue: 'x', handler: h, queues: { x: h } })).toThrow(QmaintError);
    expect(() => new Consumer(t.db, { queues: {} })).toThrow(/names no queue/);
    expect(() => new Consumer(t.db, { queues: { x: { handler: h, queue: 'y' } } })).toThrow(/defined for queue y/);
  });
});
