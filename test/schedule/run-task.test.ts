import { describe, expect, it } from 'vitest';
import { MAINTENANCE_LOCK_KEY } from '../../src/db.js';
import { LEADER_LOCK_KEY } from '../../src/schedule/leader.js';
import { collectSamples, renderPrometheus } from '../../src/metrics/database.js';
import { recentRuns, runTask } from '../../src/schedule/runs.js';
import { TASKS } from '../../src/schedule/tasks.js';
import { freshDatabase } from '../helpers.js';

interface RunRow {
  task: string;
  runner: string;
  status: string;
  message: string | null;
  finished_at: Date | null;
}

async function runsOf(db: { query: (t: string) => Promise<{ rows: RunRow[] }> }): Promise<RunRow[]> {
  return (await db.query('SELECT task, runner, status, message, finished_at FROM qmaint.maintenance_runs ORDER BY id')).rows;
}

describe('qmaint.run_task', () => {
  it('runs every task through its SQL function and records one finished row per run', async () => {
    const t = await freshDatabase();
    for (const task of TASKS) {
      const run = await runTask(t.db, task, 'cli');
      expect(run, task).toMatchObject({ task, runner: 'cli' });
      expect(['ok', 'skipped'], `${task}: ${run.message}`).toContain(run.status);
      expect(run.finishedAt).not.toBeNull();
      // The node it ran on (migration 0016): this server's address and port (or name), and its WAL timeline.
      const { rows: me } = await t.db.query<{ port: string; tl: number }>(
        `SELECT current_setting('port') AS port, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tl`,
      );
      expect(run.node, task).toMatch(new RegExp(`^\\S*${me[0]!.port} timeline ${me[0]!.tl}$`));
    }
    const listed = await recentRuns(t.db);
    expect(listed.every((r) => r.node !== null)).toBe(true);
    const rows = await runsOf(t.db);
    expect(rows.map((r) => r.task)).toEqual([...TASKS]);
    expect(rows.every((r) => r.finished_at !== null && r.runner === 'cli')).toBe(true);
    // health keeps every check's verdict in details and sums them up in the message
    const health = await t.db.query<{ n: number; message: string }>(
      `SELECT jsonb_array_length(details -> 'checks') AS n, message FROM qmaint.maintenance_runs WHERE task = 'health'`,
    );
    expect(health.rows[0]!.n).toBeGreaterThan(0);
    expect(health.rows[0]!.message).toMatch(/\b(ok|warn|critical): /);
  });

  it('refuses an unknown task or runner with SQLSTATE 22023 and records nothing', async () => {
    const t = await freshDatabase();
    const client = await t.client();
    await expect(client.query(`SELECT qmaint.run_task('compact')`)).rejects.toMatchObject({ code: '22023', message: "unknown maintenance task 'compact'" });
    await expect(client.query(`SELECT qmaint.run_task('rotate', 'someone')`)).rejects.toMatchObject({ code: '22023' });
    expect(await runsOf(t.db)).toEqual([]);
  });

  it('records a task that raises as failed, rolls back its partial work, and keeps the row', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE TABLE public.side_effects (x int)`);
    await t.db.query(`CREATE OR REPLACE FUNCTION qmaint.rescue_expired(p_now timestamptz DEFAULT now()) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO public.side_effects VALUES (1); RAISE EXCEPTION 'disk on fire' USING ERRCODE = '53100'; END $$`);
    const run = await runTask(t.db, 'rescue', 'pg_cron');
    expect(run).toMatchObject({ status: 'failed', message: 'disk on fire (SQLSTATE 53100)' });
    expect((await t.db.query(`SELECT count(*)::int AS n FROM public.side_effects`)).rows[0]!.n).toBe(0);
    expect(await runsOf(t.db)).toMatchObject([{ task: 'rescue', runner: 'pg_cron', status: 'failed', message: 'disk on fire (SQLSTATE 53100)' }]);
  });

  it('records a missing task function as a clear failure instead of crashing', async () => {
    const t = await freshDatabase();
    await t.db.query(`DROP FUNCTION qmaint.rescue_expired(timestamptz)`);
    const run = await runTask(t.db, 'rescue', 'daemon');
    expect(run.status).toBe('failed');
    expect(run.message).toMatch(/qmaint\.rescue_expired\(timestamp with time zone\) does not exist; run qmaint migrate/);
  });

  it('maps a result that gave up on a lock to lock_timeout, naming the target', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE OR REPLACE FUNCTION qmaint.vacuum_tune_all(p_now timestamptz DEFAULT now()) RETURNS jsonb LANGUAGE sql AS $$
      SELECT '{"skipped": false, "applied": 2, "gave_up": [{"target": "qmaint.jobs_p20300101", "blockers": []}]}'::jsonb $$`);
    const run = await runTask(t.db, 'vacuum', 'cli');
    expect(run.status).toBe('lock_timeout');
    expect(run.message).toMatch(/gave up waiting for a lock on qmaint\.jobs_p20300101; applied=2/);
  });

  it('takes the status a task reports in its result ({"status": ...})', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE OR REPLACE FUNCTION qmaint.rotate_all(p_now timestamptz DEFAULT now()) RETURNS jsonb LANGUAGE sql AS $$
      SELECT '{"status": "lock_timeout", "skipped": false, "message": "gave up on detach qmaint.jobs_p1: blocked by pid 42"}'::jsonb $$`);
    expect(await runTask(t.db, 'rotate', 'pg_cron')).toMatchObject({ status: 'lock_timeout', message: 'gave up on detach qmaint.jobs_p1: blocked by pid 42' });
  });

  it('never overlaps itself: a second call while the first is open records skipped at once', async () => {
    const t = await freshDatabase();
    const first = await t.client();
    await first.query('BEGIN');
    await first.query(`SELECT qmaint.run_task('health', 'pg_cron')`);
    const second = await runTask(t.db, 'health', 'daemon');
    expect(second).toMatchObject({ status: 'skipped', message: 'the previous health run is still going' });
    // another task is not held up by it
    expect((await runTask(t.db, 'rescue', 'daemon')).status).toBe('ok');
    await first.query('COMMIT');
    expect((await runTask(t.db, 'health', 'daemon')).status).toBe('ok');
  });

  it('skips vacuum while another session (e.g. the CLI) holds the maintenance lock', async () => {
    const t = await freshDatabase();
    const cli = await t.client();
    await cli.query('SELECT pg_advisory_lock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    const run = await runTask(t.db, 'vacuum', 'pg_cron');
    expect(run.status).toBe('skipped');
    expect(run.message).toMatch(/maintenance lock/);
    await cli.query('SELECT pg_advisory_unlock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    expect((await runTask(t.db, 'vacuum', 'pg_cron')).status).toBe('ok');
  });

  it('uses the same leader lock key in SQL and TypeScript, distinct from every other qmaint key', async () => {
    const t = await freshDatabase();
    const { rows } = await t.db.query<{ leader: string; maintenance: string; rescue: string }>(
      `SELECT qmaint.daemon_leader_lock_key()::text AS leader, qmaint.maintenance_lock_key()::text AS maintenance, qmaint.rescue_lock_key()::text AS rescue`,
    );
    expect(rows[0]!.leader).toBe(LEADER_LOCK_KEY.toString());
    expect(new Set(Object.values(rows[0]!)).size).toBe(3);
  });

  it('recentRuns returns the latest runs per task and runner, newest first', async () => {
    const t = await freshDatabase();
    for (let i = 0; i < 3; i++) await runTask(t.db, 'rescue', 'daemon');
    await runTask(t.db, 'rescue', 'pg_cron');
    const runs = await recentRuns(t.db, { limit: 2 });
    expect(runs.map((r) => r.runner)).toEqual(['pg_cron', 'daemon', 'daemon']);
    expect(runs[1]!.id).toBeGreaterThan(runs[2]!.id);
    expect(await recentRuns(t.db, { limit: 5, runner: 'pg_cron' })).toHaveLength(1);
  });
});

describe('qmaint.metrics_samples', () => {
  it('reports queue depth, oldest queued age, runway, dead tuples, xmin horizon and the last run per task', async () => {
    const t = await freshDatabase();
    const now = new Date();
    await t.db.query(
      `INSERT INTO qmaint.jobs (queue, status, run_at, created_at) VALUES
         ('mail', 'queued', $1::timestamptz - interval '90 seconds', $1),
         ('mail', 'queued', $1::timestamptz - interval '10 seconds', $1),
         ('sms', 'running', $1, $1),
         ('sms', 'completed', $1, $1)`,
      [now],
    );
    await runTask(t.db, 'rescue', 'daemon');
    const samples = await collectSamples(t.db, now);
    const value = (metric: string, labels: Record<string, string> = {}) =>
      samples.find((s) => s.metric === metric && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(value('qmaint_jobs', { status: 'queued' })).toBe(2);
    expect(value('qmaint_jobs', { status: 'running' })).toBe(1);
    expect(value('qmaint_queue_jobs', { queue: 'sms', status: 'running' })).toBe(1);
    expect(value('qmaint_oldest_queued_seconds', { queue: 'mail' })).toBeCloseTo(90, 0);
    const { rows } = await t.db.query<{ ahead: number; end: Date }>(
      `SELECT count(*) FILTER (WHERE lower_bound > $1)::int AS ahead, max(upper_bound) AS end FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default`,
      [now],
    );
    expect(value('qmaint_partitions_ahead', { parent: 'qmaint.jobs' })).toBe(rows[0]!.ahead);
    expect(value('qmaint_runway_seconds', { parent: 'qmaint.jobs' })).toBeCloseTo((rows[0]!.end.getTime() - now.getTime()) / 1000, 0);
    expect(samples.some((s) => s.metric === 'qmaint_partition_dead_tuples' && s.labels.state === 'hot')).toBe(true);
    expect(value('qmaint_xmin_horizon_age_xids')).toBeGreaterThanOrEqual(0);
    expect(value('qmaint_maintenance_last_run_status', { task: 'rescue', status: 'ok' })).toBe(1);
    expect(value('qmaint_maintenance_last_run_status', { task: 'rescue', status: 'failed' })).toBe(0);
    expect(value('qmaint_maintenance_last_success_timestamp_seconds', { task: 'rescue' })).toBeGreaterThan(now.getTime() / 1000 - 60);
    const text = renderPrometheus(samples);
    expect(text).toContain('# TYPE qmaint_jobs gauge');
    expect(text).toMatch(/^qmaint_queue_jobs\{queue="mail",status="queued"\} 2$/m);
  });

  it("counts live jobs from the low-water mark on through each status's partial index, reading no partition whole", async () => {
    const t = await freshDatabase();
    const c = await t.client();
    const day = 86_400_000;
    // Four days back: finished history below the mark. Yesterday: 5,000 finished jobs and a few live ones, above it.
    const old = new Date(Date.now() - 4 * day);
    const recent = new Date(Date.now() - day);
    for (const at of [old, recent]) await c.query('SELECT qmaint.ensure_jobs_partition($1)', [at]);
    await c.query(`INSERT INTO qmaint.jobs (queue, status, created_at, run_at) SELECT 'm', 'completed', $1, $1 FROM generate_series(1, 200)`, [old]);
    await c.query(
      `INSERT INTO qmaint.jobs (queue, status, created_at, run_at, locked_by, locked_until, attempt)
       SELECT 'm', CASE WHEN g <= 3 THEN 'queued' WHEN g <= 5 THEN 'running' ELSE 'completed' END::qmaint.job_status, $1, $1,
              CASE WHEN g IN (4, 5) THEN 'w' END, CASE WHEN g IN (4, 5) THEN now() + interval '1 hour' END, CASE WHEN g IN (4, 5) THEN 1 ELSE 0 END
         FROM generate_series(1, 5000) g`,
      [recent],
    );
    await c.query('ANALYZE qmaint.jobs');
    await c.query(`UPDATE qmaint.partition_policy SET low_water = $1 WHERE parent_table = 'qmaint.jobs'`, [new Date(recent.getTime() - 3_600_000)]);
    const { rows: parts } = await c.query<{ below: string; above: string }>(
      `SELECT (SELECT tableoid::regclass::text FROM qmaint.jobs WHERE created_at = $1 LIMIT 1) AS below,
              (SELECT tableoid::regclass::text FROM qmaint.jobs WHERE created_at = $2 LIMIT 1) AS above`,
      [old, recent],
    );
    const scans = async () => {
      await c.query('SELECT pg_stat_force_next_flush()');
      await c.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await c.query<{ part: string; seq: string; idx: string }>(
        `SELECT relid::regclass::text AS part, coalesce(seq_scan, 0)::text AS seq, coalesce(idx_scan, 0)::text AS idx
           FROM pg_stat_user_tables WHERE relid = ANY ($1::regclass[])`,
        [[parts[0]!.below, parts[0]!.above]],
      );
      return new Map(rows.map((r) => [r.part, { seq: Number(r.seq), idx: Number(r.idx) }]));
    };
    const before = await scans();
    const { rows } = await c.query<{ metric: string; labels: Record<string, string>; value: number }>(`SELECT * FROM qmaint.metrics_samples()`);
    const after = await scans();
    const value = (metric: string, status: string) =>
      rows.find((r) => r.metric === metric && r.labels.status === status && r.labels.queue !== undefined)?.value;
    expect(value('qmaint_queue_jobs', 'queued')).toBe(3);
    expect(value('qmaint_queue_jobs', 'running')).toBe(2);
    // Below the mark: not read at all. Above it: through the partial indexes, never whole.
    expect(after.get(parts[0]!.below)).toEqual(before.get(parts[0]!.below));
    expect(after.get(parts[0]!.above)!.seq).toBe(before.get(parts[0]!.above)!.seq);
    expect(after.get(parts[0]!.above)!.idx).toBeGreaterThan(before.get(parts[0]!.above)!.idx);
  });

  it('reports a runway that stops at the first gap in the partitions', async () => {
    const t = await freshDatabase();
    const now = new Date();
    const parts = await t.db.query<{ partition: string; lower_bound: Date; upper_bound: Date }>(
      `SELECT partition::text, lower_bound, upper_bound FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default AND upper_bound > $1 ORDER BY lower_bound`,
      [now],
    );
    expect(parts.rows.length).toBeGreaterThanOrEqual(3);
    // drop the second partition from now: the runway ends where the first one does
    await t.db.query(`DROP TABLE ${parts.rows[1]!.partition}`);
    const samples = await collectSamples(t.db, now);
    const runway = samples.find((s) => s.metric === 'qmaint_runway_seconds')!.value;
    expect(runway).toBeCloseTo((parts.rows[0]!.upper_bound.getTime() - now.getTime()) / 1000, 0);
  });
});
