// Production hardening of the consumer: transient faults, fencing, timeouts,
// failure recording, wake-ups, rescue at start. Real SQL on a real server.
import net from 'node:net';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/db.js';
import { QmaintError } from '../../src/errors.js';
import { claimQuery } from '../../src/queue/claim.js';
import { Consumer, ERROR_TEXT_MAX, type ConsumerOptions, type Job, type WakeReason } from '../../src/queue/consumer.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { eventually, freshDatabase } from '../helpers.js';

const t = await freshDatabase();

async function statuses(queue: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ status: string; n: number }>('SELECT status::text, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 GROUP BY 1', [
    queue,
  ]);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

async function job(id: string): Promise<Record<string, unknown>> {
  const { rows } = await t.db.query('SELECT status::text, retry_count, attempt, locked_by, last_error, timeout_ms FROM qmaint.jobs WHERE id = $1', [id]);
  return rows[0]!;
}

function consumer(queue: string, handler: (job: Job) => unknown, extra: Partial<ConsumerOptions> = {}, db = t.db): Consumer {
  return new Consumer(db, { queue, handler, listen: false, pollMinMs: 10, pollMaxMs: 50, backoffBaseMs: 1, backoffCapMs: 5, ...extra });
}

/** Hold ACCESS EXCLUSIVE on qmaint.partition_policy until the returned function is called. */
async function lockPolicy(): Promise<() => Promise<void>> {
  const holder = await t.client();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE qmaint.partition_policy IN ACCESS EXCLUSIVE MODE');
  return async () => {
    await holder.query('COMMIT');
  };
}

/**
 * Expire the lease of running jobs, let the rescuer put them back, and claim
 * them again as `workerId`, in one transaction (so the old holder cannot
 * extend or reclaim in between). Returns the new attempts.
 */
