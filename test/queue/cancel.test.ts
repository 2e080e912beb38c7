// jobs cancel on running jobs: the row ends cancelled at once, the consumer
// holding it is told (NOTIFY qmaint_cancel) and aborts the handler's signal,
// and nothing the handler does afterwards changes the job.
import { describe, expect, it } from 'vitest';
import { cancelJobs } from '../../src/queue/admin.js';
import { Consumer, JobCancelledError, type ConsumerOptions, type Job } from '../../src/queue/consumer.js';
import { enqueue, enqueueKeyed } from '../../src/queue/enqueue.js';
import { setDeadLetter } from '../../src/queue/queues.js';
import { cleanEnv, eventually, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });

async function job(id: string): Promise<{ status: string; queue: string; locked_by: string | null; last_error: string | null }> {
  const { rows } = await t.db.query<{ status: string; queue: string; locked_by: string | null; last_error: string | null }>(
    'SELECT status::text AS status, queue, locked_by, last_error FROM qmaint.jobs WHERE id = $1',
    [id],
  );
  return rows[0]!;
}

/** A consumer whose handler records what it saw; `gate` decides how the handler ends. */
function consumer(options: Partial<ConsumerOptions> & { queue: string }, gate: (job: Job) => Promise<unknown>) {
  const seen: { started: string[]; reasons: unknown[]; cancelled: string[]; lost: string[] } = { started: [], reasons: [], cancelled: [], lost: [] };
  const c = new Consumer(t.db, {
    handler: async (j) => {
      seen.started.push(j.id);
      j.signal.addEventListener('abort', () => seen.reasons.push(j.signal.reason));
      return gate(j);
    },
    pollMinMs: 10,
    pollMaxMs: 50,
    leaseSeconds: 2,
    ...options,
  });
  c.on('cancelled', (j) => seen.cancelled.push(j.id));
  c.on('lease-lost', (j) => seen.lost.push(j.id));
  return { c, seen };
}

const aborted = (j: Job) => new Promise<void>((resolve) => j.signal.addEventListener('abort', () => resolve()));

