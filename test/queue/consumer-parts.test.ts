// The parts of the consumer that talk SQL, each on its own, on a real server:
// the claimer, the lease keeper, the result batcher, the listener, and the two
// modes driven through a hand-built context.
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/db.js';
import { claimQuery, parseTimestamptz } from '../../src/queue/claim.js';
import { LocalBuffer } from '../../src/queue/consumer/buffer.js';
import { ClaimLane, Claimer, lastInClaimOrder, type ClaimerOptions } from '../../src/queue/consumer/claimer.js';
import { Attempt, JobCancelledError, JobTimeoutError, runHandler, type ClaimedRow } from '../../src/queue/consumer/job.js';
import { LeaseKeeper } from '../../src/queue/consumer/lease-keeper.js';
import { LeaseMode } from '../../src/queue/consumer/lease-mode.js';
import { Listener } from '../../src/queue/consumer/listener.js';
import type { ModeContext } from '../../src/queue/consumer/mode.js';
import { resolveOptions, type ConsumerOptions } from '../../src/queue/consumer/options.js';
import { ResultBatcher, type FailOutcome, type ResultHooks } from '../../src/queue/consumer/result-batcher.js';
import { Rotation } from '../../src/queue/consumer/rotation.js';
import { TransactionMode } from '../../src/queue/consumer/transaction-mode.js';
import { QmaintError } from '../../src/errors.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { eventually, freshDatabase } from '../helpers.js';

const t = await freshDatabase();

function claimerOptions(_queue: string, extra: Partial<ClaimerOptions> = {}): ClaimerOptions {
  return { workerId: 'parts-test', leaseSeconds: 60, lowWaterRefreshMs: 3_600_000, rescanMs: 3_600_000, ...extra };
}

async function enqueueN(queue: string, n: number, opts: { priority?: number; maxRetries?: number } = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(await enqueue(t.db, queue, { i }, opts));
  return ids;
}

async function rows(
  ids: string[],
): Promise<
  { id: string; status: string; attempt: number; retry_count: number; locked_by: string | null; lease_s: number | null; last_error: string | null }[]
> {
  const { rows } = await t.db.query<{
    id: string;
    status: string;
    attempt: number;
    retry_count: number;
    locked_by: string | null;
    lease_s: number | null;
    last_error: string | null;
  }>(
    `SELECT id, status::text, attempt, retry_count, locked_by, extract(epoch FROM locked_until - now())::float8 AS lease_s, last_error
       FROM qmaint.jobs WHERE id = ANY ($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows;
}

/** Claim jobs as the test's consumer would, and hold them as attempts. */
async function claimed(queue: string, want: number, workerId = 'parts-test'): Promise<Attempt[]> {
  const c = new Claimer(claimerOptions(queue, { workerId }));
  return (await c.claim(t.db, queue, want, null)).map((r) => new Attempt(r, 900));
}

/** Expire the given jobs' leases, rescue them, and claim them again as `workerId` (a newer attempt), in one transaction. */
async function rescueAndReclaim(queue: string, ids: string[], workerId: string): Promise<void> {
  const c = await t.client();
  await c.query('BEGIN');
  await c.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE id = ANY ($1::bigint[])`, [ids]);
  await c.query('SELECT qmaint.rescue_expired()');
  await c.query(`UPDATE qmaint.jobs SET run_at = date_trunc('milliseconds', now()) WHERE id = ANY ($1::bigint[])`, [ids]);
  const q = claimQuery({ queue, batch: ids.length, leaseSeconds: 60, workerId, lowWater: null });
  await c.query(q.text, q.values);
  await c.query('COMMIT');
}

function recordingHooks() {
  const seen = { completed: [] as string[], failed: [] as { id: string; error: string; outcome: FailOutcome }[], lost: [] as string[], errors: [] as string[] };
  const hooks: ResultHooks = {
    completed: (h) => seen.completed.push(h.job.id),
    failed: (h, error, outcome) => seen.failed.push({ id: h.job.id, error, outcome }),
    lost: (h) => seen.lost.push(h.job.id),
    error: (err, during) => seen.errors.push(`${during}: ${err.message}`),
  };
  return { seen, hooks };
}

