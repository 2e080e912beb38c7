// Queue benchmarks: every figure is a ratio to a baseline measured in the same
// run on the same server. Baselines are the raw SQL with no library around it:
// the guide's CTE (FOR UPDATE SKIP LOCKED, batch of 100) plus a batch complete,
// on the same qmaint.jobs table.
import pg from 'pg';
import type { Db } from '../../src/db.js';
import { Consumer, type WakeReason } from '../../src/queue/consumer.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { fmt, maintained, percentile, type BenchContext, type BenchResult, type BenchSuite } from './harness.js';

const RAW_CLAIM = `WITH next AS (
  SELECT id, created_at FROM qmaint.jobs
   WHERE queue = $1 AND status = 'queued' AND run_at <= now()
   ORDER BY priority DESC, run_at, id
   LIMIT $2
   FOR UPDATE SKIP LOCKED
)
UPDATE qmaint.jobs j SET status = 'running', locked_by = 'raw', locked_until = now() + interval '60 seconds', updated_at = now()
  FROM next WHERE j.id = next.id AND j.created_at = next.created_at
RETURNING j.id`;
const RAW_COMPLETE = `UPDATE qmaint.jobs SET status = 'completed', locked_until = NULL, updated_at = now() WHERE id = ANY ($1::bigint[])`;

const QUEUE = 'bench';
const CONNECTIONS = 10;

interface Env {
  url: string;
  db: Db;
}

const payloads = (n: number) => {
  let i = 0;
  return {
    *[Symbol.iterator]() {
      while (i < n) yield { n: i++, kind: 'bench' };
    },
  };
};

async function reset(env: Env, jobs: number): Promise<void> {
  await env.db.query('TRUNCATE qmaint.jobs');
  if (jobs > 0) await enqueueMany(env.db, QUEUE, payloads(jobs));
  await env.db.query('VACUUM ANALYZE qmaint.jobs');
  await env.db.query('CHECKPOINT');
}

async function clients(env: Env, n: number): Promise<pg.Client[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ connectionString: env.url, application_name: 'qmaint-bench-raw' });
      await c.connect();
      return c;
    }),
  );
}