describe('cancelling a running job', () => {
  it('lease mode: the handler sees signal.aborted with a JobCancelledError; the row ends cancelled; CLI counts it as running', async () => {
    const id = await enqueue(t.db, 'cr-lease', { n: 1 });
    const queuedToo = await enqueue(t.db, 'cr-lease', { n: 2 }, { runAt: new Date(Date.now() + 3_600_000) });
    // A lease of 10 minutes: the heartbeat (every 200 s) cannot be what finds the cancel, the NOTIFY is.
    const { c, seen } = consumer({ queue: 'cr-lease', leaseSeconds: 600 }, async (j) => {
      await aborted(j);
      throw new Error('stopped on request');
    });
    await c.start();
    try {
      await eventually(() => seen.started.includes(id));
      const dry = await runCli(['jobs', 'cancel', '--queue', 'cr-lease', '--dry-run', '--json'], { env });
      expect(dry.json()).toMatchObject({ ok: true, dryRun: true, matching: 2, queued: 1, running: 1 });
      expect((await job(id)).status).toBe('running');
      const r = await runCli(['jobs', 'cancel', '--queue', 'cr-lease', '--json'], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.json()).toMatchObject({ ok: true, action: 'cancel', count: 2, queued: 1, running: 1, runningIds: [id] });
      await eventually(() => seen.cancelled.includes(id));
      expect(seen.reasons).toHaveLength(1);
      expect(seen.reasons[0]).toBeInstanceOf(JobCancelledError);
      await eventually(() => c.stats.cancelled === 1);
    } finally {
      await c.stop();
    }
    // The handler's failure came after the cancel: dropped, the job stays cancelled.
    expect(await job(id)).toMatchObject({ status: 'cancelled', locked_by: null });
    expect((await job(id)).last_error).toMatch(/^cancelled at .* while attempt 1 ran on /);
    expect((await job(queuedToo)).status).toBe('cancelled');
    expect(c.stats).toMatchObject({ completed: 0, failed: 0, cancelled: 1, lost: 0 });
    expect(seen.lost).toEqual([]);
  });

  it('a handler that first reads job.signal after the cancel finds it already aborted with the JobCancelledError', async () => {
    const id = await enqueue(t.db, 'cr-late-read', {});
    let cancelled!: () => void;
    const told = new Promise<void>((r) => (cancelled = r));
    const read: { aborted: boolean; reason: unknown }[] = [];
    let started = false;
    const c = new Consumer(t.db, {
      queue: 'cr-late-read',
      leaseSeconds: 600,
      pollMinMs: 10,
      handler: async (j) => {
        started = true;
        await told;
        read.push({ aborted: j.signal.aborted, reason: j.signal.reason });
      },
    });
    c.on('cancelled', (j) => {
      if (j.id === id) cancelled();
    });
    await c.start();
    try {
      await eventually(() => started);
      await cancelJobs(t.db, { ids: [id] }, new Date());
      await eventually(() => read.length === 1);
    } finally {
      await c.stop();
    }
    expect(read[0]!.aborted).toBe(true);
    expect(read[0]!.reason).toBeInstanceOf(JobCancelledError);
    expect((await job(id)).status).toBe('cancelled');
    expect(c.stats).toMatchObject({ completed: 0, cancelled: 1, lost: 0 });
  });

  it('a handler that ignores the signal and completes later changes nothing (polling only: found by the fenced completion)', async () => {
    const id = await enqueue(t.db, 'cr-ignore', {});
    let finish!: () => void;
    const later = new Promise<void>((r) => (finish = r));
    const { c, seen } = consumer({ queue: 'cr-ignore', listen: false, leaseSeconds: 600 }, () => later);
    await c.start();
    try {
      await eventually(() => seen.started.includes(id));
      const report = await cancelJobs(t.db, { ids: [id] }, new Date());
      expect(report).toEqual({ ids: [id], queued: 0, running: [id] });
      expect((await job(id)).status).toBe('cancelled');
      finish();
      await eventually(() => seen.cancelled.includes(id));
    } finally {
      await c.stop();
    }
    expect((await job(id)).status).toBe('cancelled');
    expect(c.stats).toMatchObject({ completed: 0, cancelled: 1, lost: 0 });
  });

  it('polling only (no NOTIFY): the heartbeat finds the cancel and aborts the signal with a JobCancelledError', async () => {
    const id = await enqueue(t.db, 'cr-beat', {});
    const { c, seen } = consumer({ queue: 'cr-beat', listen: false, leaseSeconds: 1 }, async (j) => {
      await aborted(j);
    });
    await c.start();
    try {
      await eventually(() => seen.started.includes(id));
      await cancelJobs(t.db, { ids: [id] }, new Date());
      await eventually(() => seen.cancelled.includes(id));
    } finally {
      await c.stop();
    }
    expect(seen.reasons[0]).toBeInstanceOf(JobCancelledError);
    expect((await job(id)).status).toBe('cancelled');
    expect(c.stats).toMatchObject({ completed: 0, cancelled: 1, lost: 0 });
  });

  it('transaction mode: the handler is aborted, its writes roll back, the job stays cancelled (also when it ignores the signal)', async () => {
    await t.db.query('CREATE TABLE cancel_writes (job bigint PRIMARY KEY)');
    const obeys = await enqueue(t.db, 'cr-tx', { obey: true });
    const ignores = await enqueue(t.db, 'cr-tx', { obey: false });
    const { c, seen } = consumer({ queue: 'cr-tx', mode: 'transaction', concurrency: 2, leaseSeconds: 600 }, async (j) => {
      await j.client!.query('INSERT INTO cancel_writes VALUES ($1)', [j.id]);
      if ((j.payload as { obey: boolean }).obey) {
        await aborted(j);
        throw j.signal.reason;
      }
      // Ignores its signal: returns well after the cancel.
      await new Promise((r) => setTimeout(r, 400));
    });
    await c.start();
    try {
      await eventually(() => seen.started.length === 2);
      // The claim committed on its own: cancel neither waits for the handlers' transactions nor deadlocks with them.
      const report = await cancelJobs(t.db, { ids: [obeys, ignores] }, new Date());
      expect(report.running.sort()).toEqual([obeys, ignores].sort());
      await eventually(() => seen.cancelled.length === 2);
      await eventually(() => c.stats.cancelled === 2);
      await new Promise((r) => setTimeout(r, 600));
    } finally {
      await c.stop();
    }
    expect((await job(obeys)).status).toBe('cancelled');
    expect((await job(ignores)).status).toBe('cancelled');
    expect((await t.db.query('SELECT job FROM cancel_writes')).rows).toEqual([]);
    expect(c.stats).toMatchObject({ completed: 0, failed: 0, cancelled: 2 });
    expect(seen.reasons.every((r) => r instanceof JobCancelledError)).toBe(true);
  });

  it('a cancelled running job frees its key and does not go to the dead-letter queue', async () => {
    await setDeadLetter(t.db, 'cr-key', 'cr-key.dead');
    const keyed = await enqueueKeyed(t.db, 'cr-key', {}, { key: 'only', maxRetries: 0 });
    const { c, seen } = consumer({ queue: 'cr-key' }, async (j) => {
      await aborted(j);
      throw new Error('aborted');
    });
    await c.start();
    try {
      await eventually(() => seen.started.includes(keyed.id));
      await cancelJobs(t.db, { queue: 'cr-key' }, new Date());
      await eventually(() => seen.cancelled.includes(keyed.id));
    } finally {
      await c.stop();
    }
    expect(await job(keyed.id)).toMatchObject({ status: 'cancelled', queue: 'cr-key' });
    expect((await t.db.query(`SELECT * FROM qmaint.job_keys WHERE queue = 'cr-key'`)).rows).toEqual([]);
    expect((await enqueueKeyed(t.db, 'cr-key', {}, { key: 'only' })).outcome).toBe('inserted');
  });
});
