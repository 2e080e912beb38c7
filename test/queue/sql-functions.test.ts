import { describe, expect, it } from 'vitest';
import type { PlanNode } from '../../src/health/plan.js';
import { claimQuery } from '../../src/queue/claim.js';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { freshDatabase } from '../helpers.js';

describe('queue SQL functions', () => {
  it('retry_delay never overflows: the cap applies before the delay becomes an interval', async () => {
    const t = await freshDatabase();
    const { rows } = await t.db.query<{ a: number; b: number; c: number }>(
      `SELECT extract(epoch FROM qmaint.retry_delay(41, '8 seconds', '1 hour'))::float8 AS a,
              extract(epoch FROM qmaint.retry_delay(2147483647, '1 day', '1 year'))::float8 AS b,
              extract(epoch FROM qmaint.retry_delay(3, '1 second', '1 hour'))::float8 AS c`,
    );
    const r = rows[0]!;
    // Equal jitter: between half the capped delay and all of it.
    expect(r.a).toBeGreaterThanOrEqual(1800);
    expect(r.a).toBeLessThanOrEqual(3600);
    expect(r.b).toBeGreaterThanOrEqual((365.25 * 86400) / 2);
    expect(r.b).toBeLessThanOrEqual(365.25 * 86400);
    expect(r.c).toBeGreaterThanOrEqual(2);
    expect(r.c).toBeLessThanOrEqual(4);
  });

  it('enqueue heals only a missing partition: a failing CHECK constraint still raises', async () => {
    const t = await freshDatabase();
    // No partition for 2040 yet: enqueue makes it and inserts.
    const made = await t.db.query<{ id: string }>(`SELECT qmaint.enqueue('q', '{}', NULL, 0, 5, '2040-06-01T00:00:00Z') AS id`);
    expect(made.rows[0]!.id).toMatch(/^\d+$/);
    // A queue name the table's CHECK refuses, in a slot with no partition: the CHECK error comes through
    // (under any lc_messages: the decision reads the constraint name, not the message).
    await expect(t.db.query(`SELECT qmaint.enqueue('', '{}', NULL, 0, 5, '2041-06-01T00:00:00Z')`)).rejects.toMatchObject({
      message: expect.stringMatching(/jobs_queue_check/) as string,
    });
    await expect(t.db.query(`SELECT qmaint.enqueue('', '{}')`)).rejects.toMatchObject({ message: expect.stringMatching(/jobs_queue_check/) as string });
    const { rows } = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint.jobs WHERE queue = ''`);
    expect(rows[0]!.n).toBe('0');
  });

  it('enqueue heals a missing partition whatever language the server speaks (lc_messages German)', async (ctx) => {
    const t = await freshDatabase();
    const c = await t.client();
    // Needs a server with German messages and the de_DE.UTF-8 locale (scripts/pg15.sh provides both; the
    // embedded server ships no translations, so there the messages stay English and this test is skipped).
    const german = await c.query(`SET lc_messages = 'de_DE.UTF-8'`).then(
      () =>
        c.query('SELECT 1 / 0').then(
          () => false,
          (err: Error) => /Division durch Null/.test(err.message),
        ),
      () => false,
    );
    if (!german) ctx.skip();
    // The server's own words for a missing partition are not English here.
    await expect(c.query(`INSERT INTO qmaint.jobs (queue, created_at) VALUES ('de', '2042-06-01T00:00:00Z')`)).rejects.toThrow(/keine Partition/);
    const made = await c.query<{ id: string }>(`SELECT qmaint.enqueue('de', '{}', NULL, 0, 5, '2042-06-01T00:00:00Z') AS id`);
    expect(made.rows[0]!.id).toMatch(/^\d+$/);
    // A failing CHECK in a slot with no partition still raises (in German), and nothing is stored.
    await expect(c.query(`SELECT qmaint.enqueue('', '{}', NULL, 0, 5, '2043-06-01T00:00:00Z')`)).rejects.toThrow(/jobs_queue_check/);
    const { rows } = await t.db.query<{ queue: string }>(`SELECT queue FROM qmaint.jobs`);
    expect(rows).toEqual([{ queue: 'de' }]);
  });

  it("a job whose lease ran out comes back with its queue's backoff, decided as a failure would be", async () => {
    const t = await freshDatabase();
    // A consumer of the queue records its backoff (10 min base) when it starts.
    const consumer = new Consumer(t.db, {
      queue: 'slow-retry',
      handler: () => undefined,
      listen: false,
      pollMinMs: 1000,
      pollMaxMs: 1000,
      backoffBaseMs: 600_000,
      backoffCapMs: 3_600_000,
    });
    await consumer.start();
    await consumer.stop();
    expect(
      (await t.db.query(`SELECT queue, extract(epoch FROM backoff_base)::int AS base, extract(epoch FROM backoff_cap)::int AS cap FROM qmaint.queues`)).rows,
    ).toEqual([{ queue: 'slow-retry', base: 600, cap: 3600 }]);
    // Its worker died holding a job; another queue's job has no recorded backoff (1 s default).
    const a = await enqueue(t.db, 'slow-retry', {});
    const b = await enqueue(t.db, 'other', {});
    await t.db.query(
      `UPDATE qmaint.jobs SET status = 'running', attempt = 1, locked_by = 'dead', locked_until = now() - interval '1 second' WHERE id IN ($1, $2)`,
      [a, b],
    );
    expect((await t.db.query<{ r: { requeued: number } }>('SELECT qmaint.rescue_expired() AS r')).rows[0]!.r.requeued).toBe(2);
    const { rows } = await t.db.query<{ id: string; status: string; retry_count: number; wait: number; last_error: string }>(
      `SELECT id::text, status::text, retry_count, extract(epoch FROM run_at - now())::float8 AS wait, last_error FROM qmaint.jobs ORDER BY id`,
    );
    // Retry 1 with equal jitter: between half the base and the base.
    expect(rows[0]).toMatchObject({
      id: a,
      status: 'queued',
      retry_count: 1,
      last_error: expect.stringMatching(/^lease of attempt 1 held by dead expired at /) as string,
    });
    expect(rows[0]!.wait).toBeGreaterThan(290);
    expect(rows[0]!.wait).toBeLessThanOrEqual(600);
    expect(rows[1]).toMatchObject({ id: b, status: 'queued', retry_count: 1 });
    expect(rows[1]!.wait).toBeLessThanOrEqual(1);
  });
});

describe('plans of the functions on the write paths', () => {
  it('the keyed enqueue and cancel never make a generic plan, the dead-letter move is planned per call, the heal keeps one', async () => {
    // Left to choose, PL/pgSQL makes a generic plan (every partition) on a connection's sixth call to compare it:
    // at 1,000 partitions that one call took 0.2-1.4 s. The scale bench's "first six" column shows it (docs/queue.md).
    const t = await freshDatabase();
    const { rows } = await t.db.query<{ fn: string; mode: string | null }>(
      `SELECT p.oid::regprocedure::text AS fn,
              (SELECT split_part(c, '=', 2) FROM unnest(p.proconfig) c WHERE c LIKE 'plan_cache_mode=%') AS mode
         FROM pg_proc p
        WHERE p.pronamespace = 'qmaint'::regnamespace AND p.proname IN ('cancel_jobs', 'enqueue_keyed', 'rescue_expired', 'job_finished', 'live_below')
        ORDER BY p.proname`,
    );
    // rescue_expired keeps the default: the setting would hold for the backoff functions it calls per
    // expired job, re-planned each time (211 against 93 ms a call with 588 expired, at 1,000 partitions).
    // job_finished moves a failed job to its dead-letter queue with EXECUTE, planned for its values each time.
    expect(rows.map((r) => [r.fn.replace(/\(.*/, ''), r.mode])).toEqual([
      ['qmaint.cancel_jobs', 'force_custom_plan'],
      ['qmaint.enqueue_keyed', 'force_custom_plan'],
      ['qmaint.job_finished', null],
      ['qmaint.live_below', 'force_generic_plan'],
      ['qmaint.rescue_expired', null],
    ]);
    const { rows: body } = await t.db.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE oid = 'qmaint.job_finished()'::regprocedure`);
    expect(body[0]!.src).toMatch(/EXECUTE 'UPDATE qmaint\.jobs j SET queue = \$1/);
  });
});

