import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FUNCTIONS_DIR, loadFunctionFiles, loadMigrations, MIGRATIONS_DIR } from '../../src/migrate.js';
import { COMPLETE_SQL, fenceKey, HEARTBEAT_SQL } from '../../src/queue/statements.js';
import { freshDatabase, ROOT, runCli, type TestDatabase } from '../helpers.js';
import { schemaSnapshot } from '../schema-snapshot.js';

interface Release {
  release: string;
  migrations: { version: number; name: string; checksum: string }[];
}

const release = JSON.parse(readFileSync(path.join(ROOT, 'test/foundation/fixtures/release-0.1.0.json'), 'utf8')) as Release;

/**
 * Install the schema exactly as release 0.1.0's `qmaint migrate` did: its
 * seven migration files (still shipped byte for byte, checked below) in one
 * transaction under the migrate lock, each recorded with its checksum. There
 * was no function ledger then; the functions lived inside the migrations.
 */
async function install010(t: TestDatabase): Promise<void> {
  const client = await t.client();
  await client.query('BEGIN');
  await client.query('SELECT pg_advisory_xact_lock(29037, 28009)');
  await client.query('SET LOCAL client_min_messages = warning');
  await client.query('CREATE SCHEMA IF NOT EXISTS qmaint');
  await client.query(`CREATE TABLE IF NOT EXISTS qmaint.schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  for (const m of release.migrations) {
    const file = `${String(m.version).padStart(4, '0')}_${m.name}.sql`;
    await client.query(readFileSync(path.join(MIGRATIONS_DIR, file), 'utf8'));
    await client.query('INSERT INTO qmaint.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
  }
  await client.query('COMMIT');
}

/**
 * What a team running 0.1.0 has in its database: a customised policy, jobs in
 * every state over several partitions (some made by enqueue's self-healing),
 * rotate and vacuum runs by 0.1.0's own server-side functions (pg_cron's path).
 */
async function populate010(t: TestDatabase): Promise<void> {
  await t.db.query(`UPDATE qmaint.partition_policy
                       SET retention = '3 days', premake = 2, lock_timeout = '3 seconds',
                           vacuum = jsonb_set(vacuum, '{hot,autovacuum_vacuum_cost_limit}', '1777'),
                           source = '{"table": "qmaint.jobs", "interval": "1 day", "retention": "3 days"}'
                     WHERE parent_table = 'qmaint.jobs'`);
  await t.db
    .query(`SELECT qmaint.enqueue('emails', jsonb_build_object('n', n, 'big', 12345678901234567891::numeric), NULL, n % 3, 4, now() - interval '1 day' * (n % 3))
                      FROM generate_series(1, 30) n`);
  await t.db.query(`SELECT qmaint.enqueue('reports', '{"kind": "daily"}', now() + interval '1 hour')`);
  // One running job whose lease ran out (its worker died), one completed, one failed.
  await t.db.query(`UPDATE qmaint.jobs SET status = 'running', locked_by = 'dead-worker', locked_until = now() - interval '1 minute'
                     WHERE id = (SELECT min(id) FROM qmaint.jobs WHERE queue = 'emails')`);
  // One running job whose worker is alive and holds its lease through the upgrade (0019 rebuilds the index of running jobs).
  await t.db.query(`SELECT qmaint.enqueue('live', '{"kind": "long"}')`);
  await t.db.query(`UPDATE qmaint.jobs SET status = 'running', locked_by = 'live-worker', locked_until = now() + interval '1 hour' WHERE queue = 'live'`);
  await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = (SELECT min(id) + 1 FROM qmaint.jobs WHERE queue = 'emails')`);
  await t.db.query(
    `UPDATE qmaint.jobs SET status = 'failed', retry_count = 4, last_error = 'boom' WHERE id = (SELECT min(id) + 2 FROM qmaint.jobs WHERE queue = 'emails')`,
  );
  const { rows } = await t.db.query<{ r: { status: string } }>(`SELECT qmaint.run_task('rotate', 'pg_cron') AS r`);
  expect(rows[0]!.r.status).toBe('ok');
  const vacuum = await t.db.query<{ r: { status: string } }>(`SELECT qmaint.run_task('vacuum', 'pg_cron') AS r`);
  expect(vacuum.rows[0]!.r.status).toBe('ok');
}

