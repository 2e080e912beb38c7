import { describe, expect, it } from 'vitest';
import { claimQuery } from '../../src/queue/claim.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const lowWater = async () =>
  (await t.db.query<{ lw: Date }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`)).rows[0]!.lw;
const setLowWater = (v: string) => t.db.query(`UPDATE qmaint.partition_policy SET low_water = $1 WHERE parent_table = 'qmaint.jobs'`, [v]);

async function claim(queue: string, batch: number, leaseSeconds = 60) {
  const { text, values } = claimQuery({ queue, batch, leaseSeconds, workerId: 'test-worker', lowWater: null });
  return (await t.db.query<{ id: string }>(text, values)).rows;
}

describe('the claim statement', () => {
  it('claims in priority, run_at, id order, and from a keyset start only later jobs of that priority', async () => {
    const base = Date.now() - 60_000;
    const low = await Promise.all([0, 1, 2, 3].map((i) => enqueue(t.db, 'order', { i }, { runAt: new Date(base + i * 1000) })));
    const high = await enqueue(t.db, 'order', { high: true }, { priority: 5, runAt: new Date(base + 9000) });
    await enqueue(t.db, 'order', { future: true }, { priority: 9, runAt: new Date(Date.now() + 3_600_000) });
    const first = await claim('order', 2);
    expect(first.map((r) => r.id)).toEqual([high, low[0]]);
    const after = { priority: 0, runAt: new Date(base + 1000), id: low[1]! };
    const q = claimQuery({ queue: 'order', batch: 10, leaseSeconds: 60, workerId: 'w', lowWater: null, after });
    const rows = (await t.db.query<{ id: string }>(q.text, q.values)).rows.map((r) => r.id).sort();
    expect(rows).toEqual([low[2], low[3]].sort());
    expect((await claim('order', 10)).map((r) => r.id)).toEqual([low[1]]); // from the head again: the one the keyset skipped
  });
});

describe('rescue_expired', () => {
  it('requeues expired leases with a retry, fails those out of retries keeping last_error', async () => {
    const a = await enqueue(t.db, 'rescue', { a: 1 }, { maxRetries: 2 });
    const b = await enqueue(t.db, 'rescue', { b: 1 }, { maxRetries: 0 });
    await t.db.query(`UPDATE qmaint.jobs SET last_error = 'earlier failure' WHERE id = $1`, [b]);
    expect(await claim('rescue', 10, 30)).toHaveLength(2);
    const now = await t.db.query<{ r: unknown }>(`SELECT qmaint.rescue_expired() AS r`);
    expect(now.rows[0]!.r).toEqual({ requeued: 0, failed: 0 }); // leases still valid
    const later = await t.db.query<{ r: unknown }>(`SELECT qmaint.rescue_expired(now() + interval '31 seconds') AS r`);
    expect(later.rows[0]!.r).toEqual({ requeued: 1, failed: 1 });
    const { rows } = await t.db.query(
      `SELECT id, status::text, retry_count, locked_by, last_error, run_at > now() + interval '30 seconds' AS backed_off FROM qmaint.jobs WHERE queue = 'rescue' ORDER BY id`,
    );
    expect(rows).toEqual([
      {
        id: a,
        status: 'queued',
        retry_count: 1,
        locked_by: null,
        last_error: expect.stringMatching(/lease of attempt \d+ held by test-worker expired/) as string,
        backed_off: true,
      },
      { id: b, status: 'failed', retry_count: 0, locked_by: null, last_error: 'earlier failure', backed_off: false },
    ]);
  });

  it('runs one at a time: a concurrent call is skipped', async () => {
    const holder = await t.client();
    await holder.query('BEGIN');
    await holder.query('SELECT qmaint.rescue_expired()');
    const second = await t.db.query<{ r: unknown }>('SELECT qmaint.rescue_expired() AS r');
    expect(second.rows[0]!.r).toEqual({ skipped: true });
    await holder.query('COMMIT');
    const third = await t.db.query<{ r: unknown }>('SELECT qmaint.rescue_expired() AS r');
    expect(third.rows[0]!.r).not.toHaveProperty('skipped');
  });

  it('lowers the low-water mark when a live job sits below it', async () => {
    const id = await enqueue(t.db, 'below', {});
    const created = (await t.db.query<{ c: Date }>('SELECT created_at AS c FROM qmaint.jobs WHERE id = $1', [id])).rows[0]!.c;
    await setLowWater(new Date(created.getTime() + 3_600_000).toISOString());
    // The claim cannot see it now (the planner prunes below the mark).
    const { text, values } = claimQuery({ queue: 'below', batch: 1, leaseSeconds: 60, workerId: 'w', lowWater: await lowWater() });
    expect((await t.db.query(text, values)).rowCount).toBe(0);
    await t.db.query('SELECT qmaint.rescue_expired()');
    expect((await lowWater()).getTime()).toBeLessThanOrEqual(created.getTime());
    await setLowWater('-infinity');
  });

  it('lowers the low-water mark when a running job sits below it', async () => {
    // Thirty days back: the only live job below the mark set next, so the running arm alone must find it.
    const id = await enqueue(t.db, 'below-running', {}, { createdAt: new Date(Date.now() - 30 * 86_400_000) });
    const { rows } = await t.db.query<{ c: Date }>(
      `UPDATE qmaint.jobs SET status = 'running', attempt = 1, locked_by = 'w', locked_until = now() + interval '1 hour' WHERE id = $1 RETURNING created_at AS c`,
      [id],
    );
    const created = rows[0]!.c;
    const above = new Date(created.getTime() + 3_600_000).toISOString();
    await setLowWater(above);
    const liveBelow = async (mark: string) => (await t.db.query<{ b: boolean }>('SELECT qmaint.live_below($1) AS b', [mark])).rows[0]!.b;
    expect(await liveBelow(above)).toBe(true);
    expect(await liveBelow('2000-01-01T00:00:00Z')).toBe(false);
    await t.db.query('SELECT qmaint.rescue_expired()');
    expect((await lowWater()).getTime()).toBeLessThanOrEqual(created.getTime());
    expect((await t.db.query('SELECT status::text FROM qmaint.jobs WHERE id = $1', [id])).rows[0]!.status).toBe('running');
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed', locked_by = NULL, locked_until = NULL WHERE id = $1`, [id]);
    await setLowWater('-infinity');
  });
});

