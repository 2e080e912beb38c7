// The inspection commands at scale (issue 12): status counts queued and
// running jobs exactly and estimates the history from statistics (labelled),
// --exact counts every row; jobs list prunes partitions below the low-water
// mark for live statuses; partitions list keeps its live counts and measures
// only partitions from the mark on.
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { listJobs, listJobsQuery, planJobAction, type JobStatus, type StatusReport } from '../../src/queue/admin.js';
import { Consumer } from '../../src/queue/consumer.js';
import { READY_SQL } from '../../src/queue/statements.js';
import type { TableSummary } from '../../src/partitions/index.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const DAY = 86_400_000;
const now = new Date();
const schema = JSON.parse(readFileSync(new URL('../../docs/json/cli-output.schema.json', import.meta.url), 'utf8')) as object;
const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
ajv.addSchema(schema, 'cli');
const valid = (def: string, doc: unknown) => {
  const validate = ajv.getSchema(`cli#/$defs/${def}`)!;
  return validate(doc) ? null : validate.errors;
};

/** Rows straight into qmaint.jobs (through the parent): `n` jobs of one queue and status, created `daysBack` days ago. */
async function rows(queue: string, status: JobStatus, n: number, daysBack: number): Promise<void> {
  await t.db.query(
    `INSERT INTO qmaint.jobs (queue, payload, status, created_at, run_at, updated_at, locked_by, locked_until)
     SELECT $1, jsonb_build_object('g', g), $2::qmaint.job_status, $3, $3, $3,
            CASE WHEN $2 = 'running' THEN 'w' END, CASE WHEN $2 = 'running' THEN $4::timestamptz + interval '1 hour' END
       FROM generate_series(1, $5) g`,
    [queue, status, new Date(now.getTime() - daysBack * DAY), now, n],
  );
}

/** True counts per queue and status. */
async function truth(): Promise<Map<string, Record<string, number>>> {
  const { rows: r } = await t.db.query<{ queue: string; status: string; n: number }>(
    'SELECT queue, status::text AS status, count(*)::int AS n FROM qmaint.jobs GROUP BY 1, 2',
  );
  const m = new Map<string, Record<string, number>>();
  for (const x of r) m.set(x.queue, { queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0, ...m.get(x.queue), [x.status]: x.n });
  return m;
}

const partitionOf = async (daysBack: number) =>
  (
    await t.db.query<{ p: string }>(`SELECT partition::text AS p FROM qmaint.partitions_of('qmaint.jobs') WHERE lower_bound <= $1 AND $1 < upper_bound`, [
      new Date(now.getTime() - daysBack * DAY),
    ])
  ).rows[0]!.p;

beforeAll(async () => {
  // A week of daily partitions: history five days back, the live queue today.
  const { rows: plan } = await t.db.query<{ statement: string }>(`SELECT statement FROM qmaint.create_plan('qmaint.jobs', $1, $2)`, [
    new Date(now.getTime() - 7 * DAY),
    new Date(now.getTime() + 2 * DAY),
  ]);
  for (const p of plan) await t.db.query(p.statement);
  await rows('a', 'completed', 400, 5);
  await rows('a', 'failed', 6, 5);
  await rows('a', 'cancelled', 4, 5);
  await rows('b', 'completed', 200, 5);
  await rows('b', 'completed', 100, 4);
  await rows('a', 'queued', 7, 0);
  await rows('b', 'running', 3, 0);
  await rows('b', 'completed', 50, 0);
  await t.db.query('ANALYZE qmaint.jobs');
  // The mark moves up to today's partition: nothing live lies below it.
  await t.db.query(`SELECT qmaint.advance_low_water('qmaint.jobs', $1)`, [now]);
});