async function rescueAndReclaim(queue: string, ids: string[], workerId: string): Promise<{ id: string; attempt: number }[]> {
  const c = await t.client();
  await c.query('BEGIN');
  await c.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE id = ANY ($1::bigint[])`, [ids]);
  await c.query('SELECT qmaint.rescue_expired()');
  // run_at has millisecond precision: truncate, or it may round up past now().
  await c.query(`UPDATE qmaint.jobs SET run_at = date_trunc('milliseconds', now()) WHERE id = ANY ($1::bigint[])`, [ids]);
  const q = claimQuery({ queue, batch: ids.length, leaseSeconds: 60, workerId, lowWater: null });
  const { rows } = await c.query<{ id: string; attempt: number }>(q.text, q.values);
  await c.query('COMMIT');
  return rows;
}

describe('consumer loops survive transient faults', () => {
  it('an idle consumer whose low-water refresh times out reports it and keeps working (both modes)', async () => {
    await t.db.query(`ALTER DATABASE "${t.name}" SET statement_timeout = '1s'`);
    // New connections carry the timeout; the pools are opened after the ALTER.
    const lease = await connect({ databaseUrl: t.url, max: 4 });
    const tx = await connect({ databaseUrl: t.url, max: 4 });
    try {
      const handled: string[] = [];
      const errors: string[][] = [[], []];
      const consumers = [
        consumer('fault-lease', (j) => void handled.push(j.id), { pollMaxMs: 200 }, lease),
        consumer('fault-tx', (j) => void handled.push(j.id), { pollMaxMs: 200, mode: 'transaction', concurrency: 2 }, tx),
      ];
      consumers.forEach((c, i) => c.on('db-error', (_err, during) => errors[i]!.push(during)));
      await Promise.all(consumers.map((c) => c.start()));
      const unlock = await lockPolicy();
      // Both kinds of consumer hit the lock and the timeout at least once.
      await eventually(() => errors.every((e) => e.includes('low-water refresh')), 20_000);
      await new Promise((r) => setTimeout(r, 2000)); // keep the lock past several more timeouts
      await unlock();
      const ids = [await enqueue(t.db, 'fault-lease', {}), await enqueue(t.db, 'fault-tx', {})];
      await eventually(() => ids.every((id) => handled.includes(id)), 20_000);
      await Promise.all(consumers.map((c) => c.stop()));
      expect(await statuses('fault-lease')).toEqual({ completed: 1 });
      expect(await statuses('fault-tx')).toEqual({ completed: 1 });
    } finally {
      await t.db.query(`ALTER DATABASE "${t.name}" RESET statement_timeout`);
      await lease.close();
      await tx.close();
    }
  });

  it('a completion the server keeps refusing keeps its lease: the heartbeat extends it past its expiry and the job runs once', async () => {
    // Completions of this queue fail while the gate is shut; heartbeats and rescues go through.
    await t.db.query(`CREATE TABLE public.unsent_gate (shut boolean NOT NULL)`);
    await t.db.query(`INSERT INTO public.unsent_gate VALUES (true)`);
    await t.db.query(`CREATE FUNCTION public.refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.status = 'completed' AND NEW.queue = 'unsent' AND (SELECT shut FROM public.unsent_gate) THEN
          RAISE EXCEPTION 'completions refused for the test' USING ERRCODE = '55000';
        END IF;
        RETURN NEW;
      END $$`);
    await t.db.query(`CREATE TRIGGER refuse_completion BEFORE UPDATE ON qmaint.jobs FOR EACH ROW EXECUTE FUNCTION public.refuse_completion()`);
    try {
      let runs = 0;
      const during: string[] = [];
      // A 2 s lease, extended every 667 ms; the consumer's own rescuer runs every 200 ms.
      const c = consumer('unsent', () => void runs++, { leaseSeconds: 2, rescueEveryMs: 200 });
      c.on('db-error', (_err, what) => void during.push(what));
      await c.start();
      const id = await enqueue(t.db, 'unsent', {});
      await eventually(() => during.includes('complete'), 10_000);
      await new Promise((r) => setTimeout(r, 5000)); // two and a half leases
      const held = await t.db.query<{ status: string; attempt: number; ahead: boolean }>(
        `SELECT status::text, attempt, locked_until > now() AS ahead FROM qmaint.jobs WHERE id = $1`,
        [id],
      );
      expect(held.rows[0]).toEqual({ status: 'running', attempt: 1, ahead: true });
      await t.db.query(`UPDATE public.unsent_gate SET shut = false`);
      await eventually(async () => (await job(id)).status === 'completed', 10_000);
      await c.stop();
      expect(await job(id)).toMatchObject({ status: 'completed', attempt: 1, retry_count: 0 });
      expect(runs).toBe(1);
      expect(c.stats).toMatchObject({ claimed: 1, completed: 1, lost: 0 });
    } finally {
      await t.db.query(`DROP TRIGGER IF EXISTS refuse_completion ON qmaint.jobs`);
      await t.db.query(`DROP FUNCTION IF EXISTS public.refuse_completion()`);
      await t.db.query(`DROP TABLE IF EXISTS public.unsent_gate`);
    }
  });

  it('claim, heartbeat, completion and rescue each report their failure (lock_timeout) and retry; every job completes once', async () => {
    await t.db.query(`ALTER DATABASE "${t.name}" SET lock_timeout = '150ms'`);
    const db = await connect({ databaseUrl: t.url, max: 4 });
    const holder = await t.client(); // opened after the ALTER: waits without a limit itself
    await holder.query(`SET lock_timeout = 0`);
    try {
      const runs = new Map<string, number>();
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const during = new Set<string>();
      const c = consumer(
        'all-loops',
        async (j) => {
          runs.set(j.id, (runs.get(j.id) ?? 0) + 1);
          if ((j.payload as { gated: boolean }).gated) await gate;
        },
        { leaseSeconds: 6, rescueEveryMs: 300, pollMaxMs: 100 }, // heartbeat every 2 s
        db,
      );
      c.on('db-error', (_err, what) => void during.add(what));
      await c.start();
      const first = await enqueue(t.db, 'all-loops', { gated: true });
      await eventually(() => runs.has(first));
      // Nothing reaches qmaint.jobs now: every statement on it waits past its lock_timeout.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE qmaint.jobs IN ACCESS EXCLUSIVE MODE');
      await eventually(() => ['claim', 'heartbeat', 'rescue'].every((d) => during.has(d)), 20_000);
      release(); // the first job's completion cannot be sent either
      await eventually(() => during.has('complete'), 20_000);
      await holder.query('COMMIT');
      const second = await enqueue(t.db, 'all-loops', { gated: false });
      await eventually(async () => (await statuses('all-loops')).completed === 2, 20_000);
      await c.stop();
      expect(c.stats).toMatchObject({ claimed: 2, completed: 2, lost: 0 });
      expect([runs.get(first), runs.get(second)]).toEqual([1, 1]);
    } finally {
      await t.db.query(`ALTER DATABASE "${t.name}" RESET lock_timeout`);
      await db.close();
    }
  });

  for (const mode of ['lease', 'transaction'] as const) {
    it(`${mode} mode: a claim that fails with SQLSTATE 40001 is run again at once, without a db-error`, async () => {
      // A trigger makes the next two claims of this queue fail as a serialization failure would
      // (lease mode sees the error wrapped by Db.query, transaction mode as node-pg raised it).
      const queue = `serial-${mode}`;
      const tag = mode === 'lease' ? 'l' : 't';
      await t.db.query(`CREATE SEQUENCE serial_fail_seq_${tag}`);
      await t.db.query(`CREATE FUNCTION serial_fail_${tag}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('serial_fail_seq_${tag}') <= 2 THEN
            RAISE EXCEPTION 'could not serialize access due to concurrent update' USING ERRCODE = '40001';
          END IF;
          RETURN NEW;
        END $$`);
      await t.db.query(`CREATE TRIGGER serial_fail_${tag} BEFORE UPDATE ON qmaint.jobs FOR EACH ROW
        WHEN (NEW.queue = '${queue}' AND OLD.status = 'queued' AND NEW.status = 'running') EXECUTE FUNCTION serial_fail_${tag}()`);
      const db = await connect({ databaseUrl: t.url, max: 4 });
      try {
        const id = await enqueue(t.db, queue, {});
        const errors: string[] = [];
        const c = consumer(queue, () => undefined, { drain: true, mode, concurrency: 1, backoffBaseMs: 600_000, backoffCapMs: 600_000 }, db);
        c.on('db-error', (err, during) => errors.push(`${during}: ${err.message}`));
        await c.start();
        await c.done;
        expect(errors).toEqual([]);
        // Two refused claims and the third that went through.
        expect((await t.db.query<{ n: string }>(`SELECT last_value AS n FROM serial_fail_seq_${tag}`)).rows[0]!.n).toBe('3');
        expect(c.stats).toMatchObject({ claimed: 1, completed: 1 });
        expect(await job(id)).toMatchObject({ status: 'completed', attempt: 1, retry_count: 0 });
      } finally {
        await t.db.query(`DROP TRIGGER serial_fail_${tag} ON qmaint.jobs`);
        await db.close();
      }
    });
  }
});

describe('a real serialization failure: the claimed row moved to another partition', () => {
  // What straggler compaction does to a claim that read a row before the move committed:
  // PostgreSQL refuses to lock it ("tuple to be locked was already moved to another partition
  // due to concurrent update", SQLSTATE 40001). A row-level security policy holds the claim
  // between its snapshot and its row lock (RLS applies to a role that is neither superuser nor
  // owner, so the consumer's connections act as one), the test moves the row, then lets go.
  for (const mode of ['lease', 'transaction'] as const) {
    it(`${mode} mode: the consumer claims again at once, without a db-error, and handles the moved job once`, async () => {
      const r = await freshDatabase();
      const role = `qm_rls_${r.name}`.slice(0, 63);
      await r.db.query(`CREATE ROLE "${role}" NOLOGIN`);
      try {
        for (const grant of [
          `GRANT USAGE ON SCHEMA qmaint TO "${role}"`,
          `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA qmaint TO "${role}"`,
          `GRANT USAGE ON ALL SEQUENCES IN SCHEMA qmaint TO "${role}"`,
          `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA qmaint TO "${role}"`,
        ])
          await r.db.query(grant);
        await r.db.query(`CREATE TABLE public.rls_marker (id bigint)`);
        await r.db.query(`CREATE SEQUENCE public.rls_marker_reads`);
        await r.db.query(`GRANT SELECT ON public.rls_marker TO "${role}"; GRANT USAGE ON SEQUENCE public.rls_marker_reads TO "${role}"`);
        // Reading the marker job waits while the test holds advisory lock 4711.
        await r.db.query(`CREATE FUNCTION public.rls_gate(p_id bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
          BEGIN
            IF p_id = (SELECT id FROM public.rls_marker) THEN
              PERFORM nextval('public.rls_marker_reads');
              PERFORM pg_advisory_xact_lock_shared(4711);
            END IF;
            RETURN true;
          END $$`);
        await r.db.query(`CREATE POLICY rls_gate ON qmaint.jobs USING (public.rls_gate(id)) WITH CHECK (true)`);
        await r.db.query(`ALTER TABLE qmaint.jobs ENABLE ROW LEVEL SECURITY`);
        const id = await enqueue(r.db, 'moved', {});
        const moveTo = (await r.db.query<{ ts: Date }>(`SELECT created_at + interval '1 day' AS ts FROM qmaint.jobs WHERE id = $1`, [id])).rows[0]!.ts;
        await r.db.query(`SELECT qmaint.ensure_partition('qmaint.jobs', $1)`, [moveTo]);
        await r.db.query(`INSERT INTO public.rls_marker VALUES ($1)`, [id]);

        const holder = await r.client();
        await holder.query('SELECT pg_advisory_lock(4711)');
        const url = new URL(r.url);
        url.searchParams.set('options', `-c role=${role}`);
        const db = await connect({ databaseUrl: url.toString(), max: 4, applicationName: 'qmaint-rls' });
        try {
          const errors: string[] = [];
          const handled: string[] = [];
          const c = new Consumer(db, {
            queue: 'moved',
            handler: (j) => void handled.push(j.id),
            listen: false,
            drain: true,
            mode,
            concurrency: 1,
            pollMinMs: 10,
            pollMaxMs: 50,
            backoffBaseMs: 600_000,
            backoffCapMs: 600_000,
          });
          c.on('db-error', (err, during) => errors.push(`${during}: ${err.message}`));
          const started = c.start();
          // The claim read the marker job under its snapshot and waits before locking it.
          await eventually(async () => {
            const { rows } = await r.db.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'qmaint-rls' AND wait_event = 'advisory'`);
            return rows.length > 0;
          });
          const moved = await r.db.query(`UPDATE qmaint.jobs SET created_at = $2 WHERE id = $1 AND status = 'queued'`, [id, moveTo]);
          expect(moved.rowCount).toBe(1);
          await holder.query('SELECT pg_advisory_unlock(4711)');
          await started;
          await c.done;
          expect(errors).toEqual([]);
          expect(handled).toEqual([id]);
          // Read before the move (the claim that failed) and after it (the claim that went through).
          expect(Number((await r.db.query<{ n: string }>(`SELECT last_value AS n FROM public.rls_marker_reads`)).rows[0]!.n)).toBeGreaterThanOrEqual(2);
          const { rows } = await r.db.query(`SELECT status::text, attempt, retry_count, created_at FROM qmaint.jobs WHERE id = $1`, [id]);
          expect(rows).toEqual([{ status: 'completed', attempt: 1, retry_count: 0, created_at: moveTo }]);
        } finally {
          await db.close();
        }
      } finally {
        await r.db.query(`ALTER TABLE qmaint.jobs DISABLE ROW LEVEL SECURITY`).catch(() => undefined);
        await r.db.query(`DROP OWNED BY "${role}"`);
        await r.db.query(`DROP ROLE "${role}"`);
      }
    });
  }
});