/** The policy columns migration 0015 adds (checked on their own in the test). */
const MAPPING = ['time_column', 'status_column', 'live_values', 'key_columns', 'touch_column'];

async function state(t: TestDatabase): Promise<Record<string, unknown>> {
  // The columns 0.1.0 had; later migrations add columns with defaults (checked in the test).
  const jobs = await t.db.query(`SELECT id, queue, payload, status, priority, run_at, retry_count, max_retries, created_at, updated_at,
                                        locked_by, locked_until, last_error FROM qmaint.jobs ORDER BY id`);
  const policy = await t.db.query(`SELECT * FROM qmaint.partition_policy ORDER BY parent_table`);
  const partitions = await t.db.query(`SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound, c.reloptions
                                         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                                        WHERE i.inhparent = 'qmaint.jobs'::regclass ORDER BY 1`);
  const runs = await t.db.query(`SELECT task, runner, status FROM qmaint.maintenance_runs ORDER BY id`);
  const tuning = await t.db.query(`SELECT * FROM qmaint.vacuum_tuning ORDER BY 1`);
  const withoutMapping = (p: Record<string, unknown>) => Object.fromEntries(Object.entries(p).filter(([k]) => !MAPPING.includes(k)));
  return { jobs: jobs.rows, policy: policy.rows.map(withoutMapping), partitions: partitions.rows, runs: runs.rows, tuning: tuning.rows };
}