const batcherOptions = { workerId: 'parts-test', batch: 2, backoffBaseMs: 60_000, backoffCapMs: 120_000 };

describe('Claimer', () => {
  it('claims in claim order, marks the rows running under its lease and worker, and reports the count', async () => {
    const low = await enqueueN('cl-order', 2, { priority: 0 });
    const high = await enqueueN('cl-order', 2, { priority: 5 });
    const counts: number[] = [];
    const c = new Claimer(claimerOptions('cl-order'), (n) => counts.push(n));
    const got = await c.claim(t.db, 'cl-order', 3, null);
    // The statement's RETURNING order is the server's; which jobs it claimed is what counts.
    expect(got.map((r) => r.id).sort((a, b) => Number(a) - Number(b))).toEqual([...high, low[0]].sort((a, b) => Number(a) - Number(b)));
    expect(counts).toEqual([3]);
    const after = await rows([...low, ...high]);
    expect(after.filter((r) => r.status === 'running').map((r) => r.id)).toEqual([...high, low[0]].sort((a, b) => Number(a) - Number(b)));
    for (const r of after.filter((x) => x.status === 'running')) {
      expect(r).toMatchObject({ locked_by: 'parts-test', attempt: 1 });
      expect(r.lease_s).toBeGreaterThan(50);
    }
    expect(await c.claim(t.db, 'cl-order', 3, null)).toHaveLength(1);
    expect(await c.claim(t.db, 'cl-order', 3, null)).toEqual([]);
    expect(counts).toEqual([3, 1]);
  });

  it('a lane continues after its cursor, past a job put back before it, until a short claim sends it to the head', async () => {
    const ids = await enqueueN('cl-lane', 5);
    const c = new Claimer(claimerOptions('cl-lane'));
    const lane = new ClaimLane();
    expect((await c.claim(t.db, 'cl-lane', 2, lane)).map((r) => r.id)).toEqual(ids.slice(0, 2));
    expect(lane.cursor?.id).toBe(ids[1]);
    // The first job goes back to the queue: the lane does not look behind its cursor.
    await t.db.query(`UPDATE qmaint.jobs SET status = 'queued', locked_by = NULL, locked_until = NULL WHERE id = $1`, [ids[0]]);
    expect((await c.claim(t.db, 'cl-lane', 2, lane)).map((r) => r.id)).toEqual(ids.slice(2, 4));
    expect(lane.cursor?.id).toBe(ids[3]);
    // Short (one of two): the next claim starts at the head.
    expect((await c.claim(t.db, 'cl-lane', 2, lane)).map((r) => r.id)).toEqual([ids[4]]);
    expect(lane.cursor).toBeNull();
    expect((await c.claim(t.db, 'cl-lane', 2, lane)).map((r) => r.id)).toEqual([ids[0]]);
  });

  it("hands on the claimed rows' created_at and run_at as the Dates node-pg makes of them, in any session time zone", async () => {
    const [id] = await enqueueN('cl-dates', 1);
    await t.db.query(`UPDATE qmaint.jobs SET run_at = '2026-03-29 01:59:59.123456+00' WHERE id = $1`, [id]);
    const c = new Claimer(claimerOptions('cl-dates'));
    const [got] = await c.claim(t.db, 'cl-dates', 1, null);
    const { rows: stored } = await t.db.query<{ created_at: Date; run_at: Date }>('SELECT created_at, run_at FROM qmaint.jobs WHERE id = $1', [id]);
    expect(got!.created_at).toBeInstanceOf(Date);
    expect([got!.created_at.getTime(), got!.run_at.getTime()]).toEqual([stored[0]!.created_at.getTime(), stored[0]!.run_at.getTime()]);
    expect(got!.run_at.toISOString()).toBe('2026-03-29T01:59:59.123Z');

    // The claim's text, read in sessions of other time zones: offsets of
    // whole hours, half and quarter hours, seconds (local mean time), BC,
    // years before 100, infinity. Every one parses to what node-pg parses.
    const client = t.db.newClient();
    await client.connect();
    try {
      const values = [
        '2026-12-02 11:35:12.123456+00',
        '2026-12-02 11:35:12+00',
        '2026-07-01 23:59:59.9+00',
        '1900-01-01 00:00:00+00',
        '0050-06-01 12:00:00.5+00',
        '0044-03-15 12:00:00+00 BC',
        '10000-01-01 00:00:00+00',
        'infinity',
        '-infinity',
      ];
      for (const zone of ['UTC', 'Asia/Kolkata', 'Asia/Kathmandu', 'America/St_Johns', 'America/Los_Angeles', 'Europe/Amsterdam']) {
        await client.query(`SELECT set_config('TimeZone', $1, false)`, [zone]);
        const { rows } = await client.query<{ text: string; parsed: Date | number }>(
          'SELECT v::timestamptz::text AS text, v::timestamptz AS parsed FROM unnest($1::text[]) v',
          [values],
        );
        for (const r of rows) expect([zone, r.text, Number(parseTimestamptz(r.text))]).toEqual([zone, r.text, Number(r.parsed)]);
      }
    } finally {
      await client.end();
    }
  });

  it('the cursor is the last row in claim order: lowest priority, then latest run_at, then highest id (compared as numbers)', () => {
    const at = new Date('2026-01-01T00:00:00Z');
    const later = new Date('2026-01-01T00:00:01Z');
    const row = (id: string, priority: number, runAt: Date) => ({ id, priority, run_at: runAt }) as ClaimedRow;
    expect(lastInClaimOrder([row('9', 1, at), row('10', 1, at), row('2', 1, at)])).toEqual({ priority: 1, runAt: at, id: '10' });
    expect(lastInClaimOrder([row('100', 1, at), row('99', 1, later), row('7', 2, later)])).toEqual({ priority: 1, runAt: later, id: '99' });
    expect(lastInClaimOrder([row('5', 0, later), row('12', -1, at), row('3', -1, at)])).toEqual({ priority: -1, runAt: at, id: '12' });
  });

  it('a lane older than rescanMs starts over from the head', () => {
    const lane = new ClaimLane();
    const row = { id: '7', priority: 1, run_at: new Date('2026-01-01T00:00:00Z') } as ClaimedRow;
    lane.advance([row], 1, 1_000);
    expect(lane.cursor).toEqual({ priority: 1, runAt: row.run_at, id: '7' });
    lane.expire(1_500, 1_000);
    expect(lane.cursor).not.toBeNull();
    lane.advance([{ ...row, id: '8' }], 1, 1_900);
    lane.expire(2_001, 1_000);
    expect(lane.cursor).toBeNull();
  });

  it('caches the low-water mark until its refresh interval passes or a refresh is forced', async () => {
    const [id] = await enqueueN('cl-low', 1);
    const c = new Claimer(claimerOptions('cl-low'));
    const future = new Date(Date.now() + 3_600_000);
    await t.db.query(`UPDATE qmaint.partition_policy SET low_water = $1 WHERE parent_table = 'qmaint.jobs'`, [future]);
    try {
      await c.refreshLowWater(true, t.db);
      expect(c.lowWaterMark?.getTime()).toBe(future.getTime());
      expect(await c.claim(t.db, 'cl-low', 1, null)).toEqual([]);
      await t.db.query(`UPDATE qmaint.partition_policy SET low_water = '-infinity' WHERE parent_table = 'qmaint.jobs'`);
      // Still the cached mark: the job is below it.
      expect(await c.claim(t.db, 'cl-low', 1, null)).toEqual([]);
      await c.refreshLowWater(true, t.db);
      expect(c.lowWaterMark).toBeNull();
      expect((await c.claim(t.db, 'cl-low', 1, null)).map((r) => r.id)).toEqual([id]);
    } finally {
      await t.db.query(`UPDATE qmaint.partition_policy SET low_water = '-infinity' WHERE parent_table = 'qmaint.jobs'`);
    }
  });
});