describe('qmaint jobs and status', () => {
  it('jobs retry puts failed jobs back and lowers the low-water mark in the same transaction', async () => {
    const id = await enqueue(t.db, 'retry', {}, { maxRetries: 0, createdAt: new Date(Date.now() - 3 * 86_400_000) });
    await t.db.query(`UPDATE qmaint.jobs SET status = 'failed', retry_count = 0, last_error = 'it broke' WHERE id = $1`, [id]);
    await setLowWater(new Date(Date.now() - 86_400_000).toISOString());
    const dry = await runCli(['jobs', 'retry', id, '--dry-run'], { env });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`SELECT id FROM qmaint.retry_jobs(ARRAY[${id}]::bigint[], NULL,`);
    expect(dry.stdout).toMatch(/lock: ROW EXCLUSIVE on qmaint\.jobs/);
    expect(dry.stdout).toMatch(/1 match now/);
    expect((await t.db.query('SELECT status::text FROM qmaint.jobs WHERE id = $1', [id])).rows[0]!.status).toBe('failed');
    const r = await runCli(['jobs', 'retry', id, '--json'], { env });
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, count: 1, ids: [id] });
    const { rows } = await t.db.query('SELECT status::text, retry_count, last_error, created_at FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]).toMatchObject({ status: 'queued', retry_count: 0, last_error: 'it broke' });
    expect((await lowWater()).getTime()).toBeLessThanOrEqual((rows[0]!.created_at as Date).getTime());
    // And the claim, carrying the mark, finds it.
    const claimed = await t.db.query<{ id: string }>(
      claimQuery({ queue: 'retry', batch: 5, leaseSeconds: 60, workerId: 'w', lowWater: await lowWater() }).text,
      claimQuery({ queue: 'retry', batch: 5, leaseSeconds: 60, workerId: 'w', lowWater: await lowWater() }).values,
    );
    expect(claimed.rows.map((j) => j.id)).toEqual([id]);
    await setLowWater('-infinity');
  });

  it('jobs cancel fails queued jobs of a queue; --dry-run changes nothing; bad input exits 2', async () => {
    await enqueueMany(t.db, 'cancel', [1, 2, 3]);
    const dry = await runCli(['jobs', 'cancel', '--queue', 'cancel', '--dry-run', '--json'], { env });
    expect(dry.json()).toMatchObject({ dryRun: true, matching: 3 });
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = 'cancel' AND status = 'queued'`)).rows[0]!.n).toBe(3);
    const r = await runCli(['jobs', 'cancel', '--queue', 'cancel', '--json'], { env });
    expect(r.json()).toMatchObject({ count: 3 });
    const { rows } = await t.db.query(`SELECT DISTINCT status::text, last_error LIKE 'cancelled at%' AS why FROM qmaint.jobs WHERE queue = 'cancel'`);
    expect(rows).toEqual([{ status: 'cancelled', why: true }]);
    for (const args of [
      ['jobs', 'cancel'],
      ['jobs', 'retry', 'abc'],
      ['jobs', 'list', '--status', 'weird'],
    ]) {
      const bad = await runCli(args, { env });
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  it('jobs list filters by queue and status', async () => {
    const r = await runCli(['jobs', 'list', '--queue', 'cancel', '--status', 'cancelled', '--limit', '2', '--json'], { env });
    const jobs = r.json<{ jobs: { queue: string; status: string }[] }>().jobs;
    expect(jobs).toHaveLength(2);
    expect(jobs.every((j) => j.queue === 'cancel' && j.status === 'cancelled')).toBe(true);
    const failed = await runCli(['jobs', 'list', '--queue', 'cancel', '--status', 'failed', '--json'], { env });
    expect(failed.json<{ jobs: unknown[] }>().jobs).toEqual([]);
  });

  it('status counts per queue and status, oldest queued age, jobs per partition', async () => {
    const now = new Date(Date.now() + 600_000);
    await enqueueMany(t.db, 'stat', [1, 2]);
    await enqueue(t.db, 'stat', {}, { runAt: new Date(now.getTime() + 3_600_000) });
    await claim('stat', 1);
    const r = await runCli(['status', '--json', '--now', now.toISOString()], { env });
    expect(r.code).toBe(0);
    const doc = r.json<{
      queues: { queue: string; counts: Record<string, number>; ready: number; oldestQueuedAgeSeconds: number }[];
      partitions: { partition: string; total: number }[];
    }>();
    const stat = doc.queues.find((q) => q.queue === 'stat')!;
    expect(stat.counts).toEqual({ queued: 2, running: 1, completed: 0, failed: 0, cancelled: 0 });
    expect(doc.queues.find((q) => q.queue === 'cancel')!.counts).toMatchObject({ failed: 0, cancelled: 3 });
    expect(stat.ready).toBe(1);
    expect(stat.oldestQueuedAgeSeconds).toBeGreaterThanOrEqual(600);
    const total = (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM qmaint.jobs')).rows[0]!.n;
    expect(doc.partitions.reduce((n, p) => n + p.total, 0)).toBe(total);
    expect(doc.partitions.length).toBeGreaterThanOrEqual(4);
  });
});