describe('upgrade from release 0.1.0', () => {
  it('still ships 0.1.0 migrations byte for byte (a released migration never changes)', () => {
    const shipped = loadMigrations().filter((m) => m.version <= 7);
    expect(shipped.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum }))).toEqual(release.migrations);
  });

  it('qmaint migrate upgrades a populated 0.1.0 database in place; consumers, rotate, tune and health work after it', async () => {
    const t = await freshDatabase({ migrated: false });
    await install010(t);
    await populate010(t);
    const before = await state(t);
    expect((before.partitions as unknown[]).length).toBeGreaterThanOrEqual(5);

    const up = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(up.code, up.stderr).toBe(0);
    const result = up.json<{ applied: { version: number }[]; functions: { file: string }[]; alreadyApplied: number }>();
    expect(result.alreadyApplied).toBe(7);
    expect(result.applied.map((m) => m.version)).toEqual(
      loadMigrations()
        .filter((m) => m.version > 7)
        .map((m) => m.version),
    );
    expect(result.functions.map((f) => f.file)).toEqual(loadFunctionFiles().map((f) => f.file));

    // Jobs, policy, partitions with their reloptions, run history and tuning all survive as they were.
    expect(await state(t)).toEqual(before);
    // Migration 0020 copies the jobs already failed into qmaint.failed_jobs, as they failed.
    const failedRows = await t.db.query(`SELECT id::text, created_at, updated_at FROM qmaint.jobs WHERE status = 'failed' ORDER BY id`);
    expect(failedRows.rows).toHaveLength(1);
    const copied = await t.db.query(`SELECT job_id::text AS id, created_at, failed_at AS updated_at FROM qmaint.failed_jobs ORDER BY job_id`);
    expect(copied.rows).toEqual(failedRows.rows);
    // Migration 0015's column mapping gives every existing policy qmaint's own job columns.
    const mapping = await t.db.query(`SELECT ${MAPPING.join(', ')} FROM qmaint.partition_policy`);
    expect(mapping.rows).toEqual([
      { time_column: null, status_column: 'status', live_values: ['queued', 'running'], key_columns: ['id'], touch_column: 'updated_at' },
    ]);
    const added = await t.db.query(`SELECT DISTINCT attempt, timeout_ms FROM qmaint.jobs`);
    expect(added.rows).toEqual([{ attempt: 0, timeout_ms: null }]);
    const recorded = await t.db.query<{ version: number; checksum: string }>(
      'SELECT version, checksum FROM qmaint.schema_migrations WHERE version <= 7 ORDER BY version',
    );
    expect(recorded.rows).toEqual(release.migrations.map((m) => ({ version: m.version, checksum: m.checksum })));

    // The upgraded schema is the schema a fresh install gets.
    const fresh = await freshDatabase();
    expect(await schemaSnapshot(t.db)).toBe(await schemaSnapshot(fresh.db));

    // The rescue puts the dead worker's job back (with backoff) and leaves the live lease alone; a consumer works every ready job.
    const rescued = await t.db.query<{ r: { requeued: number; failed: number } }>('SELECT qmaint.rescue_expired() AS r');
    expect(rescued.rows[0]!.r).toEqual({ requeued: 1, failed: 0 });
    // The live worker's job is still running: its worker extends the lease (a HOT update since 0019), then completes it.
    const live = await t.db.query<{ id: string; created_at: Date }>(`SELECT id, created_at FROM qmaint.jobs WHERE status = 'running' AND queue = 'live'`);
    expect(live.rows).toHaveLength(1);
    const held = [[live.rows[0]!.id], [live.rows[0]!.created_at], [fenceKey(live.rows[0]!.id, 0)]];
    const hb = await t.client();
    try {
      await hb.query('BEGIN');
      expect((await hb.query(HEARTBEAT_SQL, [...held, 'live-worker', 60, 'live'])).rowCount).toBe(1);
      const hot = await hb.query<{ hot: string }>(`SELECT pg_stat_get_xact_tuples_hot_updated(tableoid)::text AS hot FROM qmaint.jobs WHERE id = $1`, [
        live.rows[0]!.id,
      ]);
      expect(hot.rows[0]!.hot).toBe('1');
      await hb.query('COMMIT');
    } finally {
      await hb.end();
    }
    expect((await t.db.query(COMPLETE_SQL, [...held, 'live-worker', 'live'])).rowCount).toBe(1);
    // Its backoff has passed, as far as this test is concerned.
    const back = await t.db.query(
      `UPDATE qmaint.jobs SET run_at = now() WHERE locked_by IS NULL AND status = 'queued' AND retry_count = 1 AND queue = 'emails'`,
    );
    expect(back.rowCount).toBe(1);
    const work = await runCli([
      'work',
      '--queue',
      'emails',
      '--handler',
      path.join(ROOT, 'test/foundation/fixtures/noop-handler.mjs'),
      '--drain',
      '--database-url',
      t.url,
      '--json',
    ]);
    expect(work.code, work.stderr).toBe(0);
    const left = await t.db.query<{ status: string; retries: number; n: string }>(
      `SELECT status::text, max(retry_count) AS retries, count(*) AS n FROM qmaint.jobs WHERE queue = 'emails' GROUP BY 1 ORDER BY 1`,
    );
    expect(left.rows).toEqual([
      { status: 'completed', retries: 1, n: '29' },
      { status: 'failed', retries: 4, n: '1' },
    ]);

    const rotate = await runCli(['partitions', 'rotate', '--database-url', t.url, '--json']);
    expect(rotate.code, rotate.stderr).toBe(0);
    const tune = await runCli(['vacuum', 'tune', '--database-url', t.url, '--json']);
    expect(tune.code, tune.stderr).toBe(0);
    // The policy's own hot setting is on the partitions from today on; drained past ones are cold (frozen).
    const profiles = await t.db.query<{ hot: boolean; cold: boolean; past: boolean }>(
      `SELECT 'autovacuum_vacuum_cost_limit=1777' = ANY (c.reloptions) AS hot, 'autovacuum_freeze_min_age=0' = ANY (c.reloptions) AS cold,
              b.upper_bound <= now() AS past
         FROM unnest(qmaint.bounds_of('qmaint.jobs')) b JOIN pg_class c ON c.oid = b.partition ORDER BY b.lower_bound`,
    );
    expect(profiles.rows.length).toBeGreaterThanOrEqual(5);
    expect(profiles.rows.every((r) => (r.past ? r.cold && !r.hot : r.hot && !r.cold))).toBe(true);
    const health = await runCli(['health', '--database-url', t.url, '--json']);
    expect([0, 4]).toContain(health.code);
    const checks = health.json<{ checks: { name: string; status: string }[] }>().checks;
    expect(checks.length).toBeGreaterThan(5);
    expect(checks.every((c) => ['ok', 'warn', 'critical'].includes(c.status))).toBe(true);
  });

  it('a second migrate changes nothing: no file re-applied, the catalog identical', async () => {
    const t = await freshDatabase();
    const snapshot = await schemaSnapshot(t.db);
    const ledger = await t.db.query(`SELECT file, checksum, applied_at FROM qmaint.schema_functions ORDER BY file`);
    const again = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(again.code).toBe(0);
    expect(again.json()).toMatchObject({ applied: [], functions: [] });
    expect(await schemaSnapshot(t.db)).toBe(snapshot);
    expect((await t.db.query(`SELECT file, checksum, applied_at FROM qmaint.schema_functions ORDER BY file`)).rows).toEqual(ledger.rows);
  });

  it('a changed function file is pending in --status and --dry-run, and re-applied by migrate', async () => {
    const t = await freshDatabase();
    const file = loadFunctionFiles()[0]!;
    // As if an older qmaint had applied a different 01_core.sql: the recorded checksum differs.
    await t.db.query(`UPDATE qmaint.schema_functions SET checksum = 'older' WHERE file = $1`, [file.file]);
    await t.db.query(`CREATE OR REPLACE FUNCTION qmaint.maintenance_lock_key() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT 1::bigint $$`);

    const status = await runCli(['migrate', '--status', '--database-url', t.url, '--json']);
    const states = status.json<{ functions: { file: string; state: string }[] }>().functions;
    expect(states.find((f) => f.file === file.file)!.state).toBe('changed');
    expect(states.filter((f) => f.state !== 'applied')).toHaveLength(1);
    // Commands refuse to run against functions older than the code.
    const refused = await runCli(['status', '--database-url', t.url]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/functions .* are older than this qmaint \(01_core\.sql\); run qmaint migrate/);

    const dry = await runCli(['migrate', '--dry-run', '--database-url', t.url, '--json']);
    expect(dry.json<{ pending: unknown[]; pendingFunctions: { file: string; sql: string }[] }>()).toMatchObject({
      pending: [],
      pendingFunctions: [{ file: file.file, sql: file.sql }],
    });
    expect((await t.db.query<{ k: string }>('SELECT qmaint.maintenance_lock_key()::text AS k')).rows[0]!.k).toBe('1');

    const up = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(up.json<{ functions: { file: string }[] }>().functions.map((f) => f.file)).toEqual([file.file]);
    expect((await t.db.query<{ k: string }>('SELECT qmaint.maintenance_lock_key()::text AS k')).rows[0]!.k).toBe('7170514283201');
    const ledger = await t.db.query<{ checksum: string }>('SELECT checksum FROM qmaint.schema_functions WHERE file = $1', [file.file]);
    expect(ledger.rows[0]!.checksum).toBe(
      createHash('sha256')
        .update(readFileSync(path.join(FUNCTIONS_DIR, file.file), 'utf8'))
        .digest('hex'),
    );
  });

  it('the schema matches the reviewed snapshot (update it with `npx vitest run -u` when a change is meant)', async () => {
    const t = await freshDatabase();
    await expect(await schemaSnapshot(t.db)).toMatchFileSnapshot('./__snapshots__/schema.txt');
  });
});
