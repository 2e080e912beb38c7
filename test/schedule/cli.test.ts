import { describe, expect, it } from 'vitest';
import { loadSettings } from '../../src/config.js';
import { cronProblem, schedulesFrom } from '../../src/schedule/tasks.js';
import { connect } from '../../src/db.js';
import { collectSamples } from '../../src/metrics/database.js';
import { runTask } from '../../src/schedule/runs.js';
import { cleanEnv, freshDatabase, pgbouncerUrl, pgcronUrl, runCli } from '../helpers.js';

describe('cron expressions', () => {
  it('accepts 5 fields for both, seconds only for the daemon, "N seconds" only for pg_cron', () => {
    expect(cronProblem('*/15 * * * *', 'pg_cron')).toBeNull();
    expect(cronProblem('*/15 * * * *', 'node-cron')).toBeNull();
    expect(cronProblem('*/2 * * * * *', 'node-cron')).toBeNull();
    expect(cronProblem('*/2 * * * * *', 'pg_cron')).toMatch(/5 fields/);
    expect(cronProblem('30 seconds', 'pg_cron')).toBeNull();
    expect(cronProblem('30 seconds', 'node-cron')).toMatch(/expected 5 or 6 fields/);
    expect(cronProblem('61 * * * *', 'pg_cron')).toMatch(/61 is an invalid expression for minute/);
  });

  it('takes schedules from settings, "off" switches a task off, and a bad one names where it came from', () => {
    const settings = loadSettings({ rotateCron: '*/5 * * * *', healthCron: 'off' }, { QMAINT_VACUUM_CRON: '1 2 * * *' }, '/');
    expect(schedulesFrom(settings, 'pg_cron')).toEqual({
      rotate: '*/5 * * * *',
      vacuum: '1 2 * * *',
      rescue: '* * * * *',
      health: null,
      recurring: '* * * * *',
    });
    expect(() => schedulesFrom(loadSettings({}, { QMAINT_RESCUE_CRON: 'every minute' }, '/'), 'node-cron')).toThrow(
      /^QMAINT_RESCUE_CRON "every minute" is not a valid node-cron expression/,
    );
  });
});

