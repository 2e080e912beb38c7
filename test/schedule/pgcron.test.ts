import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshDatabase, pgcronUrl, runCli, type TestDatabase } from '../helpers.js';

// Needs PostgreSQL with pg_cron (CI's PostgreSQL 15 pass, or scripts/pg15.sh).
// pg_cron lives in its own database there, so every job runs through
// cron.schedule_in_database in the test's queue database.
describe.skipIf(pgcronUrl === undefined)('qmaint schedule with pg_cron', () => {
  let cron: pg.Client;
  let t: TestDatabase;

  interface JobRow {
    jobid: string;
    jobname: string;
    schedule: string;
    command: string;
    database: string;
  }
  const lastRun = async () => (await t.db.query<{ id: string }>('SELECT coalesce(max(id), 0)::text AS id FROM qmaint.maintenance_runs')).rows[0]!.id;
  const jobsIn = async (database: string) =>
    (await cron.query<JobRow>('SELECT jobid, jobname, schedule, command, database FROM cron.job WHERE database = $1 ORDER BY jobname', [database])).rows;

  beforeAll(async () => {
    cron = new pg.Client({ connectionString: pgcronUrl });
    await cron.connect();
    t = await freshDatabase();
  });

  afterAll(async () => {
    // Never leave jobs behind that would fire into a dropped database.
    if (cron && t) {
      await cron.query('SELECT cron.unschedule(jobid) FROM cron.job WHERE database = $1 OR jobname LIKE $2', [t.name, `conflict-%`]).catch(() => undefined);
    }
    await cron?.end();
  });

  it('installs the five jobs, updates them in place, and uninstalls them', async () => {
    const dry = await runCli(['schedule', 'install', '--pg-cron', '--dry-run', '--database-url', t.url]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`SELECT cron.schedule_in_database('qmaint-rotate', '*/15 * * * *', 'SELECT qmaint.run_task(''rotate'')', '${t.name}');`);
    expect(dry.stdout).toMatch(/-- lock: ROW EXCLUSIVE on cron\.job/);
    expect(await jobsIn(t.name)).toEqual([]);

    const first = await runCli(['schedule', 'install', '--pg-cron', '--json', '--database-url', t.url]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.json<{ jobs: { action: string }[] }>().jobs.map((j) => j.action)).toEqual(['create', 'create', 'create', 'create', 'create']);
    const installed = await jobsIn(t.name);
    expect(installed.map((j) => [j.jobname, j.schedule, j.command])).toEqual([
      ['qmaint-health', '*/5 * * * *', `SELECT qmaint.run_task('health')`],
      ['qmaint-recurring', '* * * * *', `SELECT qmaint.run_task('recurring')`],
      ['qmaint-rescue', '* * * * *', `SELECT qmaint.run_task('rescue')`],
      ['qmaint-rotate', '*/15 * * * *', `SELECT qmaint.run_task('rotate')`],
      ['qmaint-vacuum', '20 * * * *', `SELECT qmaint.run_task('vacuum')`],
    ]);

    const second = await runCli([
      'schedule',
      'install',
      '--pg-cron',
      '--json',
      '--database-url',
      t.url,
      '--rotate-cron',
      '*/2 * * * *',
      '--health-cron',
      'off',
      '--recurring-cron',
      'off',
    ]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.json<{ jobs: { task: string; action: string }[] }>().jobs.map((j) => `${j.task}:${j.action}`)).toEqual([
      'rotate:update',
      'vacuum:unchanged',
      'rescue:unchanged',
      'health:remove',
      'recurring:remove',
    ]);
    const updated = await jobsIn(t.name);
    expect(updated.map((j) => j.jobname)).toEqual(['qmaint-rescue', 'qmaint-rotate', 'qmaint-vacuum']);
    const rotate = updated.find((j) => j.jobname === 'qmaint-rotate')!;
    expect(rotate.schedule).toBe('*/2 * * * *');
    expect(rotate.jobid).toBe(installed.find((j) => j.jobname === 'qmaint-rotate')!.jobid);

    const list = await runCli(['schedule', 'list', '--json', '--database-url', t.url]);
    expect(list.code, list.stderr).toBe(0);
    const listed = list.json<{ pgCron: { available: boolean; jobs: { name: string; schedule: string }[] } }>().pgCron;
    expect(listed.available).toBe(true);
    expect(listed.jobs.map((j) => `${j.name} ${j.schedule}`)).toEqual(['qmaint-rescue * * * * *', 'qmaint-rotate */2 * * * *', 'qmaint-vacuum 20 * * * *']);

    const gone = await runCli(['schedule', 'uninstall', '--pg-cron', '--json', '--database-url', t.url]);
    expect(gone.code).toBe(0);
    expect(gone.json<{ jobs: { action: string }[] }>().jobs.map((j) => j.action)).toEqual(['remove', 'remove', 'remove', 'absent', 'absent']);
    expect(await jobsIn(t.name)).toEqual([]);
  });

  it('exits 2 with the fix when --cron-database-url is not the cron.database_name database', async () => {
    const r = await runCli(['schedule', 'install', '--pg-cron', '--database-url', t.url, '--cron-database-url', t.url]);
    expect(r.code).toBe(2);
    const cronDb = new URL(pgcronUrl!).pathname.slice(1);
    expect(r.stderr).toContain(`cron.database_name is ${cronDb}, but --cron-database-url points at database ${t.name}`);
    expect(r.stderr).toContain(`point --cron-database-url at database ${cronDb}`);
    expect(await jobsIn(t.name)).toEqual([]);
  });

  it('refuses to take over a same-named job that runs in another database', async () => {
    await cron.query(`SELECT cron.schedule_in_database('conflict-rotate', '0 0 1 1 *', 'SELECT 1', 'postgres')`);
    const r = await runCli(['schedule', 'install', '--pg-cron', '--job-prefix', 'conflict', '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/pg_cron job conflict-rotate already runs in database postgres/);
    expect(await jobsIn(t.name)).toEqual([]);
    expect((await jobsIn('postgres')).map((j) => j.jobname)).toContain('conflict-rotate');
  });

  it('a real pg_cron tick runs the recurring task: one job per tick of a recurring job', { timeout: 120_000 }, async () => {
    const before = await lastRun();
    const add = await runCli(['cron', 'add', 'tick', '--schedule', '* * * * *', '--queue', 'pgcron-tick', '--database-url', t.url]);
    expect(add.code, add.stderr).toBe(0);
    const install = await runCli([
      'schedule',
      'install',
      '--pg-cron',
      '--database-url',
      t.url,
      ...['rotate', 'vacuum', 'rescue', 'health'].flatMap((task) => [`--${task}-cron`, 'off']),
    ]);
    expect(install.code, install.stderr).toBe(0);
    expect((await jobsIn(t.name)).map((j) => j.jobname)).toEqual(['qmaint-recurring']);
    const run = await eventually(
      async () => {
        const { rows } = await t.db.query<{ status: string; message: string | null }>(
          `SELECT status, message FROM qmaint.maintenance_runs WHERE task = 'recurring' AND runner = 'pg_cron' AND status <> 'running' AND id > $1 ORDER BY id LIMIT 1`,
          [before],
        );
        return rows[0];
      },
      80_000,
      1000,
    );
    expect(run.status, run.message ?? '').toBe('ok');
    const { rows } = await t.db.query<{ jobs: number; ticks: number }>(
      `SELECT (SELECT count(*)::int FROM qmaint.jobs WHERE queue = 'pgcron-tick') AS jobs,
              (SELECT count(*)::int FROM qmaint.cron_ticks WHERE name = 'tick' AND state = 'enqueued') AS ticks`,
    );
    expect(rows[0]!.ticks).toBeGreaterThanOrEqual(1);
    expect(rows[0]!.jobs).toBe(rows[0]!.ticks);
    const gone = await runCli(['schedule', 'uninstall', '--pg-cron', '--database-url', t.url]);
    expect(gone.code).toBe(0);
  });

  it('a real pg_cron tick runs rotate in the queue database and records it', { timeout: 120_000 }, async () => {
    // Take the runway away, so rotate has something to do.
    const now = new Date();
    const future = await t.db.query<{ partition: string }>(
      `SELECT partition::text FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default AND lower_bound > $1`,
      [now],
    );
    for (const p of future.rows) await t.db.query(`DROP TABLE ${p.partition}`);
    const ahead = async () =>
      (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default AND lower_bound > now()`))
        .rows[0]!.n;
    expect(await ahead()).toBe(0);
    const before = await lastRun();

    const install = await runCli([
      'schedule',
      'install',
      '--pg-cron',
      '--database-url',
      t.url,
      '--rotate-cron',
      '* * * * *',
      '--vacuum-cron',
      'off',
      '--rescue-cron',
      'off',
      '--health-cron',
      'off',
      '--recurring-cron',
      'off',
    ]);
    expect(install.code, install.stderr).toBe(0);
    const [job] = await jobsIn(t.name);
    expect(job?.jobname).toBe('qmaint-rotate');

    // pg_cron ticks on the minute: wait for the first one after this install.
    // The first test's rotate job may have ticked on a */2 or */15 minute and
    // left a run of its own, from before the runway was taken away.
    const run = await eventually(
      async () => {
        const { rows } = await t.db.query<{ status: string; message: string | null }>(
          `SELECT status, message FROM qmaint.maintenance_runs WHERE task = 'rotate' AND runner = 'pg_cron' AND status <> 'running' AND id > $1 ORDER BY id LIMIT 1`,
          [before],
        );
        return rows[0];
      },
      80_000,
      1000,
    );
    expect(run.status, run.message ?? '').toBe('ok');
    expect(await ahead()).toBeGreaterThan(0);
    const details = await eventually(
      async () => {
        const { rows } = await cron.query<{ status: string; database: string }>(
          `SELECT status, database FROM cron.job_run_details WHERE jobid = $1 AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1`,
          [job!.jobid],
        );
        return rows[0];
      },
      10_000,
      200,
    );
    expect(details).toEqual({ status: 'succeeded', database: t.name });

    const list = await runCli(['schedule', 'list', '--json', '--database-url', t.url]);
    expect(list.code, list.stderr).toBe(0);
    const listed = list.json<{ pgCron: { jobs: { name: string; runs: { status: string }[] }[] } }>().pgCron;
    expect(listed.jobs[0]!.runs[0]!.status).toBe('succeeded');
    await runCli(['schedule', 'uninstall', '--pg-cron', '--database-url', t.url]);
    expect(await jobsIn(t.name)).toEqual([]);
  });
});