describe('rescue_expired at the size of its expired jobs', () => {
  it('reads only the partitions that hold an expired job: no other partition is scanned whole', async () => {
    const t = await freshDatabase();
    const c = await t.client();
    // Six daily partitions in the past, each with a few finished jobs, and a running job in each: one
    // of them with a lease that ran out. The mark sits at the oldest, so every one is live.
    const days = [10, 8, 6, 4, 2, 1].map((d) => new Date(Date.now() - d * 86_400_000));
    for (const day of days) {
      await c.query(`SELECT qmaint.ensure_jobs_partition($1), qmaint.lower_low_water($1)`, [day]);
      await c.query(
        `INSERT INTO qmaint.jobs (queue, status, created_at, run_at, locked_by, locked_until, attempt)
         SELECT 'q', CASE WHEN g = 0 THEN 'running' ELSE 'completed' END::qmaint.job_status, $1, $1,
                CASE WHEN g = 0 THEN 'w' END, CASE WHEN g = 0 THEN now() + interval '1 hour' END, 1
           FROM generate_series(0, 20) g`,
        [day],
      );
    }
    const expiredDay = days[3]!;
    const { rows: target } = await c.query<{ id: string; part: string }>(
      `UPDATE qmaint.jobs SET locked_until = now() - interval '1 second' WHERE status = 'running' AND created_at = $1 RETURNING id::text, tableoid::regclass::text AS part`,
      [expiredDay],
    );
    expect(target).toHaveLength(1);
    const seqScans = async () => {
      // Flush this backend's counters, then read them afresh.
      await c.query('SELECT pg_stat_force_next_flush()');
      await c.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await c.query<{ part: string; n: string }>(
        `SELECT p.partition::text AS part, coalesce(s.seq_scan, 0)::text AS n
           FROM qmaint.partitions_of('qmaint.jobs') p LEFT JOIN pg_stat_user_tables s ON s.relid = p.partition`,
      );
      return new Map(rows.map((r) => [r.part, Number(r.n)]));
    };
    const before = await seqScans();
    const { rows } = await c.query<{ r: { requeued: number } }>('SELECT qmaint.rescue_expired() AS r');
    expect(rows[0]!.r.requeued).toBe(1);
    const after = await seqScans();
    const scanned = [...after].filter(([part, n]) => n > (before.get(part) ?? 0)).map(([part]) => part);
    expect(scanned.filter((p) => p !== target[0]!.part)).toEqual([]);
    expect((await c.query(`SELECT status::text FROM qmaint.jobs WHERE id = $1`, [target[0]!.id])).rows).toEqual([{ status: 'queued' }]);
  });
});