/** Raw baseline: 10 connections, each claiming batches and completing them, until empty. Returns jobs/s. */
async function rawDrain(env: Env, jobs: number, batch: number, perTransaction: boolean): Promise<number> {
  const conns = await clients(env, CONNECTIONS);
  const start = performance.now();
  let done = 0;
  await Promise.all(
    conns.map(async (c) => {
      for (;;) {
        if (perTransaction) await c.query('BEGIN');
        const { rows } = await c.query<{ id: string }>(RAW_CLAIM, [QUEUE, batch]);
        if (rows.length === 0) {
          if (perTransaction) await c.query('COMMIT');
          return;
        }
        await c.query(RAW_COMPLETE, [rows.map((r) => r.id)]);
        if (perTransaction) await c.query('COMMIT');
        done += rows.length;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  await Promise.all(conns.map((c) => c.end()));
  if (done !== jobs) throw new Error(`raw drain handled ${done} of ${jobs} jobs`);
  return jobs / seconds;
}

/** The library: one Consumer, concurrency 10, no-op handler, --drain. Returns jobs/s. */
async function consumerDrain(env: Env, jobs: number, mode: 'lease' | 'transaction'): Promise<number> {
  const c = new Consumer(env.db, {
    queue: QUEUE,
    handler: () => undefined,
    concurrency: CONNECTIONS,
    batch: 100,
    mode,
    drain: true,
    listen: false,
    pollMinMs: 5,
    pollMaxMs: 20,
  });
  const start = performance.now();
  await c.start();
  await c.done;
  const seconds = (performance.now() - start) / 1000;
  if (c.stats.completed !== jobs) throw new Error(`consumer handled ${c.stats.completed} of ${jobs} jobs`);
  return jobs / seconds;
}

/** Hold a REPEATABLE READ snapshot (the xmin horizon) open while fn runs. */
async function withHeldSnapshot<T>(env: Env, fn: () => Promise<T>): Promise<T> {
  const holder = new pg.Client({ connectionString: env.url, application_name: 'qmaint-bench-snapshot' });
  await holder.connect();
  await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  await holder.query('SELECT count(*) FROM qmaint.partition_policy');
  try {
    return await fn();
  } finally {
    await holder.query('COMMIT');
    await holder.end();
  }
}

/**
 * COPY enqueue (enqueueMany) against multi-row INSERT of the same jobs, and
 * the server's own floor for those rows: an INSERT … SELECT that builds them
 * on the server, with no client, no protocol and no parsing (jobs/s each).
 */
async function copyVsInsert(env: Env, jobs: number): Promise<{ copy: number; insert: number; floor: number }> {
  await reset(env, 0);
  let start = performance.now();
  await enqueueMany(env.db, QUEUE, payloads(jobs));
  const copy = jobs / ((performance.now() - start) / 1000);
  await reset(env, 0);
  // Baseline: multi-row INSERT of 1,000 rows per statement, each statement its own transaction.
  const rows = 1000;
  const text = `INSERT INTO qmaint.jobs (queue, payload) VALUES ${Array.from({ length: rows }, (_, i) => `($1, $${i + 2}::jsonb)`).join(', ')}`;
  start = performance.now();
  for (let sent = 0; sent < jobs; sent += rows) {
    const values: unknown[] = [QUEUE];
    for (let i = 0; i < rows; i++) values.push(JSON.stringify({ n: sent + i, kind: 'bench' }));
    await env.db.query(text, values);
  }
  const insert = jobs / ((performance.now() - start) / 1000);
  await reset(env, 0);
  start = performance.now();
  await env.db.query(`INSERT INTO qmaint.jobs (queue, payload) SELECT $1, jsonb_build_object('n', n, 'kind', 'bench') FROM generate_series(0, $2 - 1) n`, [
    QUEUE,
    jobs,
  ]);
  const floor = jobs / ((performance.now() - start) / 1000);
  return { copy, insert, floor };
}

/**
 * COPY of the same jobs (as JobSpecs) without keys, with a unique key each
 * (staged COPY + qmaint.enqueue_keyed), and again with every key already held
 * (all skipped). Jobs per second.
 */
async function keyedCopy(env: Env, jobs: number): Promise<{ plain: number; keyed: number; held: number }> {
  const specs = (keyed: boolean) => Array.from({ length: jobs }, (_, i) => ({ payload: { n: i, kind: 'bench' }, ...(keyed ? { key: `k${i}` } : {}) }));
  const time = async (fn: () => Promise<unknown>) => {
    const start = performance.now();
    await fn();
    return jobs / ((performance.now() - start) / 1000);
  };
  await reset(env, 0);
  const plain = await time(() => enqueueMany(env.db, QUEUE, specs(false), { specs: true }));
  await reset(env, 0);
  await env.db.query('TRUNCATE qmaint.job_keys');
  const keyed = await time(() => enqueueMany(env.db, QUEUE, specs(true), { specs: true, keyMode: 'skip' }));
  const held = await time(() => enqueueMany(env.db, QUEUE, specs(true), { specs: true, keyMode: 'skip' }));
  await env.db.query('TRUNCATE qmaint.job_keys');
  return { plain, keyed, held };
}

/**
 * Enqueue-to-handler latency of an idle consumer woken by NOTIFY (polling set
 * to a minute). The first wake-up after each enqueue is checked: a sample
 * served by the poll (a lost notification) fails the benchmark, whatever the
 * percentiles say.
 */
async function wakeLatency(env: Env, samples: number): Promise<number[]> {
  await reset(env, 0);
  let resolveHandled: (() => void) | null = null;
  const c = new Consumer(env.db, { queue: QUEUE, handler: () => resolveHandled?.(), pollMinMs: 60_000, pollMaxMs: 60_000 });
  let firstWake: WakeReason | null = null;
  let waiting = false;
  c.on('wake', (reason) => {
    if (waiting && firstWake === null) firstWake = reason;
  });
  const idle = () => new Promise<void>((r) => c.once('idle', () => r()));
  let nextIdle = idle();
  await c.start();
  const latencies: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      await nextIdle;
      nextIdle = idle();
      const handled = new Promise<void>((r) => (resolveHandled = r));
      firstWake = null;
      waiting = true;
      const start = performance.now();
      await enqueue(env.db, QUEUE, { i });
      await handled;
      waiting = false;
      const ms = performance.now() - start;
      // A job picked up by a lane that was not asleep needs no wake-up; one picked up by the poll means a lost NOTIFY.
      if (firstWake === 'poll')
        throw new Error(`wake-up sample ${i + 1} of ${samples} was served by the poll after ${fmt(ms)} ms, not by NOTIFY: a notification was lost`);
      latencies.push(ms);
    }
  } finally {
    await c.stop();
  }
  return latencies.sort((a, b) => a - b);
}

interface Pair {
  base: number;
  lib: number;
  ratio: number;
}

/**
 * Baseline and library measured back to back, `rounds` times (jobs re-queued
 * before each run). The machine is shared, so the figure reported is the
 * median round by ratio (the lower middle one for an even count): both sides
 * of a pair saw about the same load.
 */
async function paired(env: Env, jobs: number, rounds: number, base: () => Promise<number>, lib: () => Promise<number>): Promise<Pair> {
  const pairs: Pair[] = [];
  for (let i = 0; i < rounds; i++) {
    await reset(env, jobs);
    const b = await base();
    await reset(env, jobs);
    const l = await lib();
    pairs.push({ base: b, lib: l, ratio: l / b });
  }
  pairs.sort((x, y) => x.ratio - y.ratio);
  return pairs[Math.floor((pairs.length - 1) / 2)]!;
}

/** Rounds of the COPY comparison: its goal must hold in every one. */
const COPY_ROUNDS = 3;

export const queueSuite: BenchSuite = {
  id: 'queue',
  title: 'Queue: enqueue, drain, one job per transaction, NOTIFY wake-up, held snapshot',
  async run(ctx: BenchContext): Promise<BenchResult> {
    const scale = ctx.scale;
    const drainJobs = Math.max(1000, Math.round(100_000 * scale));
    const txJobs = Math.max(500, Math.round(4_000 * scale));
    const heldJobs = Math.max(1000, Math.round(50_000 * scale));
    const rounds = scale >= 1 ? 3 : 1;
    const { url, db } = await ctx.newDatabase();
    await maintained(db);
    const env = { url, db };

    ctx.log(`queue: COPY vs INSERT, ${drainJobs} jobs, ${COPY_ROUNDS} rounds`);
    const enqRounds: Awaited<ReturnType<typeof copyVsInsert>>[] = [];
    for (let r = 0; r < COPY_ROUNDS; r++) enqRounds.push(await copyVsInsert(env, drainJobs));
    const copyRatios = enqRounds.map((e) => e.copy / e.insert);
    // The round with the lowest ratio stands for the target: it must hold in every round.
    const enq = enqRounds[copyRatios.indexOf(Math.min(...copyRatios))]!;
    ctx.log(`queue: COPY with and without unique keys, ${drainJobs} jobs`);
    const keys = await keyedCopy(env, drainJobs);

    ctx.log(`queue: drain ${drainJobs} jobs at concurrency ${CONNECTIONS}, ${rounds} round(s)`);
    const drain = await paired(
      env,
      drainJobs,
      rounds,
      () => rawDrain(env, drainJobs, 100, false),
      () => consumerDrain(env, drainJobs, 'lease'),
    );

    ctx.log(`queue: one job per transaction, ${txJobs} jobs, ${rounds} round(s)`);
    const tx = await paired(
      env,
      txJobs,
      rounds,
      () => rawDrain(env, txJobs, 1, true),
      () => consumerDrain(env, txJobs, 'transaction'),
    );

    ctx.log('queue: NOTIFY wake-up latency');
    const wake = await wakeLatency(env, Math.max(50, Math.round(300 * scale)));

    ctx.log(`queue: drain ${heldJobs} jobs with a REPEATABLE READ snapshot held open`);
    const held = await paired(
      env,
      heldJobs,
      1,
      () => consumerDrain(env, heldJobs, 'lease'),
      () => withHeldSnapshot(env, () => consumerDrain(env, heldJobs, 'lease')),
    );
    const rawHeld = await paired(
      env,
      heldJobs,
      1,
      () => rawDrain(env, heldJobs, 100, false),
      () => withHeldSnapshot(env, () => rawDrain(env, heldJobs, 100, false)),
    );

    const targets = [
      {
        what: `drain ${drainJobs.toLocaleString('en-US')} jobs, concurrency ${CONNECTIONS}, vs raw batch claim/complete`,
        value: drain.ratio,
        goal: 0.8,
        detail: `${fmt(drain.lib)} vs ${fmt(drain.base)} jobs/s`,
      },
      {
        what: `one job per transaction (${txJobs.toLocaleString('en-US')} jobs) vs raw one-per-transaction`,
        value: tx.ratio,
        goal: 0.9,
        detail: `${fmt(tx.lib)} vs ${fmt(tx.base)} jobs/s`,
      },
      {
        what: `COPY enqueue vs multi-row INSERT (1,000 rows per statement), the lowest of ${COPY_ROUNDS} consecutive rounds`,
        value: enq.copy / enq.insert,
        goal: 3,
        detail: `${fmt(enq.copy)} vs ${fmt(enq.insert)} jobs/s; every round: ${copyRatios.map((r) => fmt(r) + '×').join(', ')}`,
      },
      { what: `COPY enqueue throughput (goal 100,000 jobs/s)`, value: enq.copy / 100_000, goal: 1, detail: `${fmt(enq.copy)} jobs/s` },
      {
        what: `qmaint drain with a snapshot held vs qmaint clean (${heldJobs.toLocaleString('en-US')} jobs)`,
        value: held.ratio,
        goal: 0.8,
        detail: `${fmt(held.lib)} vs ${fmt(held.base)} jobs/s`,
      },
    ];
    const met = targets.every((t) => t.value >= t.goal);
    const markdown = [
      `Parameters: ${drainJobs.toLocaleString('en-US')} pre-queued no-op jobs for the drain, ${txJobs.toLocaleString('en-US')} for one-per-transaction, ${heldJobs.toLocaleString('en-US')} for the held-snapshot runs; ${CONNECTIONS} raw connections or a consumer with concurrency ${CONNECTIONS} (batch 100); the drain and one-per-transaction figures are the median of ${rounds} back-to-back rounds (baseline then library; the machine is shared with other work). Scale ${scale}.`,
      '',
      '| measurement | ratio | goal | figures | verdict |',
      '| --- | ---: | ---: | --- | --- |',
      ...targets.map((t) => `| ${t.what} | ${fmt(t.value)}× | ≥ ${t.goal}× | ${t.detail} | ${t.value >= t.goal ? 'met' : '**missed**'} |`),
      `| the server's floor for the same rows: INSERT … SELECT built on the server (no client, no parsing) vs multi-row INSERT, same round as the COPY row | ${fmt(enq.floor / enq.insert)}× | — | ${fmt(enq.floor)} vs ${fmt(enq.insert)} jobs/s | — |`,
      `| raw SQL with a snapshot held vs raw clean (for comparison) | ${fmt(rawHeld.ratio)}× | — | ${fmt(rawHeld.lib)} vs ${fmt(rawHeld.base)} jobs/s | — |`,
      `| COPY enqueue with a unique key per job vs the same jobs without keys (staged COPY + enqueue_keyed) | ${fmt(keys.keyed / keys.plain)}× | — | ${fmt(keys.keyed)} vs ${fmt(keys.plain)} jobs/s | — |`,
      `| COPY enqueue whose keys are all held (every job skipped) vs without keys | ${fmt(keys.held / keys.plain)}× | — | ${fmt(keys.held)} vs ${fmt(keys.plain)} jobs/s | — |`,
      '',
      `NOTIFY wake-up, enqueue commit to handler start of an idle consumer (polling once a minute), ${wake.length} samples: p50 ${fmt(percentile(wake, 50))} ms, p99 ${fmt(percentile(wake, 99))} ms, max ${fmt(wake[wake.length - 1]!)} ms. No sample was served by the poll (one that is fails the run).`,
      '',
      `What bounds the COPY ratio: COPY pays only the server's per-row work (partition routing, the id sequence, the heap row, the primary key and claim index entries, their WAL), and multi-row INSERT pays that plus parsing and binding 1,000 parameters per statement. The floor row builds the same rows on the server with no client at all; COPY reached ${fmt((enq.copy / enq.floor) * 100, 0)}% of it in the round shown. So COPY can be at most about ${fmt(enq.floor / enq.insert)}× the INSERT here, however fast the client side; a larger ratio needs less work per row on the server, not a faster client.`,
      '',
      'Why the held snapshot hurts the raw SQL: each claim turns queued rows into running ones, and their entries in the partial claim index stay behind as dead entries that no one may remove while an old snapshot holds the xmin horizon. The raw CTE starts every index scan at the head of the queue and steps over all of them, so each claim costs more than the last. The consumer starts each claim after the last key it claimed (a keyset start position in the one claim statement, reset every 2 s and whenever a claim comes up short, so priorities and returned jobs are honoured), and steps over only the few entries claimed by others since.',
    ].join('\n');
    return { markdown, targetsMet: met };
  },
};