describe('LeaseKeeper', () => {
  it('extends the leases it holds; an attempt whose job was rescued and claimed again is reported, and the new lease is untouched', async () => {
    const ids = await enqueueN('lk-extend', 2);
    const held = await claimed('lk-extend', 2);
    await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() + interval '5 seconds' WHERE id = ANY ($1::bigint[])`, [ids]);
    const keeper = new LeaseKeeper(t.db, { workerId: 'parts-test', leaseSeconds: 600 });
    expect(await keeper.extend(held)).toEqual([]);
    for (const r of await rows(ids)) expect(r.lease_s).toBeGreaterThan(500);
    // Same worker id, newer attempt: the fence alone tells them apart.
    await rescueAndReclaim('lk-extend', [ids[0]!], 'parts-test');
    await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() + interval '5 seconds' WHERE id = $1`, [ids[0]]);
    const lost = await keeper.extend(held);
    expect(lost.map((h) => h.job.id)).toEqual([ids[0]]);
    const [stale, kept] = await rows(ids);
    expect(stale).toMatchObject({ status: 'running', attempt: 2 });
    expect(stale!.lease_s).toBeLessThan(10);
    expect(kept!.lease_s).toBeGreaterThan(500);
  });

  it('release puts unstarted jobs back as they were, but not a job a newer attempt holds', async () => {
    const ids = await enqueueN('lk-release', 3);
    const held = await claimed('lk-release', 3);
    await rescueAndReclaim('lk-release', [ids[2]!], 'parts-test');
    const keeper = new LeaseKeeper(t.db, { workerId: 'parts-test', leaseSeconds: 60 });
    const notifyErrors: unknown[] = [];
    expect(await keeper.release(held, (e) => notifyErrors.push(e))).toBe(2);
    expect(notifyErrors).toEqual([]);
    expect((await rows(ids)).map((r) => [r.status, r.retry_count, r.locked_by])).toEqual([
      ['queued', 0, null],
      ['queued', 0, null],
      ['running', 1, 'parts-test'],
    ]);
    expect(await keeper.release([])).toBe(0);
  });

  it("rescue puts an expired lease back with the queue's backoff, and records the backoff it is given", async () => {
    const [id] = await enqueueN('lk-rescue', 1);
    await claimed('lk-rescue', 1);
    const keeper = new LeaseKeeper(t.db, { workerId: 'parts-test', leaseSeconds: 60 });
    await keeper.recordBackoff('lk-rescue', 7_000, 9_000);
    const { rows: q } = await t.db.query<{ base: number; cap: number }>(
      `SELECT extract(epoch FROM backoff_base)::float8 AS base, extract(epoch FROM backoff_cap)::float8 AS cap FROM qmaint.queues WHERE queue = 'lk-rescue'`,
    );
    expect(q).toEqual([{ base: 7, cap: 9 }]);
    await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE id = $1`, [id]);
    expect(await keeper.rescue()).toMatchObject({ requeued: 1 });
    const { rows: j } = await t.db.query<{ status: string; retry_count: number; wait: number }>(
      `SELECT status::text, retry_count, extract(epoch FROM run_at - now())::float8 AS wait FROM qmaint.jobs WHERE id = $1`,
      [id],
    );
    expect(j[0]).toMatchObject({ status: 'queued', retry_count: 1 });
    // Equal jitter over [base/2, base]: at least 3.5 s, at most 7 s from the rescue.
    expect(j[0]!.wait).toBeGreaterThan(3);
    expect(j[0]!.wait).toBeLessThanOrEqual(7);
  });
});

describe('ResultBatcher', () => {
  it('sends queued completions and failures, fenced by attempt: a stale attempt changes nothing and is reported lost', async () => {
    const ids = await enqueueN('rb-fence', 5, { maxRetries: 1 });
    const held = await claimed('rb-fence', 5);
    await rescueAndReclaim('rb-fence', [ids[1]!, ids[4]!], 'parts-test');
    const { seen, hooks } = recordingHooks();
    const b = new ResultBatcher(t.db, batcherOptions, hooks);
    b.addCompletion(held[0]!);
    b.addCompletion(held[1]!);
    b.addCompletion(held[2]!);
    b.addFailure(held[3]!, 'boom');
    b.addFailure(held[4]!, 'stale boom');
    expect(b.pending).toBe(5);
    await eventually(() => b.pending === 0);
    await b.flushAll();
    expect(seen.completed.sort()).toEqual([ids[0], ids[2]].sort());
    expect(seen.failed.map((f) => [f.id, f.error, f.outcome.status, f.outcome.retryCount])).toEqual([[ids[3], 'boom', 'queued', 1]]);
    expect(seen.failed[0]!.outcome.runAt.getTime()).toBeGreaterThan(Date.now() + 20_000);
    expect(seen.lost.sort()).toEqual([ids[1], ids[4]].sort());
    expect(seen.errors).toEqual([]);
    const after = await rows(ids);
    expect(after.map((r) => [r.status, r.attempt])).toEqual([
      ['completed', 1],
      ['running', 2],
      ['completed', 1],
      ['queued', 1],
      ['running', 2],
    ]);
    expect(after[3]!.last_error).toBe('boom');
    // The stale failure's text never landed: what is there is the rescuer's note.
    expect(after[4]!.last_error).toMatch(/^lease of attempt 1 held by parts-test expired/);
  });

  it('a row the server refuses is recorded with a stand-in text, the rest of the batch as it is', async () => {
    await t.db.query(`CREATE FUNCTION parts_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$`);
    await t.db.query(`CREATE TRIGGER parts_refuse BEFORE UPDATE ON qmaint.jobs FOR EACH ROW
      WHEN (NEW.queue = 'rb-refuse' AND NEW.last_error LIKE '%poison%') EXECUTE FUNCTION parts_refuse()`);
    try {
      const ids = await enqueueN('rb-refuse', 2, { maxRetries: 0 });
      const held = await claimed('rb-refuse', 2);
      const { seen, hooks } = recordingHooks();
      const b = new ResultBatcher(t.db, batcherOptions, hooks);
      await b.recordFailures([
        { held: held[0]!, error: 'poison' },
        { held: held[1]!, error: 'plain' },
      ]);
      expect(seen.errors).toEqual(['fail (batch refused; recording row by row): refused by a test trigger']);
      expect((await rows(ids)).map((r) => [r.status, r.last_error])).toEqual([
        ['failed', "the handler's error could not be stored (refused by a test trigger)"],
        ['failed', 'plain'],
      ]);
    } finally {
      await t.db.query('DROP TRIGGER parts_refuse ON qmaint.jobs');
    }
  });

  it('after close() nothing more is sent: the leases decide', async () => {
    const ids = await enqueueN('rb-close', 1);
    const held = await claimed('rb-close', 1);
    const { seen, hooks } = recordingHooks();
    const b = new ResultBatcher(t.db, batcherOptions, hooks);
    b.close();
    b.addCompletion(held[0]!);
    await b.flushAll();
    expect(seen.completed).toEqual([]);
    expect((await rows(ids))[0]!.status).toBe('running');
  });
});

describe('runHandler', () => {
  it('a handler that reads job.signal only after its timeout passed finds it aborted with the JobTimeoutError; the attempt fails with it', async () => {
    await enqueueN('rh-late', 1);
    // No timeout of its own: the default given here, 50 ms.
    const [held] = (await new Claimer(claimerOptions('rh-late')).claim(t.db, 'rh-late', 1, null)).map((r) => new Attempt(r, 0.05));
    let timedOut!: () => void;
    const timeout = new Promise<void>((r) => (timedOut = r));
    let seen: { aborted: boolean; reason: unknown } | null = null;
    const error = await runHandler(
      async (job) => {
        await timeout;
        seen = { aborted: job.signal.aborted, reason: job.signal.reason };
      },
      held!,
      () => timedOut(),
    );
    expect(error).toMatch(/^JobTimeoutError: job \d+ timed out after 0.05 s/);
    expect(held!.timedOut).toBe(true);
    await eventually(() => seen !== null);
    expect(seen!.aborted).toBe(true);
    expect(seen!.reason).toBeInstanceOf(JobTimeoutError);
    // A later abort keeps the first reason, as an AbortController does.
    held!.abort(new Error('lease lost'));
    expect(held!.job.signal.reason).toBe(seen!.reason);
  });

  it('a signal read before the abort is the same signal, and sees it', async () => {
    await enqueueN('rh-early', 1);
    const [held] = (await new Claimer(claimerOptions('rh-early')).claim(t.db, 'rh-early', 1, null)).map((r) => new Attempt(r, 900));
    const signal = held!.job.signal;
    expect(signal.aborted).toBe(false);
    held!.abort(new JobCancelledError(held!.job.id));
    expect(held!.job.signal).toBe(signal);
    expect(signal.reason).toBeInstanceOf(JobCancelledError);
  });
});

describe('Listener', () => {
  const listening: boolean[] = [];
  const cancels: string[] = [];
  const hooks = { listening: (ok: boolean) => listening.push(ok), error: () => undefined, cancel: (fence: string) => void cancels.push(fence) };

  it('a NOTIFY for its queue ends the sleep; one for another queue does not', async () => {
    const l = new Listener(t.db, new Set(['li-a']), true, hooks);
    await l.start();
    try {
      expect(l.connected).toBe(true);
      const other = l.sleep(300);
      await t.db.query(`SELECT pg_notify('qmaint_jobs', 'li-b')`);
      expect(await other).toBe('poll');
      const mine = l.sleep(30_000);
      await t.db.query(`SELECT pg_notify('qmaint_jobs', 'li-a')`);
      expect(await mine).toBe('notify');
      // A cancel of a running job is passed on (its fence key), whoever holds it; it wakes nobody.
      await t.db.query(`SELECT pg_notify('qmaint_cancel', '41.2')`);
      await eventually(() => cancels.includes('41.2'));
    } finally {
      await l.close();
    }
  });

  it('a wake-up counted before the sleep is not lost: the sleep returns at once', async () => {
    const l = new Listener(t.db, new Set(['li-count']), true, hooks);
    await l.start();
    try {
      const before = l.wakeCount;
      await enqueue(t.db, 'li-count', {});
      await eventually(() => l.wakeCount > before);
      expect(await l.sleep(30_000, before)).toBe('notify');
    } finally {
      await l.close();
    }
  });

  it('reconnects when its connection is killed, and then looks once for what it missed', async () => {
    listening.length = 0;
    const l = new Listener(t.db, new Set(['li-kill']), true, hooks);
    await l.start();
    try {
      expect(listening).toEqual([true]);
      const before = l.wakeCount;
      const woken = l.sleep(30_000);
      await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`);
      // Woken by the reconnect (a counted wake-up), not by the sleep's own timer.
      expect(await woken).toBe('poll');
      expect(l.wakeCount).toBe(before + 1);
      expect(listening).toEqual([true, true]);
      const again = l.sleep(30_000);
      await t.db.query(`SELECT pg_notify('qmaint_jobs', 'li-kill')`);
      expect(await again).toBe('notify');
    } finally {
      await l.close();
    }
  });

  it('stop() wakes every sleeper for good; listen: false never connects', async () => {
    const l = new Listener(t.db, new Set(['li-stop']), false, hooks);
    await l.start();
    expect(l.connected).toBe(false);
    const sleeping = l.sleep(30_000);
    l.stop();
    expect(await sleeping).toBe('stop');
    expect(await l.sleep(30_000)).toBe('stop');
    await l.close();
  });
});