describe('the claim at the size of its batch', () => {
  it('finds each claimed row again by ctid in its own partition, with a mark far back over many partitions', async () => {
    const t = await freshDatabase();
    const c = await t.client();
    // Six past days, each with finished history (5,000 rows: partitions of a few hundred the planner
    // rightly reads whole) and a few queued jobs; the mark at the oldest. Joined by key alone, the
    // update probes the primary key of every partition or hashes them.
    const days = [10, 8, 6, 4, 2, 1].map((d) => new Date(Date.now() - d * 86_400_000));
    for (const day of days) {
      await c.query(`SELECT qmaint.ensure_jobs_partition($1), qmaint.lower_low_water($1)`, [day]);
      await c.query(
        `INSERT INTO qmaint.jobs (queue, status, created_at, run_at)
         SELECT 'q', CASE WHEN g < 5 THEN 'queued' ELSE 'completed' END::qmaint.job_status, $1, $1
           FROM generate_series(0, 5000) g`,
        [day],
      );
    }
    await c.query('ANALYZE qmaint.jobs');
    const q = claimQuery({ queue: 'q', batch: 20, leaseSeconds: 60, workerId: 'w', lowWater: days[0]! });
    await c.query('BEGIN');
    const { rows } = await c.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${q.text}`, q.values);
    await c.query('ROLLBACK');
    const plan = rows[0]!['QUERY PLAN'][0].Plan;
    expect(plan['Actual Rows']).toBe(20);
    // The update side: every scan of a jobs partition outside the claim's LockRows that ran.
    const ran: string[] = [];
    const walk = (n: PlanNode, claimSide: boolean) => {
      const side = claimSide || n['Node Type'] === 'LockRows';
      if (!side && n['Relation Name']?.startsWith('jobs_p') && n['Node Type'] !== 'ModifyTable' && (n['Actual Loops'] ?? 0) > 0) ran.push(n['Node Type']);
      for (const child of n.Plans ?? []) walk(child, side);
    };
    walk(plan, false);
    expect(ran.length).toBeGreaterThan(0);
    expect([...new Set(ran)]).toEqual(['Tid Scan']);
  });
});
