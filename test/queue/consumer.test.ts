import { describe, expect, it } from 'vitest';
import { Consumer, type ConsumerOptions, type Job, type WakeReason } from '../../src/queue/consumer.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { connect } from '../../src/db.js';
import { eventually, freshDatabase } from '../helpers.js';

const t = await freshDatabase();

async function statuses(queue: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ status: string; n: number }>('SELECT status::text, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 GROUP BY 1', [
    queue,
  ]);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

function consumer(queue: string, handler: (job: Job) => unknown, extra: Partial<ConsumerOptions> = {}): Consumer {
  return new Consumer(t.db, { queue, handler, listen: false, pollMinMs: 10, pollMaxMs: 50, backoffBaseMs: 1, backoffCapMs: 5, ...extra });
}

describe('Consumer', () => {
  it('claims every job exactly once across many concurrent consumers (ledger)', async () => {
    const total = 3000;
    await enqueueMany(
      t.db,
      'ledger',
      Array.from({ length: total }, (_, i) => ({ i })),
    );
    const ledger = new Map<string, number>();
    const handler = async (job: Job) => {
      ledger.set(job.id, (ledger.get(job.id) ?? 0) + 1);
      if (Number(job.id) % 7 === 0) await new Promise((r) => setTimeout(r, 1));
    };
    // Separate pools, so the consumers really race in the database.
    const pools = await Promise.all([0, 1, 2, 3, 4, 5].map(() => connect({ databaseUrl: t.url, max: 4 })));
    try {
      const consumers = pools.map(
        (db, i) =>
          new Consumer(db, { queue: 'ledger', handler, listen: false, drain: true, concurrency: 4 + i, batch: 10 + 15 * i, pollMinMs: 5, pollMaxMs: 20 }),
      );
      await Promise.all(consumers.map((c) => c.start()));
      await Promise.all(consumers.map((c) => c.done));
      expect(consumers.reduce((n, c) => n + c.stats.completed, 0)).toBe(total);
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
    expect(ledger.size).toBe(total);
    expect([...ledger.values()].every((n) => n === 1)).toBe(true);
    expect(await statuses('ledger')).toEqual({ completed: total });
  });

  it('retries a failing job with backoff and fails it for good when retries are spent, keeping the error', async () => {
    const id = await enqueue(t.db, 'poison', { bad: true }, { maxRetries: 3 });
    await enqueue(t.db, 'poison', { bad: false });
    const attempts: number[] = [];
    const outcomes: string[] = [];
    const c = consumer('poison', (job) => {
      if ((job.payload as { bad: boolean }).bad) {
        attempts.push(job.retryCount);
        throw new Error(`poisoned payload, attempt ${job.retryCount + 1}`);
      }
    });
    c.on('failed', (_job, _err, outcome) => outcomes.push(`${outcome?.status}:${outcome?.retryCount}`));
    await c.start();
    await eventually(async () => (await statuses('poison')).failed === 1, 15_000);
    await c.stop();
    expect(attempts).toEqual([0, 1, 2, 3]);
    expect(outcomes).toEqual(['queued:1', 'queued:2', 'queued:3', 'failed:3']);
    const { rows } = await t.db.query('SELECT status::text, retry_count, last_error, locked_by FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]).toMatchObject({ status: 'failed', retry_count: 3, locked_by: null });
    expect(rows[0]!.last_error).toMatch(/^Error: poisoned payload, attempt 4/);
    expect(await statuses('poison')).toEqual({ completed: 1, failed: 1 });
  });

  it('backs off exponentially with jitter', async () => {
    // The delay function itself: within [d/2, d] for d = base * 2^(n-1), capped, and not constant.
    const { rows } = await t.db.query<{ n: number; s: number }>(
      `SELECT n, extract(epoch FROM qmaint.retry_delay(n, '1 second', '10 seconds'))::float8 AS s FROM generate_series(1, 6) n, generate_series(1, 50)`,
    );
    for (const r of rows) {
      const d = Math.min(10, 2 ** (r.n - 1));
      expect(r.s).toBeGreaterThanOrEqual(d / 2);
      expect(r.s).toBeLessThanOrEqual(d);
    }
    const firstRetry = rows.filter((r) => r.n === 1).map((r) => r.s);
    expect(new Set(firstRetry).size).toBeGreaterThan(40);
    // A consumer's failure puts run_at in the future by that much (base 10 s here).
    const ids = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => enqueue(t.db, 'backoff', { i })));
    const c = consumer(
      'backoff',
      () => {
        throw new Error('not yet');
      },
      { backoffBaseMs: 10_000, backoffCapMs: 60_000 },
    );
    await c.start();
    await eventually(async () => (await statuses('backoff')).queued === 6 && c.stats.failed === 6);
    await c.stop();
    const after = await t.db.query<{ delay: number; retry_count: number }>(
      `SELECT extract(epoch FROM run_at - updated_at)::float8 AS delay, retry_count FROM qmaint.jobs WHERE id = ANY ($1::bigint[])`,
      [ids],
    );
    for (const r of after.rows) {
      expect(r.retry_count).toBe(1);
      expect(r.delay).toBeGreaterThanOrEqual(5);
      expect(r.delay).toBeLessThanOrEqual(10);
    }
    expect(new Set(after.rows.map((r) => r.delay.toFixed(3))).size).toBeGreaterThan(1);
  });

  it('shuts down gracefully: running handlers finish, unstarted jobs go back untouched', async () => {
    await enqueueMany(
      t.db,
      'graceful',
      Array.from({ length: 10 }, (_, i) => ({ i })),
    );
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const started: string[] = [];
    const c = consumer(
      'graceful',
      async (job) => {
        started.push(job.id);
        await gate;
      },
      { concurrency: 2, batch: 10 },
    );
    await c.start();
    await eventually(() => started.length === 2);
    expect(await statuses('graceful')).toEqual({ running: 10 });
    const stopping = c.stop({ deadlineMs: 10_000 });
    // Unstarted jobs are back in the queue while the two handlers still run.
    await eventually(async () => (await statuses('graceful')).queued === 8);
    release();
    const report = await stopping;
    expect(report).toEqual({ returned: 8, abandoned: 0 });
    expect(started).toHaveLength(2);
    expect(await statuses('graceful')).toEqual({ completed: 2, queued: 8 });
    const { rows } = await t.db.query(`SELECT DISTINCT retry_count, locked_by, locked_until FROM qmaint.jobs WHERE queue = 'graceful' AND status = 'queued'`);
    expect(rows).toEqual([{ retry_count: 0, locked_by: null, locked_until: null }]);
  });

  it('aborts handlers that outlive the shutdown deadline and leaves them to their lease', async () => {
    await enqueue(t.db, 'stuck', {});
    let aborted = false;
    let started = false;
    const c = consumer('stuck', (job) => {
      started = true;
      return new Promise<void>((resolve) => job.signal.addEventListener('abort', () => ((aborted = true), resolve()))).then(() => {
        throw new Error('aborted');
      });
    });
    await c.start();
    // Wait for the handler itself: a claimed job not yet handed to a handler is returned, not abandoned.
    await eventually(() => started);
    const report = await c.stop({ deadlineMs: 50 });
    expect(report).toEqual({ returned: 0, abandoned: 1 });
    expect(aborted).toBe(true);
    expect(await statuses('stuck')).toEqual({ running: 1 });
  });

  it('an idle consumer is woken by NOTIFY, not by its next poll', async () => {
    const wakes: WakeReason[] = [];
    const handled: string[] = [];
    // Polls only once a minute: a prompt pickup can only come from NOTIFY.
    const c = new Consumer(t.db, { queue: 'wake', handler: (job) => void handled.push(job.id), pollMinMs: 60_000, pollMaxMs: 60_000 });
    c.on('wake', (reason) => wakes.push(reason));
    const idle = new Promise<void>((r) => c.once('idle', () => r()));
    const listening = new Promise<boolean>((r) => c.once('listening', r));
    await c.start();
    expect(await listening).toBe(true);
    await idle;
    const id = await enqueue(t.db, 'wake', {});
    await eventually(() => handled.includes(id), 20_000);
    await c.stop();
    expect(wakes[0]).toBe('notify');
  });

  it('a NOTIFY for another queue does not wake it', async () => {
    const wakes: WakeReason[] = [];
    const c = new Consumer(t.db, { queue: 'quiet', handler: () => undefined, pollMinMs: 60_000, pollMaxMs: 60_000 });
    c.on('wake', (reason) => wakes.push(reason));
    const idle = new Promise<void>((r) => c.once('idle', () => r()));
    await c.start();
    await idle;
    await enqueue(t.db, 'noisy', {});
    const listener = await t.client();
    await listener.query('LISTEN qmaint_jobs');
    const delivered = new Promise<void>((r) => listener.once('notification', () => r()));
    await enqueue(t.db, 'noisy', {});
    await delivered; // the notification went out; give the consumer's connection time to see it too
    await new Promise((r) => setTimeout(r, 300));
    await c.stop();
    expect(wakes.length).toBeGreaterThan(0);
    expect(wakes.every((w) => w === 'stop')).toBe(true); // each claim lane woke only for stop()
  });

  it('transaction mode: the handler works in the claiming transaction; a failure undoes its writes', async () => {
    await t.db.query('CREATE TABLE side_effects (job_id bigint PRIMARY KEY)');
    const okId = await enqueue(t.db, 'txmode', { fail: false });
    const badId = await enqueue(t.db, 'txmode', { fail: true }, { maxRetries: 0 });
    const db = await connect({ databaseUrl: t.url, max: 4 });
    try {
      const c = new Consumer(db, {
        queue: 'txmode',
        mode: 'transaction',
        concurrency: 2,
        drain: true,
        listen: false,
        handler: async (job) => {
          await job.client!.query('INSERT INTO side_effects VALUES ($1)', [job.id]);
          if ((job.payload as { fail: boolean }).fail) throw new Error('after writing');
        },
      });
      await c.start();
      await c.done;
    } finally {
      await db.close();
    }
    const { rows } = await t.db.query<{ job_id: string }>('SELECT job_id FROM side_effects');
    expect(rows.map((r) => r.job_id)).toEqual([okId]);
    const jobs = await t.db.query<{ id: string; status: string; last_error: string | null }>(
      'SELECT id, status::text, last_error FROM qmaint.jobs WHERE queue = $1 ORDER BY id',
      ['txmode'],
    );
    expect(jobs.rows.map((r) => r.status)).toEqual(['completed', 'failed']);
    expect(jobs.rows[1]!.id).toBe(badId);
    expect(jobs.rows[1]!.last_error).toMatch(/after writing/);
  });

  it('survives losing its connections: reconnects, and every job still completes once', async () => {
    await enqueueMany(
      t.db,
      'reconnect',
      Array.from({ length: 400 }, (_, i) => ({ i })),
    );
    const db = await connect({ databaseUrl: t.url, max: 4, applicationName: 'qmaint-reconnect' });
    const seen = new Map<string, number>();
    let killed = 0;
    const listening: boolean[] = [];
    try {
      const c = new Consumer(db, {
        queue: 'reconnect',
        // Short lease: a claim whose reply died with the connection is rescued quickly.
        leaseSeconds: 5,
        rescueEveryMs: 500,
        concurrency: 4,
        batch: 20,
        pollMinMs: 10,
        pollMaxMs: 50,
        handler: async (job) => {
          seen.set(job.id, (seen.get(job.id) ?? 0) + 1);
          if (seen.size === 100 && !killed) {
            killed = -1;
            const { rows } = await t.db.query<{ n: number }>(
              `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = 'qmaint-reconnect' AND pid <> pg_backend_pid()`,
            );
            killed = rows[0]!.n;
          }
        },
      });
      c.on('listening', (ok) => listening.push(ok));
      await c.start();
      await eventually(async () => (await statuses('reconnect')).completed === 400, 30_000);
      await eventually(() => listening.filter(Boolean).length >= 2, 10_000); // LISTEN came back
      await c.stop();
    } finally {
      await db.close();
    }
    expect(killed).toBeGreaterThan(1); // the pool's connections and the LISTEN connection
    expect(seen.size).toBe(400);
    // Completions lost with the connection are sent again; a job runs twice only if its lease ran out (not here).
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
  });

  it('drain exits once nothing is ready, leaving future jobs queued', async () => {
    await enqueueMany(t.db, 'drain', [1, 2, 3]);
    await enqueue(t.db, 'drain', { later: true }, { runAt: new Date(Date.now() + 3_600_000) });
    const c = consumer('drain', () => undefined, { drain: true });
    let drained = false;
    c.on('drained', () => (drained = true));
    await c.start();
    const report = await c.done;
    expect(drained).toBe(true);
    expect(report).toEqual({ returned: 0, abandoned: 0 });
    expect(await statuses('drain')).toEqual({ completed: 3, queued: 1 });
  });
});