describe('a LISTEN URL that never answers', () => {
  it('fails within the connect timeout: start() resolves, the consumer polls and keeps retrying LISTEN', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((sock) => void sockets.push(sock));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as net.AddressInfo).port;
    const db = await connect({ databaseUrl: t.url, max: 3, connectTimeoutMs: 300 });
    try {
      const listenErrors: string[] = [];
      const handled: string[] = [];
      const c = new Consumer(db, {
        queue: 'silent-listen',
        handler: (j) => void handled.push(j.id),
        listen: `postgres://me@127.0.0.1:${port}/db`,
        pollMinMs: 10,
        pollMaxMs: 50,
      });
      c.on('db-error', (_err, during) => void (during === 'listen' && listenErrors.push(during)));
      await c.start();
      expect(listenErrors).toEqual(['listen']);
      const id = await enqueue(t.db, 'silent-listen', {});
      await eventually(() => handled.includes(id));
      await c.stop();
    } finally {
      await db.close();
      for (const sock of sockets) sock.destroy();
      silent.close();
    }
  });
});

describe('a dropped connection fails the call, not the process', () => {
  for (const via of ['Db', 'pg.Pool'] as const) {
    it(`enqueueMany through a ${via} rejects with a connection QmaintError when its backend is terminated mid-COPY`, async () => {
      const app = `qmaint-slow-${via === 'Db' ? 'db' : 'pool'}`;
      const db = await connect({ databaseUrl: t.url, max: 2, applicationName: app });
      const pool = new pg.Pool({ connectionString: t.url, max: 2, application_name: app });
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      async function* slow(): AsyncGenerator<unknown> {
        for (let i = 0; i < 2500; i++) yield { i };
        await gate;
        for (let i = 0; i < 10; i++) yield { i };
      }
      try {
        const call = enqueueMany(via === 'Db' ? db : pool, 'slow', slow());
        const outcome = call.then(
          () => null,
          (err: unknown) => err,
        );
        const pid = await eventually(async () => {
          const { rows } = await t.db.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'COPY%'`, [app]);
          return rows[0]?.pid;
        });
        await t.db.query('SELECT pg_terminate_backend($1)', [pid]);
        await eventually(async () => (await t.db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0);
        open();
        const err = await outcome;
        expect(err).toBeInstanceOf(QmaintError);
        expect((err as QmaintError).code).toBe('connection');
        expect(await statuses('slow')).toEqual({});
        // The pools still work.
        expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
        expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
      } finally {
        await db.close();
        await pool.end();
      }
    });
  }
});

describe('a connection dropped while a checked-out client is idle', () => {
  it('Db.withClient (as maintenance runs use it) rejects with a connection QmaintError; the pool lives on', async () => {
    const db = await connect({ databaseUrl: t.url, max: 2, applicationName: 'qmaint-idle-drop' });
    try {
      const call = db.withClient(async (client) => {
        const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        // Killed between two statements: node-pg emits 'error' on the idle client.
        await t.db.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
        await eventually(async () => (await t.db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [rows[0]!.pid])).rowCount === 0);
        await new Promise((r) => setTimeout(r, 100));
        await client.query('SELECT 1');
      });
      const err = await call.then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(QmaintError);
      expect((err as QmaintError).code).toBe('connection');
      expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    } finally {
      await db.close();
    }
  });
});

describe('attempts are fenced', () => {
  it('a stale attempt cannot complete or fail the job after it was rescued and claimed again by the same worker id', async () => {
    const ok = await enqueue(t.db, 'fence', { fail: false });
    const bad = await enqueue(t.db, 'fence', { fail: true });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const started = new Set<string>();
    const lost: string[] = [];
    const c = consumer(
      'fence',
      async (j) => {
        started.add(j.id);
        await gate;
        if ((j.payload as { fail: boolean }).fail) throw new Error('stale failure');
      },
      { workerId: 'same-worker', concurrency: 2, batch: 2 },
    );
    c.on('lease-lost', (j) => lost.push(j.id));
    await c.start();
    await eventually(() => started.size === 2);
    const again = await rescueAndReclaim('fence', [ok, bad], 'same-worker');
    expect(again.map((r) => r.attempt)).toEqual([2, 2]);
    release();
    await eventually(() => c.stats.lost === 2);
    await c.stop();
    expect(c.stats).toMatchObject({ claimed: 2, completed: 0, failed: 0, lost: 2 });
    expect(lost.sort()).toEqual([ok, bad].sort());
    for (const id of [ok, bad]) expect(await job(id)).toMatchObject({ status: 'running', attempt: 2, retry_count: 1, locked_by: 'same-worker' });
  });

  it('a heartbeat of a stale attempt does not extend the new lease: the handler is aborted and its result dropped', async () => {
    const id = await enqueue(t.db, 'fence-beat', {});
    let started = false;
    let abortReason = '';
    const c = consumer(
      'fence-beat',
      async (j) => {
        started = true;
        await new Promise<void>((r) => j.signal.addEventListener('abort', () => r()));
        abortReason = String(j.signal.reason);
      },
      { workerId: 'beat-worker', leaseSeconds: 1, rescueEveryMs: 600_000 },
    );
    await c.start();
    await eventually(() => started);
    await rescueAndReclaim('fence-beat', [id], 'beat-worker');
    await eventually(() => abortReason !== '', 10_000);
    await eventually(() => c.stats.lost === 1);
    await c.stop();
    expect(abortReason).toMatch(/lease lost/);
    expect(c.stats.completed).toBe(0);
    expect(await job(id)).toMatchObject({ status: 'running', attempt: 2 });
  });
});

describe('failure recording never jams', () => {
  it('stores a NUL-free, capped error text, and the rest of the batch goes through once', async () => {
    const nul = await enqueue(t.db, 'nul', { kind: 'nul' }, { maxRetries: 0 });
    const long = await enqueue(t.db, 'nul', { kind: 'long' }, { maxRetries: 0 });
    const fine = await enqueue(t.db, 'nul', { kind: 'fine' });
    const c = consumer(
      'nul',
      (j) => {
        const kind = (j.payload as { kind: string }).kind;
        if (kind === 'nul') throw new Error('bad\u0000byte');
        if (kind === 'long') throw new Error('x'.repeat(10_000));
      },
      { concurrency: 3, batch: 3, drain: true },
    );
    await c.start();
    await c.done;
    expect(c.stats).toMatchObject({ completed: 1, failed: 2 });
    const n = await job(nul);
    expect(n.status).toBe('failed');
    expect(n.last_error).toMatch(/^Error: badbyte/);
    const l = await job(long);
    expect(l.status).toBe('failed');
    expect((l.last_error as string).length).toBe(ERROR_TEXT_MAX);
    expect(await job(fine)).toMatchObject({ status: 'completed' });
  });

  it('a row the server refuses is recorded with a stand-in text; the others of its batch are recorded as they are', async () => {
    await t.db.query(`CREATE FUNCTION refuse_jam() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$`);
    await t.db.query(`CREATE TRIGGER refuse_jam BEFORE UPDATE ON qmaint.jobs FOR EACH ROW
      WHEN (NEW.queue = 'jam' AND NEW.last_error LIKE '%jammed%') EXECUTE FUNCTION refuse_jam()`);
    try {
      const jam = await enqueue(t.db, 'jam', { jam: true }, { maxRetries: 0 });
      const plain = await Promise.all([1, 2, 3].map((i) => enqueue(t.db, 'jam', { i }, { maxRetries: 0 })));
      const c = consumer(
        'jam',
        (j) => {
          throw new Error((j.payload as { jam?: boolean }).jam ? 'jammed' : 'plain failure');
        },
        { concurrency: 4, batch: 4, drain: true },
      );
      await c.start();
      await c.done;
      expect(c.stats.failed).toBe(4);
      const j = await job(jam);
      expect(j.status).toBe('failed');
      expect(j.last_error).toMatch(/could not be stored \(refused by a test trigger\)/);
      for (const id of plain) expect(await job(id)).toMatchObject({ status: 'failed', last_error: expect.stringMatching(/^Error: plain failure/) as string });
    } finally {
      await t.db.query('DROP TRIGGER refuse_jam ON qmaint.jobs');
    }
  });
});

describe('every attempt counts; jobs time out', () => {
  it('transaction mode: an attempt whose connection was killed counts against max_retries', async () => {
    const id = await enqueue(t.db, 'tx-kill', {}, { maxRetries: 1 });
    const db = await connect({ databaseUrl: t.url, max: 4 });
    let runs = 0;
    try {
      const c = consumer(
        'tx-kill',
        async (j) => {
          runs++;
          await j.client!.query('SELECT pg_terminate_backend(pg_backend_pid())');
        },
        { mode: 'transaction', concurrency: 2 },
        db,
      );
      await c.start();
      await eventually(async () => (await job(id)).status === 'failed', 20_000);
      await c.stop();
    } finally {
      await db.close();
    }
    expect(runs).toBe(2);
    expect(await job(id)).toMatchObject({ status: 'failed', retry_count: 1, attempt: 2 });
  });

  it('transaction mode: a handler that leaves its transaction aborted (and returns) fails the attempt, which counts', async () => {
    const id = await enqueue(t.db, 'tx-aborted', {}, { maxRetries: 1 });
    let runs = 0;
    const c = consumer(
      'tx-aborted',
      async (j) => {
        runs++;
        await j.client!.query('INSERT INTO no_such_table VALUES (1)').catch(() => undefined); // swallowed: the transaction is aborted
      },
      { mode: 'transaction', concurrency: 1 },
    );
    await c.start();
    await eventually(async () => (await job(id)).status === 'failed', 20_000);
    await c.stop();
    expect(runs).toBe(2);
    expect(await job(id)).toMatchObject({ status: 'failed', retry_count: 1, attempt: 2 });
    expect((await job(id)).last_error).toMatch(/aborted/);
  });

  it('lease mode: a hung handler is aborted at its job timeout and the attempt fails', async () => {
    const id = await enqueue(t.db, 'hang', {}, { maxRetries: 0, timeout: 0.2 });
    expect((await job(id)).timeout_ms).toBe(200);
    let reason: unknown = null;
    const c = consumer('hang', (j) => {
      j.signal.addEventListener('abort', () => {
        reason = j.signal.reason;
      });
      return new Promise(() => undefined);
    });
    await c.start();
    await eventually(async () => (await job(id)).status === 'failed', 10_000);
    await c.stop({ deadlineMs: 0 });
    expect(String(reason)).toMatch(/JobTimeoutError: job \d+ timed out after 0\.2 s/);
    expect(c.stats.timedOut).toBe(1);
    expect((await job(id)).last_error).toMatch(/^JobTimeoutError: job \d+ timed out after 0\.2 s/);
  });

  it('transaction mode: a handler stuck in a statement past the consumer timeout fails and its session is ended', async () => {
    const id = await enqueue(t.db, 'tx-hang', {}, { maxRetries: 0 });
    const db = await connect({ databaseUrl: t.url, max: 4, applicationName: 'qmaint-tx-hang' });
    try {
      const c = consumer(
        'tx-hang',
        async (j) => {
          await j.client!.query('SELECT pg_sleep(60)');
        },
        { mode: 'transaction', concurrency: 1, timeout: 0.3 },
        db,
      );
      await c.start();
      await eventually(async () => (await job(id)).status === 'failed', 15_000);
      await eventually(
        async () =>
          (await t.db.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'qmaint-tx-hang' AND query LIKE '%pg_sleep(60)%'`)).rowCount === 0,
      );
      await c.stop();
    } finally {
      await db.close();
    }
    expect((await job(id)).last_error).toMatch(/timed out after 0\.3 s/);
  });

  it("transaction mode: a job's own timeout (shorter than the consumer's) aborts a hung handler and fails the attempt", async () => {
    const id = await enqueue(t.db, 'tx-job-timeout', {}, { maxRetries: 0, timeout: 0.25 });
    let reason: unknown = null;
    const c = consumer(
      'tx-job-timeout',
      (j) => {
        j.signal.addEventListener('abort', () => {
          reason = j.signal.reason;
        });
        return new Promise(() => undefined);
      },
      { mode: 'transaction', concurrency: 1, timeout: 600 },
    );
    await c.start();
    await eventually(async () => (await job(id)).status === 'failed', 15_000);
    await c.stop({ deadlineMs: 0 });
    expect(String(reason)).toMatch(/JobTimeoutError: job \d+ timed out after 0\.25 s/);
    expect(c.stats.timedOut).toBe(1);
    expect((await job(id)).last_error).toMatch(/^JobTimeoutError: job \d+ timed out after 0\.25 s/);
  });

  it('enqueueMany stores the timeout of every job, or of each job with specs', async () => {
    await enqueueMany(t.db, 'timeouts', [1, 2, 3], { timeout: 1.5 });
    const { rows } = await t.db.query(`SELECT DISTINCT timeout_ms FROM qmaint.jobs WHERE queue = 'timeouts'`);
    expect(rows).toEqual([{ timeout_ms: 1500 }]);
    await enqueueMany(t.db, 'timeouts-specs', [{ payload: { n: 1 }, timeout: 0.25 }, { payload: { n: 2 } }], { specs: true });
    const specs = await t.db.query(`SELECT payload, timeout_ms FROM qmaint.jobs WHERE queue = 'timeouts-specs' ORDER BY id`);
    expect(specs.rows).toEqual([
      { payload: { n: 1 }, timeout_ms: 250 },
      { payload: { n: 2 }, timeout_ms: null },
    ]);
    await expect(enqueue(t.db, 'timeouts', {}, { timeout: 0 })).rejects.toThrow(/timeout must be a number of seconds/);
  });
});

