import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { MAINTENANCE_LOCK_KEY } from '../../src/db.js';
import { freshDatabase, pgbouncerUrl, runCli, type TestDatabase } from '../helpers.js';
import { flushStats, naptimeSeconds, partitionFor, profileWith, reloptions } from './support.js';

// A day far from the real clock: every test time-travels with --now.
const D = '2030-01-10T00:00:00Z';
const at = (offsetSeconds: number) => new Date(Date.parse(D) + offsetSeconds * 1000).toISOString();
const HOUR = 3600;
const DAY = 24 * HOUR;

let t: TestDatabase;
let writer: pg.Client;
let hot: string;

const cli = (args: string[], url = t.url) => runCli([...args, '--database-url', url]);

async function tuneJson(now: string, extra: string[] = []) {
  const r = await cli(['vacuum', 'tune', '--now', now, '--sample', '0s', '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return r.json<{
    measurements: { parentTable: string; measured: boolean; deadPerSec: number; vacuumThreshold: number; analyzeThreshold: number }[];
    steps: { action: string; target: string; statement: string }[];
    partitions: { partition: string; state: string; profile: string; frozen: boolean }[];
  }>();
}

async function catalogSnapshot() {
  const { rows } = await t.db.query(
    `SELECT (SELECT jsonb_object_agg(c.oid::regclass::text, coalesce(c.reloptions, '{}')) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'qmaint.jobs'::regclass) AS opts,
            (SELECT count(*) FROM qmaint.vacuum_samples) AS samples,
            (SELECT jsonb_agg(to_jsonb(v)) FROM qmaint.vacuum_tuning v) AS tuning,
            (SELECT jsonb_agg(to_jsonb(v)) FROM qmaint.vacuum_cold v) AS cold,
            (SELECT sum(vacuum_count) FROM pg_stat_user_tables WHERE schemaname = 'qmaint') AS vacuums`,
  );
  return rows[0];
}

beforeAll(async () => {
  t = await freshDatabase();
  writer = await t.client();
  hot = await partitionFor(t.db, D);
  await writer.query(`INSERT INTO qmaint.jobs (queue, created_at) SELECT 'vac', $1::timestamptz FROM generate_series(1, 1000)`, [at(HOUR)]);
});

describe('vacuum tune', () => {
  it('derives the hot thresholds from measured churn and sets them in pg_class', async () => {
    await flushStats(writer, hot, 1000);
    await tuneJson(at(2 * HOUR)); // first sample
    await writer.query(`UPDATE qmaint.jobs SET status = 'running' WHERE queue = 'vac'`);
    await writer.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id IN (SELECT id FROM qmaint.jobs WHERE queue = 'vac' ORDER BY id LIMIT 200)`);
    await flushStats(writer, hot, 2200);

    const doc = await tuneJson(at(2 * HOUR + 60));
    const nap = await naptimeSeconds(t.db);
    const m = doc.measurements.find((x) => x.parentTable === 'qmaint.jobs')!;
    expect(m.measured).toBe(true);
    expect(m.deadPerSec).toBeCloseTo(20, 5); // 1200 updates in 60 s
    const expected = { vacuum: Math.max(200, Math.ceil((20 * nap) / 2)), analyze: Math.max(500, Math.ceil(20 * nap)) };
    expect(m.vacuumThreshold).toBe(expected.vacuum);
    expect(m.analyzeThreshold).toBe(expected.analyze);

    expect(await reloptions(t.db, hot)).toEqual(profileWith('hot', expected));
    const { rows } = await t.db.query(`SELECT qmaint.effective_profile('qmaint.jobs', 'hot') AS p`);
    expect(rows[0]!.p).toEqual(profileWith('hot', expected));

    // Churn within 20% of the measured: the thresholds stay, no ALTER TABLE.
    for (let i = 0; i < 2; i++) await writer.query(`UPDATE qmaint.jobs SET priority = priority WHERE queue = 'vac' AND status = 'running'`);
    await flushStats(writer, hot, 3800);
    const steady = await tuneJson(at(2 * HOUR + 120));
    const again = steady.measurements.find((x) => x.parentTable === 'qmaint.jobs')!;
    expect(again.deadPerSec).toBeCloseTo(2800 / 120, 5);
    expect([again.vacuumThreshold, again.analyzeThreshold]).toEqual([expected.vacuum, expected.analyze]);
    expect(steady.steps.filter((s) => s.action === 'profile')).toEqual([]);
  });

  it('--dry-run shows the plan and changes nothing', async () => {
    const before = await catalogSnapshot();
    // A day later the partition holds running jobs: it would go warm.
    const r = await cli(['vacuum', 'tune', '--dry-run', '--now', at(DAY + HOUR), '--sample', '0s', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ dryRun: boolean; steps: { action: string; target: string; statement: string; lockLevel: string }[] }>();
    expect(doc.dryRun).toBe(true);
    const step = doc.steps.find((s) => s.action === 'profile' && s.target === hot)!;
    expect(step.statement).toMatch(/^ALTER TABLE .* SET \(.*autovacuum_vacuum_scale_factor = 0\.02.*\), RESET \(.*autovacuum_vacuum_insert_threshold/);
    expect(step.lockLevel).toBe(`SHARE UPDATE EXCLUSIVE on ${hot}`);
    const human = await cli(['vacuum', 'tune', '--dry-run', '--now', at(DAY + HOUR), '--sample', '0s']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(step.statement);
    expect(await catalogSnapshot()).toEqual(before);
  });

  it('moves a partition through warm to cold and freezes it once', async () => {
    await tuneJson(at(DAY + HOUR));
    expect(await reloptions(t.db, hot)).toEqual(profileWith('warm', { vacuum: 0, analyze: 0 }));

    await writer.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE queue = 'vac' AND status <> 'completed'`);
    await flushStats(writer, hot, 3000);
    const doc = await tuneJson(at(DAY + 2 * HOUR));
    expect(doc.steps.filter((s) => s.target === hot).map((s) => s.action)).toEqual(['track', 'freeze', 'profile']);
    // Frozen by the client: the relaxed cold profile, no freeze override.
    expect(await reloptions(t.db, hot)).toEqual(profileWith('cold', { vacuum: 0, analyze: 0 }));
    const { rows } = await t.db.query(`SELECT frozen, freeze_needed FROM qmaint.vacuum_targets($1) WHERE partition = $2`, [at(DAY + 2 * HOUR), hot]);
    expect(rows[0]).toEqual({ frozen: true, freeze_needed: false });
    // Nothing left to do on the next run.
    const again = await tuneJson(at(DAY + 3 * HOUR));
    expect(again.steps.filter((s) => s.target === hot)).toEqual([]);
  });

  it('server-side: vacuum_tune_all sets the freeze override until autovacuum (here VACUUM) froze the partition', async () => {
    const other = await partitionFor(t.db, at(2 * DAY));
    await writer.query(`INSERT INTO qmaint.jobs (queue, created_at, status) SELECT 'vac2', $1::timestamptz, 'completed' FROM generate_series(1, 100)`, [
      at(2 * DAY + HOUR),
    ]);
    await flushStats(writer, other, 100);
    const now = at(4 * DAY);
    const first = await t.db.query<{ r: { skipped: boolean } }>(`SELECT qmaint.vacuum_tune_all($1) AS r`, [now]);
    expect(first.rows[0]!.r.skipped).toBe(false);
    expect(await reloptions(t.db, other)).toEqual({ ...profileWith('cold', { vacuum: 0, analyze: 0 }), autovacuum_freeze_max_age: 100000 });

    const run = await cli(['vacuum', 'run', other, '--freeze', '--now', now, '--json']);
    expect(run.code, run.stderr).toBe(0);
    await t.db.query(`SELECT qmaint.vacuum_tune_all($1)`, [at(4 * DAY + 60)]);
    expect(await reloptions(t.db, other)).toEqual(profileWith('cold', { vacuum: 0, analyze: 0 }));
  });

  it('skips when another maintenance run holds the lock', async () => {
    const holder = await t.client();
    await holder.query('SELECT pg_advisory_lock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    try {
      const before = await catalogSnapshot();
      const r = await cli(['vacuum', 'tune', '--now', at(5 * DAY), '--sample', '0s', '--json']);
      expect(r.code).toBe(0);
      expect(r.json()).toMatchObject({ skipped: true, holder: { pid: (holder as unknown as { processID: number }).processID } });
      const sql = await t.db.query(`SELECT qmaint.vacuum_tune_all($1) AS r`, [at(5 * DAY)]);
      expect(sql.rows[0]!.r).toMatchObject({ skipped: true });
      expect(await catalogSnapshot()).toEqual(before);
    } finally {
      await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    }
  });

  it('refuses invalid profile values with exit 2 and changes nothing', async () => {
    const before = await catalogSnapshot();
    await t.db.query(
      `UPDATE qmaint.partition_policy SET vacuum = jsonb_set(vacuum, '{hot,autovacuum_vacuum_cost_limit}', '0') WHERE parent_table = 'qmaint.jobs'`,
    );
    try {
      const r = await cli(['vacuum', 'tune', '--now', at(5 * DAY), '--sample', '0s']);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain("vacuum.hot.autovacuum_vacuum_cost_limit: 0 is outside PostgreSQL's limits 1..10000");
      expect(await catalogSnapshot()).toEqual(before);
    } finally {
      await t.db.query(
        `UPDATE qmaint.partition_policy SET vacuum = jsonb_set(vacuum, '{hot,autovacuum_vacuum_cost_limit}', '2000') WHERE parent_table = 'qmaint.jobs'`,
      );
    }
    for (const [flags, message] of [
      [['--sample', 'banana'], '--sample "banana" is not a duration'],
      [['--sample', '3'], '--sample "3" needs a unit'],
      [['--sample', '11m'], '--sample must be from 0s to 10min'],
      [['--sample-seconds', '-3'], '--sample must be from 0s to 10min, got -3'],
      [['--sample', '1s', '--sample-seconds', '1'], 'give --sample or --sample-seconds, not both'],
    ] as const) {
      const bad = await cli(['vacuum', 'tune', ...flags]);
      expect(bad.code, flags.join(' ')).toBe(2);
      expect(bad.stderr).toContain(message);
    }
    // The old flag still works, with a warning on stderr.
    const old = await cli(['vacuum', 'tune', '--dry-run', '--sample-seconds', '0', '--json']);
    expect(old.code).toBe(0);
    expect(old.stderr).toContain('warning: --sample-seconds is deprecated and goes away in the next release; use --sample 0s');
  });

  it.runIf(pgbouncerUrl)('runs server-side through PgBouncer in transaction pooling mode', async () => {
    const r = await cli(['vacuum', 'tune', '--server-side', '--now', at(5 * DAY), '--json'], t.bouncerUrl);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, serverSide: true, result: { skipped: false } });
    const status = await cli(['vacuum', 'status', '--now', at(5 * DAY), '--json'], t.bouncerUrl);
    expect(status.code, status.stderr).toBe(0);
  });
});