/** The parts wired as the Consumer wires them, without the Consumer. */
function context(db: typeof t.db, options: ConsumerOptions, stopping: { now: boolean }) {
  const o = resolveOptions(options);
  const events: { event: string; args: unknown[] }[] = [];
  const emit: ModeContext['emit'] = (event, ...args) => void events.push({ event, args });
  const buffer = new LocalBuffer(o.concurrency, new Map(o.queues.map((q) => [q.name, q.concurrency])));
  const { seen, hooks } = recordingHooks();
  const keeper = new LeaseKeeper(db, o);
  const ctx: ModeContext = {
    db,
    options: o,
    claimer: new Claimer(o),
    buffer,
    results: new ResultBatcher(db, o, {
      ...hooks,
      lost: (h) => {
        buffer.lose(h);
        hooks.lost(h);
      },
    }),
    listener: new Listener(db, new Set(o.queues.map((q) => q.name)), false, { listening: () => undefined, error: () => undefined, cancel: () => undefined }),
    keeper,
    rotation: new Rotation(o.queues.map((q) => q.name)),
    emit,
    stopping: () => stopping.now,
    hold: (row) => new Attempt(row, o.timeout),
    run: (held) => runHandler(o.queues.find((q) => q.name === held.row.queue)!.handler, held, () => undefined),
    lose: (held) => void buffer.lose(held),
    rescue: () => keeper.rescue(),
  };
  return { ctx, seen, events, buffer };
}