describe('status', () => {
  it('counts live jobs exactly, estimates history from the statistics and says so; --exact counts every row', async () => {
    // Written after ANALYZE, below the mark: the estimate cannot know them, --exact must.
    await rows('b', 'completed', 30, 5);
    const est = await runCli(['status', '--json', '--now', now.toISOString()], { env });
    expect(est.code).toBe(0);
    const doc = est.json<StatusReport & { ok: true }>();
    expect(valid('status', doc)).toBeNull();
    expect(doc.exact).toBe(false);
    const a = doc.queues.find((q) => q.queue === 'a')!;
    const b = doc.queues.find((q) => q.queue === 'b')!;
    expect([a.counts.queued, a.counts.running, b.counts.queued, b.counts.running]).toEqual([7, 0, 0, 3]);
    expect(a.estimated).toEqual({ queued: false, running: false, completed: true, failed: true, cancelled: true });
    expect(a.ready).toBe(7);
    expect(a.oldestQueuedAgeSeconds).toBeGreaterThanOrEqual(0);
    // ANALYZE read every row of these small partitions: the estimate of the analysed rows is right, the 30 later rows are missing.
    const oldName = await partitionOf(5);
    const old = doc.partitions.find((p) => p.partition === oldName)!;
    expect(old.estimated.completed).toBe(true);
    expect(old.counts).toEqual({ queued: 0, running: 0, completed: 600, failed: 6, cancelled: 4 });

    const exact = await runCli(['status', '--exact', '--json', '--now', now.toISOString()], { env });
    const x = exact.json<StatusReport & { ok: true }>();
    expect(valid('status', x)).toBeNull();
    expect(x.exact).toBe(true);
    const counts = await truth();
    for (const q of x.queues) {
      expect(q.counts, q.queue).toEqual(counts.get(q.queue));
      expect(Object.values(q.estimated).some(Boolean)).toBe(false);
    }
    expect(x.partitions.find((p) => p.partition === old.partition)!.counts.completed).toBe(630);
  });

  it('counts a partition without statistics exactly (estimated false)', async () => {
    await rows('c', 'completed', 5, 6);
    const doc = (await runCli(['status', '--json', '--now', now.toISOString()], { env })).json<StatusReport>();
    const name = await partitionOf(6);
    const p = doc.partitions.find((x) => x.partition === name)!;
    expect(p.counts.completed).toBe(5);
    expect(p.estimated.completed).toBe(false);
    expect(doc.queues.find((q) => q.queue === 'c')!.counts.completed).toBe(5);
  });

  it('labels estimates in the table', async () => {
    const r = await runCli(['status', '--now', now.toISOString()], { env: { ...env, COLUMNS: '200' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/~600\b/);
    expect(r.stdout).toContain('~ estimate from the statistics');
    const exact = await runCli(['status', '--exact', '--now', now.toISOString()], { env: { ...env, COLUMNS: '200' } });
    expect(exact.stdout).not.toContain('~');
  });
});

describe('jobs list', () => {
  it('finds queued and running jobs from the low-water mark on, and EXPLAIN shows the partitions below it pruned', async () => {
    const mark = (await t.db.query<{ lw: Date }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`)).rows[0]!.lw;
    expect(mark.getTime()).toBeGreaterThan(now.getTime() - DAY);
    const sent: string[] = [];
    const recording = { query: (text: string, values?: unknown[]) => (sent.push(text), t.db.query(text, values)) };
    const queued = await listJobs(recording as never, { status: 'queued', limit: 50 });
    // The mark was read first and bounds the statement (and read once more after it, unchanged).
    expect(sent.filter((s) => s.includes('FROM qmaint.jobs')).every((s) => /created_at >= \$\d+::timestamptz/.test(s))).toBe(true);
    expect(sent.filter((s) => s.includes('low_water'))).toHaveLength(2);
    expect(queued).toHaveLength(7);
    expect(queued.every((j) => j.status === 'queued' && j.queue === 'a')).toBe(true);
    expect(queued.map((j) => j.id)).toEqual([...queued.map((j) => j.id)].sort((x, y) => Number(BigInt(y) - BigInt(x))));
    expect((await listJobs(t.db, { status: 'running', queue: 'b' })).map((j) => j.status)).toEqual(['running', 'running', 'running']);
    expect(await listJobs(t.db, { status: 'running', queue: 'a' })).toEqual([]);
    // Keyset pages: the second page starts after the last id of the first.
    const first = await listJobs(t.db, { status: 'queued', limit: 4 });
    const second = await listJobs(t.db, { status: 'queued', limit: 4, after: first[3]!.id });
    expect([...first, ...second].map((j) => j.id)).toEqual(queued.map((j) => j.id));
    expect(await listJobs(t.db, { status: 'queued', ids: [queued[2]!.id, '999999'] })).toHaveLength(1);

    const q = listJobsQuery({ status: 'queued', limit: 50, lowWater: mark }, false);
    const plan = (await t.db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${q.text}`, q.values)).rows[0]!['QUERY PLAN'];
    const scanned = new Set([...JSON.stringify(plan).matchAll(/"Relation Name":\s*"(jobs_p[0-9_]+)"/g)].map((m) => m[1]));
    const all = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.partitions_of('qmaint.jobs')`)).rows[0]!.n;
    expect(scanned.size).toBeGreaterThan(0);
    expect(scanned.size).toBeLessThan(all);
    expect(scanned.has((await partitionOf(5)).replace('qmaint.', ''))).toBe(false);
    expect(scanned.has((await partitionOf(0)).replace('qmaint.', ''))).toBe(true);
    // Without the mark (the statement of a history status) nothing is pruned.
    const unbounded = listJobsQuery({ status: 'queued', limit: 50, lowWater: null }, false);
    const plan2 = (await t.db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${unbounded.text}`, unbounded.values)).rows[0]!['QUERY PLAN'];
    expect(new Set([...JSON.stringify(plan2).matchAll(/"Relation Name":\s*"(jobs_p[0-9_]+)"/g)].map((m) => m[1])).size).toBe(all);
  });

  it('a job made live below the mark (jobs retry lowers it) is listed', async () => {
    const { rows: f } = await t.db.query<{ id: string }>(`SELECT id FROM qmaint.jobs WHERE queue = 'a' AND status = 'failed' ORDER BY id LIMIT 1`);
    const r = await runCli(['jobs', 'retry', f[0]!.id, '--json'], { env });
    expect(r.code).toBe(0);
    const listed = await runCli(['jobs', 'list', '--status', 'queued', '--queue', 'a', '--json'], { env });
    expect(listed.json<{ jobs: { id: string }[] }>().jobs.map((j) => j.id)).toContain(f[0]!.id);
  });

  it('history statuses and combined filters still list the right jobs', async () => {
    const failed = await listJobs(t.db, { status: 'failed', queue: 'a' });
    expect(failed.length).toBe(5);
    expect(failed.every((j) => j.status === 'failed' && j.queue === 'a')).toBe(true);
    const all = await listJobs(t.db, { limit: 100_000 });
    expect(all.length).toBe((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM qmaint.jobs')).rows[0]!.n);
    expect(await listJobs(t.db, { queue: 'nope' })).toEqual([]);
  });
});

describe('partitions list', () => {
  it('live counts per partition are right; sizes below the mark come from the catalog and are marked', async () => {
    await t.db.query('VACUUM ANALYZE qmaint.jobs');
    const r = await runCli(['partitions', 'list', '--json', '--now', now.toISOString()], { env });
    expect(r.code).toBe(0);
    const doc = r.json<{ tables: TableSummary[] }>();
    expect(valid('partitionsList', doc)).toBeNull();
    const jobs = doc.tables.find((x) => x.table === 'qmaint.jobs')!;
    const { rows: live } = await t.db.query<{ p: string; n: number }>(
      `SELECT tableoid::regclass::text AS p, count(*)::int AS n FROM qmaint.jobs WHERE status IN ('queued', 'running') GROUP BY 1`,
    );
    for (const p of jobs.partitions) expect(p.liveJobs, p.name).toBe(live.find((l) => l.p === p.name)?.n ?? 0);
    const mark = new Date(jobs.lowWater!).getTime();
    for (const p of jobs.partitions) expect(p.bytesEstimated, p.name).toBe(!p.isDefault && new Date(p.to!).getTime() <= mark);
    // The retried job holds the mark at five days back; the partition before it is drained history.
    const oldName = await partitionOf(6);
    const old = jobs.partitions.find((p) => p.name === oldName)!;
    expect(old.bytesEstimated).toBe(true);
    expect(old.bytes).toBeGreaterThan(0);
  });
});

describe('queues list', () => {
  it('counts live jobs and the completion rate from the low-water mark on, never reading the history below it', async () => {
    const mark = new Date((await t.db.query<{ m: Date }>(`SELECT low_water AS m FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`)).rows[0]!.m);
    const recent = new Date(now.getTime() - 60_000);
    // Three completions in the window from today's partition, one from a partition below the mark (created six days back).
    await t.db.query(
      `INSERT INTO qmaint.jobs (queue, payload, status, created_at, run_at, updated_at)
       SELECT 'z', '{}', 'completed', c, c, $3 FROM unnest(ARRAY[$1, $1, $1, $2]::timestamptz[]) c`,
      [now, new Date(now.getTime() - 6 * DAY), recent],
    );
    expect(new Date(now.getTime() - 6 * DAY).getTime()).toBeLessThan(mark.getTime());
    await t.db.query(`INSERT INTO qmaint.queues (queue) VALUES ('z')`);
    const r = await runCli(['queues', 'list', '--json', '--now', now.toISOString()], { env });
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ queues: { queue: string; queued: number; running: number; completedPerMinute: number }[] }>();
    const counts = await truth();
    for (const q of ['a', 'b']) {
      const got = doc.queues.find((x) => x.queue === q)!;
      expect([got.queued, got.running], q).toEqual([counts.get(q)!.queued, counts.get(q)!.running]);
    }
    // 3 completions over the 5-minute window: 0.6 a minute; the one below the mark is not read.
    expect(doc.queues.find((x) => x.queue === 'z')!.completedPerMinute).toBe(0.6);
  });
});