describe('wake-ups and rescue', () => {
  it('a NOTIFY that arrives between an empty claim and the sleep is not lost', async () => {
    const handled: string[] = [];
    const wakes: WakeReason[] = [];
    const db = await connect({ databaseUrl: t.url, max: 4, applicationName: 'qmaint-lost-wake' });
    try {
      // Polls once a minute: only a NOTIFY can make the pickup prompt.
      const c = new Consumer(db, { queue: 'lost-wake', handler: (j) => void handled.push(j.id), pollMinMs: 60_000, pollMaxMs: 60_000, rescueEveryMs: 600_000 });
      c.on('wake', (reason) => wakes.push(reason));
      let idle = 0;
      c.on('idle', () => idle++);
      await c.start();
      await eventually(() => idle >= 2); // both lanes asleep
      // Hold the lanes between their next (empty) claim and their sleep: the low-water refresh waits on this lock.
      const unlock = await lockPolicy();
      await t.db.query(`SELECT pg_notify('qmaint_jobs', 'lost-wake')`);
      await eventually(async () => {
        const { rows } = await t.db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'qmaint-lost-wake' AND wait_event_type = 'Lock'`,
        );
        return rows[0]!.n === 2;
      });
      const listener = await t.client();
      await listener.query('LISTEN qmaint_jobs');
      const delivered = new Promise<void>((r) => listener.once('notification', () => r()));
      // qmaint.enqueue() would wait on the lock too (it may lower the low-water mark): insert and notify by hand.
      const { rows } = await t.db.query<{ id: string }>(
        `WITH j AS (INSERT INTO qmaint.jobs (queue) VALUES ('lost-wake') RETURNING id) SELECT id, pg_notify('qmaint_jobs', 'lost-wake') FROM j`,
      );
      const id = rows[0]!.id;
      await delivered;
      await new Promise((r) => setTimeout(r, 300)); // the consumer's LISTEN connection has it too
      wakes.length = 0;
      await unlock();
      await eventually(() => handled.includes(id), 20_000);
      await c.stop();
      expect(wakes[0]).toBe('notify');
    } finally {
      await db.close();
    }
  });

  it('every consumer rescues once at start, and --drain rescues before it decides nothing is left', async () => {
    const crashed = async (queue: string) => {
      const id = await enqueue(t.db, queue, {});
      const q = claimQuery({ queue, batch: 1, leaseSeconds: 60, workerId: 'crashed-worker', lowWater: null });
      await t.db.query(q.text, q.values);
      await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE id = $1`, [id]);
      return id;
    };
    const atStart = await crashed('rescue-start');
    // A long backoff (recorded for the queue, so rescue uses it too) keeps a rescued job visibly queued.
    const c = consumer('rescue-start', () => undefined, { rescueEveryMs: 600_000, backoffBaseMs: 600_000, backoffCapMs: 600_000 });
    await c.start();
    // Rescued before start() resolved (in backoff now), not after the first periodic rescue.
    expect(await job(atStart)).toMatchObject({ status: 'queued', retry_count: 1, locked_by: null });
    await c.stop();

    const drained = await crashed('rescue-drain');
    const d = consumer('rescue-drain', () => undefined, { drain: true, rescueEveryMs: 600_000, backoffBaseMs: 600_000, backoffCapMs: 600_000 });
    await d.start();
    await d.done;
    expect(await job(drained)).toMatchObject({ status: 'queued', retry_count: 1, locked_by: null });
  });

  it('--drain rescues a lease that ran out after the consumer started, before it decides nothing is left', async () => {
    // A crashed worker's job, its lease still good when the drain starts (so the start-up rescue leaves it).
    const orphan = await enqueue(t.db, 'late-expiry', { orphan: true });
    const q = claimQuery({ queue: 'late-expiry', batch: 1, leaseSeconds: 60, workerId: 'crashed-worker', lowWater: null });
    expect((await t.db.query<{ id: string }>(q.text, q.values)).rows.map((r) => r.id)).toEqual([orphan]);
    await enqueue(t.db, 'late-expiry', { orphan: false });
    // The drain's one job makes the orphan's lease run out while it is handled.
    const d = consumer(
      'late-expiry',
      async () => {
        await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE id = $1`, [orphan]);
      },
      { drain: true, rescueEveryMs: 600_000, backoffBaseMs: 600_000, backoffCapMs: 600_000 },
    );
    await d.start();
    await d.done;
    expect(d.stats.completed).toBe(1);
    expect(await job(orphan)).toMatchObject({ status: 'queued', retry_count: 1, locked_by: null });
  });
});