describe('qmaint schedule (CLI)', () => {
  it('an invalid cron expression exits 2 naming which one, before touching the database', async () => {
    const t = await freshDatabase();
    const run = await runCli(['schedule', 'run', '--database-url', t.url, '--vacuum-cron', '99 * * * *', '--exit-after', '1s']);
    expect(run.code).toBe(2);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/--vacuum-cron "99 \* \* \* \*" is not a valid node-cron expression \(99 is an invalid expression for minute\)/);
    const install = await runCli(['schedule', 'install', '--pg-cron', '--database-url', t.url, '--json'], {
      env: cleanEnv({ QMAINT_HEALTH_CRON: '*/5 * * * * *' }),
    });
    expect(install.code).toBe(2);
    expect(install.json<{ error: { message: string } }>().error.message).toMatch(
      /^QMAINT_HEALTH_CRON "\*\/5 \* \* \* \* \*" is not a valid pg_cron expression/,
    );
    const { rows } = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM qmaint.maintenance_runs');
    expect(rows[0]!.n).toBe(0);
  });

  it('install and uninstall act on pg_cron without --pg-cron (the only backend; the flag still works); bad flags exit 2', async () => {
    const t = await freshDatabase();
    for (const verb of ['install', 'uninstall']) {
      // A prefix of its own: on a pg_cron server, jobs of other test databases share the cron.job table.
      const own = ['--job-prefix', 'qm-shapes', '--dry-run', '--json', '--database-url', t.url];
      const plain = await runCli(['schedule', verb, ...own]);
      const flagged = await runCli(['schedule', verb, '--pg-cron', ...own]);
      expect([plain.code, flagged.code], verb + plain.stderr).toEqual([0, 0]);
      expect(plain.stdout, verb).toBe(flagged.stdout);
    }
    const r = await runCli(['schedule', 'install', '--no-pg-cron', '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/only pg_cron jobs can be installed .*qmaint schedule daemon/);
    const prefix = await runCli(['schedule', 'install', '--pg-cron', '--job-prefix', 'bad prefix;', '--database-url', t.url]);
    expect(prefix.code).toBe(2);
    expect(prefix.stderr).toMatch(/--job-prefix "bad prefix;"/);
    const off = await runCli([
      'schedule',
      'run',
      '--database-url',
      t.url,
      '--rotate-cron',
      'off',
      '--vacuum-cron',
      'off',
      '--rescue-cron',
      'OFF',
      '--health-cron',
      'off',
      '--recurring-cron',
      'off',
    ]);
    expect(off.code).toBe(2);
    expect(off.stderr).toMatch(/every task is off/);
    const now = await runCli(['schedule', 'run', '--now', '2030-01-01T00:00:00Z', '--database-url', t.url]);
    expect(now.code).toBe(2);
    expect(now.stderr).toMatch(/drop --now/);
  });

  it('list shows recent runs of every runner and no daemon leader', async () => {
    const t = await freshDatabase();
    await t.db.query(`SELECT qmaint.run_task('rescue', 'daemon'), qmaint.run_task('health', 'pg_cron')`);
    const r = await runCli(['schedule', 'list', '--json', '--database-url', t.url]);
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ runs: { task: string; runner: string; status: string }[]; daemon: { leader: unknown }; pgCron: { available: boolean } }>();
    expect(doc.runs.map((x) => `${x.task}/${x.runner}`).sort()).toEqual(['health/pg_cron', 'rescue/daemon']);
    expect(doc.daemon.leader).toBeNull();
    expect(doc.pgCron.available).toBe(pgcronUrl !== undefined);
    const human = await runCli(['schedule', 'list', '--database-url', t.url]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/Recent maintenance runs/);
    expect(human.stdout).toMatch(/rescue\s*│\s*daemon/);
  });

  // The embedded server has no pg_cron: install explains how to set it up.
  it.skipIf(pgcronUrl !== undefined)('without pg_cron, install exits 2 with the steps; --dry-run still prints the SQL', async () => {
    const t = await freshDatabase();
    const r = await runCli(['schedule', 'install', '--pg-cron', '--json', '--database-url', t.url]);
    expect(r.code).toBe(2);
    const error = r.json<{ error: { message: string; details: { steps: string[] } } }>().error;
    expect(error.message).toMatch(/pg_cron is (not installed on this PostgreSQL \d+ server|installed on this server but not loaded)/);
    expect(error.details.steps.join(' ')).toMatch(/shared_preload_libraries.*cron\.database_name = 'qmt_/);
    expect(error.details.steps.join(' ')).toMatch(/CREATE EXTENSION pg_cron/);
    const dry = await runCli(['schedule', 'install', '--pg-cron', '--dry-run', '--database-url', t.url, '--rotate-cron', '*/7 * * * *']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`SELECT cron.schedule_in_database('qmaint-rotate', '*/7 * * * *', 'SELECT qmaint.run_task(''rotate'')', '${t.name}');`);
    expect(dry.stdout).toMatch(/pg_cron cannot be used here yet/);
  });

  // Tasks, metrics and listing need no session state, so they work through a
  // transaction pooler (only the daemon's leader lock needs a real session).
  it.skipIf(pgbouncerUrl === undefined)('run_task, metrics and schedule list work through PgBouncer (transaction pooling)', async () => {
    const t = await freshDatabase();
    const bouncer = await connect({ databaseUrl: t.bouncerUrl, applicationName: 'qmaint-test' });
    try {
      expect((await runTask(bouncer, 'rescue', 'cli')).status).toBe('ok');
      expect((await runTask(bouncer, 'health', 'cli')).status).toBe('ok');
      const samples = await collectSamples(bouncer);
      expect(samples.find((s) => s.metric === 'qmaint_maintenance_last_run_status' && s.labels.task === 'rescue' && s.labels.status === 'ok')?.value).toBe(1);
    } finally {
      await bouncer.close();
    }
    const r = await runCli(['schedule', 'list', '--json', '--database-url', t.bouncerUrl!]);
    expect(r.code, r.stderr).toBe(0);
    expect(
      r
        .json<{ runs: { task: string }[] }>()
        .runs.map((x) => x.task)
        .sort(),
    ).toEqual(['health', 'rescue']);
  });
});