describe('modes', () => {
  it('lease mode never holds more than concurrency + 2 x batch jobs, and drains the queue', async () => {
    const ids = await enqueueN('md-lease', 12);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { ctx, seen, events, buffer } = context(
      t.db,
      { queue: 'md-lease', handler: () => gate, concurrency: 2, batch: 3, drain: true, listen: false, pollMinMs: 5, pollMaxMs: 10 },
      { now: false },
    );
    const mode = new LeaseMode(ctx);
    const ran = mode.run();
    await eventually(() => buffer.runningCount === 2 && buffer.waitingCount >= 2);
    const { rows: held } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = 'md-lease' AND status = 'running'`);
    expect(held[0]!.n).toBe(buffer.runningCount + buffer.waitingCount);
    expect(held[0]!.n).toBeLessThanOrEqual(2 + 2 * 3);
    release();
    await ran;
    await ctx.results.flushAll();
    expect(seen.completed.sort()).toEqual([...ids].sort());
    expect(events.map((e) => e.event)).toContain('drained');
    expect((await rows(ids)).every((r) => r.status === 'completed')).toBe(true);
  });

  it('transaction mode commits the handler writes with the completion, and refuses a pool smaller than concurrency + 1', async () => {
    const small = await connect({ databaseUrl: t.url, max: 2 });
    try {
      expect(() => new TransactionMode(context(small, { queue: 'md-tx', handler: () => undefined, concurrency: 2 }, { now: false }).ctx)).toThrow(QmaintError);
    } finally {
      await small.close();
    }
    await t.db.query('CREATE TABLE parts_tx_writes (job bigint PRIMARY KEY)');
    const ids = await enqueueN('md-tx', 3);
    const { ctx, seen } = context(
      t.db,
      {
        queue: 'md-tx',
        handler: async (job) => {
          await job.client!.query('INSERT INTO parts_tx_writes VALUES ($1)', [job.id]);
        },
        mode: 'transaction',
        concurrency: 2,
        drain: true,
        listen: false,
        pollMinMs: 5,
        pollMaxMs: 10,
      },
      { now: false },
    );
    await new TransactionMode(ctx).run();
    expect(seen.completed.sort()).toEqual([...ids].sort());
    const { rows: written } = await t.db.query<{ job: string }>('SELECT job::text FROM parts_tx_writes ORDER BY job');
    expect(written.map((r) => r.job)).toEqual(ids);
    expect((await rows(ids)).every((r) => r.status === 'completed')).toBe(true);
  });
});