describe('the drain end check', () => {
  it('looks for a ready job only from the low-water mark on: the partitions below it are pruned when it is planned', async () => {
    const mark = (await t.db.query<{ lw: Date }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`)).rows[0]!.lw;
    expect((await t.db.query<{ ready: boolean }>(READY_SQL, ['a', mark])).rows[0]!.ready).toBe(true);
    expect((await t.db.query<{ ready: boolean }>(READY_SQL, ['nobody', mark])).rows[0]!.ready).toBe(false);
    const planned = async (from: Date | string) => {
      const plan = (await t.db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${READY_SQL}`, ['a', from])).rows[0]!['QUERY PLAN'];
      return [...new Set([...JSON.stringify(plan).matchAll(/"Relation Name":\s*"(jobs_p[0-9_]+)"/g)].map((m) => `qmaint.${m[1]}`))].sort();
    };
    const { rows: above } = await t.db.query<{ p: string }>(
      `SELECT partition::text AS p FROM qmaint.partitions_of('qmaint.jobs') WHERE upper_bound > $1 OR is_default ORDER BY 1`,
      [mark],
    );
    const all = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.partitions_of('qmaint.jobs')`)).rows[0]!.n;
    expect(above.length).toBeLessThan(all);
    expect(await planned(mark)).toEqual(above.map((r) => r.p).sort());
    expect(await planned('-infinity')).toHaveLength(all);
  });

  it('a draining consumer passes the mark, as the rescue left it, in both modes', async () => {
    const mark = (await t.db.query<{ lw: Date }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`)).rows[0]!.lw;
    for (const mode of ['lease', 'transaction'] as const) {
      const spy = vi.spyOn(t.db, 'query');
      try {
        const c = new Consumer(t.db, {
          queue: 'nobody',
          handler: () => undefined,
          mode,
          concurrency: 2,
          drain: true,
          listen: false,
          pollMinMs: 5,
          pollMaxMs: 10,
        });
        await c.start();
        await c.done;
        const marks = spy.mock.calls.filter(([text]) => text === READY_SQL).map(([, values]) => (values as unknown[])[1]);
        expect(marks.length, mode).toBeGreaterThan(0);
        expect(marks.map((m) => (m instanceof Date ? m.getTime() : m))).toEqual(marks.map(() => mark.getTime()));
      } finally {
        spy.mockRestore();
      }
    }
  });
});

