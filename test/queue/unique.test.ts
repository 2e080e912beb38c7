import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect, type Db } from '../../src/db.js';
import { Consumer, type Job } from '../../src/queue/consumer.js';
import { enqueue, enqueueKeyed, enqueueMany, type JobSpec, type KeyOutcome } from '../../src/queue/enqueue.js';
import { cancelJobs, retryJobs } from '../../src/queue/admin.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();

/** Live (queued or running) jobs per key of a queue, and the key rows, as the database has them. */
async function liveByKey(queue: string): Promise<Map<string, number>> {
  const { rows } = await t.db.query<{ job_key: string; n: number }>(
    `SELECT job_key, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 AND job_key IS NOT NULL AND status IN ('queued', 'running') GROUP BY job_key`,
    [queue],
  );
  return new Map(rows.map((r) => [r.job_key, r.n]));
}

/** Key rows that do not name a live job of their queue with that key. */
async function danglingKeys(): Promise<number> {
  const { rows } = await t.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM qmaint.job_keys k
      WHERE NOT EXISTS (SELECT 1 FROM qmaint.jobs j WHERE j.id = k.job_id AND j.queue = k.queue AND j.job_key = k.key AND j.status IN ('queued', 'running'))`,
  );
  return rows[0]!.n;
}

function drain(db: Db, queue: string, handler: (job: Job) => unknown = () => undefined): Promise<unknown> {
  const c = new Consumer(db, { queue, handler, listen: false, drain: true, pollMinMs: 5, pollMaxMs: 20, backoffBaseMs: 1, backoffCapMs: 2 });
  return c.start().then(() => c.done);
}

describe('unique jobs', () => {
  it('skip: one live job per key; the key is free again once the job completes', async () => {
    const a = await enqueueKeyed(t.db, 'uk', { n: 1 }, { key: 'order-1' });
    expect(a.outcome).toBe('inserted');
    const b = await enqueueKeyed(t.db, 'uk', { n: 2 }, { key: 'order-1' });
    expect(b).toEqual({ id: a.id, outcome: 'skipped' });
    // enqueue() with a key returns the holder's id; another queue has its own keys.
    expect(await enqueue(t.db, 'uk', { n: 3 }, { key: 'order-1' })).toBe(a.id);
    const other = await enqueueKeyed(t.db, 'uk-other', { n: 4 }, { key: 'order-1' });
    expect(other.outcome).toBe('inserted');
    const { rows } = await t.db.query<{ payload: unknown; job_key: string }>('SELECT payload, job_key FROM qmaint.jobs WHERE id = $1', [a.id]);
    expect(rows[0]).toEqual({ payload: { n: 1 }, job_key: 'order-1' });
    await drain(t.db, 'uk');
    expect(await liveByKey('uk')).toEqual(new Map());
    const c = await enqueueKeyed(t.db, 'uk', { n: 5 }, { key: 'order-1' });
    expect(c.outcome).toBe('inserted');
    expect(c.id).not.toBe(a.id);
    expect(await danglingKeys()).toBe(0);
  });

  it('replace: a queued holder gets the new payload and run_at; a running one is left alone and the new job skipped', async () => {
    const first = await enqueueKeyed(t.db, 'rep', { v: 1 }, { key: 'k', runAt: new Date(Date.now() + 3_600_000) });
    const later = new Date(Date.now() + 7_200_000);
    const second = await enqueueKeyed(t.db, 'rep', { v: 2 }, { key: 'k', keyMode: 'replace', runAt: later });
    expect(second).toEqual({ id: first.id, outcome: 'replaced' });
    const { rows } = await t.db.query<{ payload: unknown; run_at: Date; n: number }>(
      `SELECT payload, run_at, (SELECT count(*)::int FROM qmaint.jobs WHERE queue = 'rep') AS n FROM qmaint.jobs WHERE id = $1`,
      [first.id],
    );
    expect(rows[0]!.payload).toEqual({ v: 2 });
    expect(rows[0]!.run_at.getTime()).toBe(later.getTime());
    expect(rows[0]!.n).toBe(1);
    // Running: left alone.
    await t.db.query(`UPDATE qmaint.jobs SET status = 'running', locked_by = 'w', locked_until = now() + interval '1 minute' WHERE id = $1`, [first.id]);
    const third = await enqueueKeyed(t.db, 'rep', { v: 3 }, { key: 'k', keyMode: 'replace' });
    expect(third).toEqual({ id: first.id, outcome: 'skipped' });
    expect((await t.db.query<{ payload: unknown }>('SELECT payload FROM qmaint.jobs WHERE id = $1', [first.id])).rows[0]!.payload).toEqual({ v: 2 });
  });

  it('frees the key when the job fails for good or is cancelled, and retry takes it back only while it is free', async () => {
    const failing = await enqueueKeyed(t.db, 'free', { bad: true }, { key: 'f', maxRetries: 0 });
    await drain(t.db, 'free', () => {
      throw new Error('no');
    });
    expect((await t.db.query<{ status: string }>('SELECT status::text FROM qmaint.jobs WHERE id = $1', [failing.id])).rows[0]!.status).toBe('failed');
    const next = await enqueueKeyed(t.db, 'free', { bad: false }, { key: 'f', runAt: new Date(Date.now() + 3_600_000) });
    expect(next.outcome).toBe('inserted');
    // The failed job's key is held by the new one: retry leaves it failed.
    expect(await retryJobs(t.db, { ids: [failing.id] }, new Date())).toEqual([]);
    expect((await cancelJobs(t.db, { ids: [next.id] }, new Date())).ids).toEqual([next.id]);
    expect((await t.db.query<{ status: string }>('SELECT status::text FROM qmaint.jobs WHERE id = $1', [next.id])).rows[0]!.status).toBe('cancelled');
    // Free now: retry takes the key back.
    expect(await retryJobs(t.db, { ids: [failing.id] }, new Date())).toEqual([failing.id]);
    expect(await liveByKey('free')).toEqual(new Map([['f', 1]]));
    expect((await enqueueKeyed(t.db, 'free', {}, { key: 'f' })).id).toBe(failing.id);
    expect(await danglingKeys()).toBe(0);
  });

  it('holds with 20 producers racing on the same keys, one by one and through COPY: exactly one live job per key', async () => {
    const keys = Array.from({ length: 25 }, (_, i) => `key-${i}`);
    const pools = await Promise.all(Array.from({ length: 20 }, () => connect({ databaseUrl: t.url, max: 2 })));
    const outcomes: KeyOutcome[] = [];
    let copied = 0;
    try {
      await Promise.all(
        pools.map(async (db, p) => {
          for (let round = 0; round < 3; round++) {
            if (p % 2 === 0) {
              // Through COPY: every key, in a shuffled order, with a few keyless jobs.
              const specs: JobSpec[] = [...keys].sort(() => Math.random() - 0.5).map((key) => ({ payload: { p, round }, key }));
              specs.push({ payload: { p, keyless: true } });
              const made = await enqueueMany(db, 'race', specs, { specs: true, keyMode: p % 4 === 0 ? 'skip' : 'replace' });
              copied += made;
            } else {
              for (const key of keys) outcomes.push((await enqueueKeyed(db, 'race', { p, round }, { key, keyMode: round === 1 ? 'replace' : 'skip' })).outcome);
            }
          }
        }),
      );
    } finally {
      await Promise.all(pools.map((db) => db.close()));
    }
    const live = await liveByKey('race');
    expect([...live.keys()].sort()).toEqual([...keys].sort());
    expect([...live.values()].every((n) => n === 1)).toBe(true);
    const { rows } = await t.db.query<{ keyed: number; keyless: number; keyrows: number }>(
      `SELECT count(*) FILTER (WHERE job_key IS NOT NULL)::int AS keyed, count(*) FILTER (WHERE job_key IS NULL)::int AS keyless,
              (SELECT count(*)::int FROM qmaint.job_keys WHERE queue = 'race') AS keyrows
         FROM qmaint.jobs WHERE queue = 'race'`,
    );
    expect(rows[0]).toEqual({ keyed: keys.length, keyless: 30, keyrows: keys.length });
    expect(outcomes.filter((o) => o === 'inserted').length + copied).toBe(keys.length + 30);
    expect(await danglingKeys()).toBe(0);
  });

  it('holds while consumers finish keyed jobs during the race: never two live jobs per key, no key row left over', async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `hot-${i}`);
    const pools = await Promise.all(Array.from({ length: 20 }, () => connect({ databaseUrl: t.url, max: 2 })));
    const worker = await connect({ databaseUrl: t.url, max: 4 });
    const c = new Consumer(worker, { queue: 'churn', handler: () => undefined, listen: false, pollMinMs: 1, pollMaxMs: 5, batch: 5 });
    await c.start();
    let made = 0;
    let racing = true;
    const violations: string[] = [];
    const watch = (async () => {
      while (racing) {
        const { rows } = await t.db.query<{ job_key: string }>(
          `SELECT job_key FROM qmaint.jobs WHERE queue = 'churn' AND status IN ('queued', 'running') GROUP BY job_key HAVING count(*) > 1`,
        );
        violations.push(...rows.map((r) => r.job_key));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      await Promise.all(
        pools.map(async (db, p) => {
          for (let round = 0; round < 5; round++) {
            if (p % 2 === 0) {
              const n = await enqueueMany(
                db,
                'churn',
                keys.map((key) => ({ payload: { p }, key })),
                { specs: true, keyMode: 'skip' },
              );
              made += n;
            } else {
              for (const key of keys) if ((await enqueueKeyed(db, 'churn', { p }, { key, keyMode: 'replace' })).outcome === 'inserted') made++;
            }
          }
        }),
      );
    } finally {
      racing = false;
      await watch;
      await c.stop();
      await Promise.all([...pools, worker].map((db) => db.close()));
    }
    expect(violations).toEqual([]);
    // Every job made is accounted for, and finished ones freed their keys on the way.
    const { rows } = await t.db.query<{ total: number; done: number; live: number; keyrows: number }>(
      `SELECT count(*)::int AS total, count(*) FILTER (WHERE status = 'completed')::int AS done,
              count(*) FILTER (WHERE status IN ('queued', 'running'))::int AS live,
              (SELECT count(*)::int FROM qmaint.job_keys WHERE queue = 'churn') AS keyrows
         FROM qmaint.jobs WHERE queue = 'churn'`,
    );
    expect(rows[0]!.total).toBe(made);
    expect(rows[0]!.done).toBeGreaterThan(0);
    expect(rows[0]!.keyrows).toBe(rows[0]!.live);
    expect(await danglingKeys()).toBe(0);
  });

  it('COPY with keys: first of a key wins under skip, last under replace; keyless rows go in as they are', async () => {
    const specs: JobSpec[] = [
      { payload: { v: 1 }, key: 'a' },
      { payload: { v: 2 }, key: 'a' },
      { payload: { v: 3 } },
      { payload: { v: 4 }, key: 'b', timeout: 2 },
    ];
    let counts: Record<KeyOutcome, number> | undefined;
    expect(await enqueueMany(t.db, 'copyk', specs, { specs: true, keyMode: 'skip', onKeys: (c) => (counts = c) })).toBe(3);
    expect(counts).toEqual({ inserted: 2, replaced: 0, skipped: 1 });
    expect(
      await enqueueMany(
        t.db,
        'copyk',
        [
          { payload: { v: 5 }, key: 'a' },
          { payload: { v: 6 }, key: 'a' },
        ],
        { specs: true, keyMode: 'replace' },
      ),
    ).toBe(0);
    const { rows } = await t.db.query<{ job_key: string | null; payload: { v: number }; timeout_ms: number | null }>(
      `SELECT job_key, payload, timeout_ms FROM qmaint.jobs WHERE queue = 'copyk' ORDER BY job_key NULLS LAST`,
    );
    expect(rows).toEqual([
      { job_key: 'a', payload: { v: 6 }, timeout_ms: null },
      { job_key: 'b', payload: { v: 4 }, timeout_ms: 2000 },
      { job_key: null, payload: { v: 3 }, timeout_ms: null },
    ]);
  });

  it('retention never drops a partition holding keyed live jobs, and leaves no key row behind', async () => {
    const old = new Date('2020-03-04T05:00:00Z');
    const done = await enqueueKeyed(t.db, 'ret', {}, { key: 'old-done', createdAt: old });
    const live = await enqueueKeyed(t.db, 'ret', {}, { key: 'old-live', createdAt: old, runAt: new Date(Date.now() + 3_600_000) });
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = $1`, [done.id]);
    const part = (await t.db.query<{ p: string }>('SELECT tableoid::regclass::text AS p FROM qmaint.jobs WHERE id = $1', [live.id])).rows[0]!.p;
    await expect(t.db.query(`SELECT qmaint.assert_drained($1::regclass)`, [part])).rejects.toThrow(/holds queued or running jobs/);
    await cancelJobs(t.db, { ids: [live.id] }, new Date());
    await t.db.query(`SELECT qmaint.assert_drained($1::regclass)`, [part]);
    expect((await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.job_keys WHERE queue = 'ret'`)).rows[0]!.n).toBe(0);
  });

  it('refuses bad keys and key modes before anything is sent', async () => {
    await expect(enqueueKeyed(t.db, 'bad', {}, { key: '' })).rejects.toThrow(/key "" is not valid/);
    await expect(enqueueKeyed(t.db, 'bad', {}, { key: 'x', keyMode: 'merge' as never })).rejects.toThrow(/key mode "merge"/);
    await expect(enqueueMany(t.db, 'bad', [{ payload: {}, key: 'x' }], { specs: true })).rejects.toThrow(/job 1 has a key: give keyMode/);
    await expect(enqueueMany(t.db, 'bad', [{}], { keyMode: 'skip' })).rejects.toThrow(/keyMode needs specs/);
  });
});

describe('enqueue --key (CLI)', () => {
  const env = cleanEnv({ DATABASE_URL: t.url });
  it('inserts, skips and replaces, with --json and --dry-run; NDJSON lines carry keys', async () => {
    const one = await runCli(['enqueue', '--queue', 'cli-k', '--payload', '{"a":1}', '--key', 'K1', '--json'], { env });
    expect(one.code).toBe(0);
    const first = one.json<{ outcome: string; id: string }>();
    expect(first.outcome).toBe('inserted');
    const again = await runCli(['enqueue', '--queue', 'cli-k', '--payload', '{"a":2}', '--key', 'K1', '--json'], { env });
    expect(again.json()).toMatchObject({ outcome: 'skipped', id: first.id, enqueued: 0 });
    const dry = await runCli(['enqueue', '--queue', 'cli-k', '--payload', '{"a":3}', '--key', 'K1', '--key-mode', 'replace', '--dry-run', '--json'], { env });
    expect(dry.code).toBe(0);
    expect(JSON.stringify(dry.json())).toContain('qmaint.enqueue_keyed');
    const rep = await runCli(['enqueue', '--queue', 'cli-k', '--payload', '{"a":3}', '--key', 'K1', '--key-mode', 'replace'], { env });
    expect(rep.code).toBe(0);
    expect(rep.stdout).toContain(`job ${first.id} holding key K1`);
    const bad = await runCli(['enqueue', '--queue', 'cli-k', '--payload', '{}', '--key', 'K1', '--key-mode', 'merge'], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--key-mode "merge" is not one of skip, replace');

    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-keys-'));
    const file = path.join(dir, 'jobs.ndjson');
    writeFileSync(
      file,
      ['{"payload":{"n":1},"key":"K1"}', '{"payload":{"n":2},"key":"K2"}', '{"payload":{"n":3}}', '{"payload":{"n":4},"key":"K2"}'].join('\n') + '\n',
    );
    const noMode = await runCli(['enqueue', '--queue', 'cli-k', '--file', file, '--envelope'], { env });
    expect(noMode.code).toBe(2);
    expect(noMode.stderr).toContain('line 1 has a key: give --key-mode');
    const bulk = await runCli(['enqueue', '--queue', 'cli-k', '--file', file, '--envelope', '--key-mode', 'skip', '--json'], { env });
    expect(bulk.code).toBe(0);
    expect(bulk.json()).toMatchObject({ enqueued: 2, keys: { inserted: 1, replaced: 0, skipped: 2 } });
    const { rows } = await t.db.query<{ job_key: string | null; payload: unknown }>(
      `SELECT job_key, payload FROM qmaint.jobs WHERE queue = 'cli-k' ORDER BY job_key NULLS LAST`,
    );
    expect(rows).toEqual([
      { job_key: 'K1', payload: { a: 3 } },
      { job_key: 'K2', payload: { n: 2 } },
      { job_key: null, payload: { n: 3 } },
    ]);
  });
});