describe('vacuum tune: the churn sample', () => {
  it('says before waiting how long it samples; then reuses the stored sample and says which, without waiting', async () => {
    const fresh = await freshDatabase();
    const sampled = await runCli(['vacuum', 'tune', '--dry-run', '--now', at(0), '--sample', '1s', '--json', '--database-url', fresh.url]);
    expect(sampled.code, sampled.stderr).toBe(0);
    expect(sampled.stderr).toContain('no churn sample stored in the last hour: sampling pg_stat_user_tables for 1s');
    // A dry run stores nothing; a real tune stores its sample.
    expect((await fresh.db.query('SELECT 1 FROM qmaint.vacuum_samples')).rowCount).toBe(0);
    // The note's own way to skip the sample is one the parser takes.
    const skip = /--sample (\S+) skips it/.exec(sampled.stderr)?.[1];
    expect(skip).toBe('0s');
    expect((await runCli(['vacuum', 'tune', '--now', at(0), '--sample', skip!, '--database-url', fresh.url])).code).toBe(0);
    const reused = await runCli(['vacuum', 'tune', '--dry-run', '--now', at(120), '--sample', '10m', '--json', '--database-url', fresh.url]);
    expect(reused.code, reused.stderr).toBe(0);
    expect(reused.stderr).toContain(`churn measured from the stored sample of ${at(0).replace('T', ' ').replace('.000Z', 'Z')} (2min ago); no wait`);
    expect(reused.stderr).not.toContain('sampling');
    expect(reused.json<{ measurements: { measured: boolean; windowStart: string }[] }>().measurements[0]).toMatchObject({ measured: true });
  });
});