describe('jobs cancel by queue', () => {
  it('looks for live jobs from the low-water mark on only, in the action and in its dry-run count', async () => {
    const c = await t.client();
    try {
      const { rows: marked } = await c.query<{ lw: Date }>(`SELECT low_water AS lw FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`);
      const { rows: below } = await c.query<{ p: string }>(
        `SELECT partition::text AS p FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default AND upper_bound <= $1`,
        [marked[0]!.lw],
      );
      expect(below.length).toBeGreaterThan(0);
      const scans = async () => {
        await c.query('SELECT pg_stat_force_next_flush()');
        await c.query('SELECT pg_stat_clear_snapshot()');
        const { rows } = await c.query<{ p: string; n: string }>(
          `SELECT relid::regclass::text AS p, (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::text AS n
             FROM pg_stat_user_tables WHERE relid IN (SELECT partition FROM qmaint.partitions_of('qmaint.jobs'))`,
        );
        return new Map(rows.map((r) => [r.p, Number(r.n)]));
      };
      const readSince = (before: Map<string, number>, after: Map<string, number>) => [...after].filter(([p, n]) => n > (before.get(p) ?? 0)).map(([p]) => p);

      let before = await scans();
      const plan = await planJobAction(c, 'cancel', { queue: 'b' }, now);
      expect(plan).toMatchObject({ matching: 3, queued: 0, running: 3 });
      let read = readSince(before, await scans());
      expect(read).toContain(await partitionOf(0));
      expect(read.filter((p) => below.some((b) => b.p === p))).toEqual([]);

      // The cancel itself, rolled back (the scans it made still count).
      before = await scans();
      await c.query('BEGIN');
      const { rows: cancelled } = await c.query<{ was_running: boolean }>(`SELECT was_running FROM qmaint.cancel_jobs(NULL, 'b', now())`);
      expect(cancelled.map((r) => r.was_running)).toEqual([true, true, true]);
      await c.query('ROLLBACK');
      read = readSince(before, await scans());
      expect(read).toContain(await partitionOf(0));
      expect(read.filter((p) => below.some((b) => b.p === p))).toEqual([]);
      expect((await c.query(`SELECT 1 FROM qmaint.jobs WHERE queue = 'b' AND status = 'running'`)).rowCount).toBe(3);
    } finally {
      await c.end();
    }
  });
});
