import { describe, expect, it } from 'vitest';
import pg from 'pg';
import type { HealthCheck, HealthReport } from '../../src/health/checks.js';
import { cleanEnv, freshDatabase, pgbouncerUrl, runCli, type TestDatabase } from '../helpers.js';

type HealthJson = HealthReport & { ok: boolean; strict: boolean };

// Timing rules are judged on saved plans (plan.test.ts); here they are lifted so
// no verdict depends on how fast this machine is.
const timing = { dequeue_planning_ms_warn: 1e9, dequeue_planning_ms_critical: 1e9, dequeue_execution_ms_warn: 1e9, dequeue_execution_ms_critical: 1e9 };
const env = cleanEnv({ QMAINT_HEALTH_THRESHOLDS: JSON.stringify(timing) });

/** A setup that passes every rule: a few jobs and a recent successful rotate, as the scheduler records it. */
async function healthyDatabase(): Promise<TestDatabase> {
  const t = await freshDatabase();
  await t.db.query(`INSERT INTO qmaint.jobs (queue) SELECT 'mail' FROM generate_series(1, 20)`);
  await t.db.query(`INSERT INTO qmaint.maintenance_runs (task, runner, finished_at, status) VALUES ('rotate', 'pg_cron', clock_timestamp(), 'ok')`);
  return t;
}

/** qmaint.health_checks() straight from SQL, by check name. */
async function sqlChecks(
  t: TestDatabase,
  thresholds: Record<string, unknown> = {},
  now?: string,
): Promise<Record<string, { status: string; observed: string; message: string }>> {
  const { rows } = await t.db.query<{ check_name: string; status: string; observed: string; message: string }>(
    `SELECT * FROM qmaint.health_checks(coalesce($1::timestamptz, now()), $2::jsonb)`,
    [now ?? null, JSON.stringify(thresholds)],
  );
  return Object.fromEntries(rows.map((r) => [r.check_name, r]));
}

async function health(
  t: TestDatabase,
  args: string[] = [],
  url = t.url,
): Promise<{ code: number | null; doc: HealthJson; check: (name: string) => HealthCheck }> {
  const r = await runCli(['health', '--json', '--database-url', url, ...args], { env });
  const doc = r.json<HealthJson>();
  return { code: r.code, doc, check: (name) => doc.checks.find((c) => c.check === name)! };
}

async function hotPartition(t: TestDatabase): Promise<string> {
  const { rows } = await t.db.query<{ p: string }>(
    `SELECT partition::text AS p FROM qmaint.partitions_of('qmaint.jobs') WHERE lower_bound <= now() AND now() < upper_bound`,
  );
  return rows[0]!.p;
}

describe('qmaint health', () => {
  it('a healthy setup passes every rule, ends with the summary line and exits 0', async () => {
    const t = await healthyDatabase();
    const r = await runCli(['health', '--database-url', t.url], { env });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.at(-1)).toBe('qmaint-health status=ok critical=0 warn=0 ok=15');
    const { code, doc } = await health(t, ['--strict']);
    expect(code).toBe(0);
    expect(doc.ok).toBe(true);
    expect(doc.checks.map((c) => c.check)).toEqual([
      'runway',
      'default_partition',
      'retention',
      'invalid_indexes',
      'claim_index',
      'dead_tuples',
      'xmin_horizon',
      'idle_in_transaction',
      'oldest_queued',
      'failed_jobs',
      'maintenance',
      'cron_ticks',
      'replication_lag',
      'replication_slots',
      'dequeue',
    ]);
    for (const c of doc.checks) expect(c.status, `${c.check}: ${c.observed}`).toBe('ok');
    expect(doc.dequeue?.claimed).toBe(20);
    const { rows } = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint.jobs WHERE status = 'queued' AND locked_by IS NULL`);
    expect(rows[0]!.n).toBe('20');
  });

  it('time travel past the runway: no partition holds now, critical, exit 4', async () => {
    const t = await healthyDatabase();
    const future = new Date(Date.now() + 30 * 86_400_000).toISOString();
    const { code, doc, check } = await health(t, ['--now', future]);
    expect(code).toBe(4);
    expect(doc.status).toBe('critical');
    expect(check('runway').status).toBe('critical');
    expect(check('runway').observed).toMatch(/qmaint\.jobs: no partition holds/);
    expect(check('runway').message).toMatch(/qmaint partitions rotate/);
    expect(doc.summaryLine).toMatch(/^qmaint-health status=critical critical=\d+ warn=\d+ ok=\d+$/);
    // Two days ahead the runway still exists but is shorter than the policy asks.
    const soon = new Date(Date.now() + 2 * 86_400_000).toISOString();
    const short = await sqlChecks(t, {}, soon);
    expect(short.runway!.status).toBe('warn');
    expect(short.runway!.observed).toMatch(/qmaint\.jobs: [01] ahead/);
  });

  it('rows in a default partition are critical; an empty one the policy does not ask for warns', async () => {
    const t = await healthyDatabase();
    await t.db.query(`CREATE TABLE qmaint.jobs_default PARTITION OF qmaint.jobs DEFAULT`);
    const empty = await sqlChecks(t);
    expect(empty.default_partition!.status).toBe('warn');
    expect(empty.default_partition!.message).toMatch(/blocks DETACH CONCURRENTLY/);
    // Only a range with no partition lands there: a job from 2001.
    await t.db.query(`INSERT INTO qmaint.jobs (queue, created_at) VALUES ('mail', '2001-01-01T00:00:00Z')`);
    const { code, check } = await health(t);
    expect(code).toBe(4);
    expect(check('default_partition').status).toBe('critical');
    expect(check('default_partition').observed).toBe('qmaint.jobs_default: 1 rows');
  });

  it('an invalid index left by a failed CREATE INDEX CONCURRENTLY is reported', async () => {
    const t = await healthyDatabase();
    const hot = await hotPartition(t);
    const client = await t.client();
    await expect(client.query(`CREATE UNIQUE INDEX CONCURRENTLY jobs_queue_unique ON ${hot} (queue)`)).rejects.toThrow(/could not create unique index/);
    const { code, check } = await health(t);
    expect(check('invalid_indexes').status).toBe('warn');
    expect(check('invalid_indexes').observed).toBe('1: qmaint.jobs_queue_unique (invalid)');
    expect(check('invalid_indexes').message).toMatch(/DROP INDEX CONCURRENTLY/);
    expect(code).toBe(0);
    expect((await health(t, ['--strict'])).code).toBe(4);
  });

  it('a partition whose claim index is invalid is critical in claim_index', async () => {
    const t = await healthyDatabase();
    const hot = await hotPartition(t);
    await t.db.query(
      `UPDATE pg_index x SET indisvalid = false
         FROM pg_inherits ih
        WHERE ih.inhrelid = x.indexrelid AND ih.inhparent = 'qmaint.jobs_claim_idx'::regclass AND x.indrelid = $1::regclass`,
      [hot],
    );
    const { code, check } = await health(t);
    expect(code).toBe(4);
    expect(check('claim_index').status).toBe('critical');
    expect(check('claim_index').observed).toMatch(new RegExp(`^1 of \\d+ partitions lack a valid claim index: ${hot.replace('.', '\\.')}$`));
    expect(check('invalid_indexes').status).toBe('warn');
  });

  it('a snapshot held open is named with its pid in the xmin horizon, and idle in transaction', async () => {
    const t = await healthyDatabase();
    const holder = await t.client();
    await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await holder.query('SELECT count(*) FROM qmaint.jobs');
    const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const pid = rows[0]!.pid;
    try {
      // With the defaults a young snapshot is fine but still the oldest holder.
      const calm = await sqlChecks(t);
      expect(calm.xmin_horizon!.status).toBe('ok');
      expect(calm.xmin_horizon!.observed).toContain(`pid ${pid} (idle in transaction, qmaint-test)`);
      const { code, check } = await health(t, ['--threshold', 'xmin_horizon_critical=0 seconds', '--threshold', 'idle_in_transaction_warn=0 seconds']);
      expect(code).toBe(4);
      expect(check('xmin_horizon').status).toBe('critical');
      expect(check('xmin_horizon').message).toContain(`pid ${pid}`);
      expect(check('idle_in_transaction').status).toBe('warn');
      expect(check('idle_in_transaction').observed).toMatch(new RegExp(`over the limit: pid ${pid} \\(qmaint-test`));
    } finally {
      await holder.query('ROLLBACK');
    }
    const after = await sqlChecks(t, { xmin_horizon_critical: '0 seconds', idle_in_transaction_warn: '0 seconds' });
    expect(after.xmin_horizon!.observed).not.toContain(`pid ${pid}`);
    expect(after.idle_in_transaction!.status).toBe('ok');
  });

  it('a connection still authenticating holds no horizon, though PostgreSQL 18 lists it with an xmin and no database', async (ctx) => {
    const t = await healthyDatabase();
    const url = new URL(t.url);
    const password = decodeURIComponent(url.password);
    if (password === '') return ctx.skip(); // trust: no backend waits for a password
    // The server asks for the password and waits for it: the backend sits in authentication.
    let asked!: () => void;
    const askedFor = new Promise<void>((r) => (asked = r));
    let release!: (p: string) => void;
    const client = new pg.Client({
      host: url.hostname,
      port: Number(url.port),
      user: decodeURIComponent(url.username),
      database: url.pathname.slice(1),
      password: () => {
        asked();
        return new Promise<string>((r) => (release = r));
      },
    });
    const connecting = client.connect();
    try {
      await askedFor;
      const port = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort;
      const { rows } = await t.db.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE client_port = $1 AND datid IS NULL AND backend_xmin IS NOT NULL AND backend_type = 'client backend'`,
        [port],
      );
      if (rows.length === 0) return ctx.skip(); // before PostgreSQL 18 a backend is listed once it has its database
      const checks = await sqlChecks(t, { xmin_horizon_critical: '0 seconds' });
      expect(checks.xmin_horizon!.observed).not.toContain(`pid ${rows[0]!.pid}`);
      expect(checks.xmin_horizon!.status).toBe('ok');
    } finally {
      release(password);
      await connecting;
      await client.end();
    }
  });

  it('failed jobs piling up: rising warns, beyond the critical count exits 4', async () => {
    const t = await healthyDatabase();
    // Jobs fail as the consumer and the rescue fail them: an UPDATE of a live job.
    const fail = async (n: number, at: string) => {
      const { rows } = await t.db.query<{ id: string }>(`INSERT INTO qmaint.jobs (queue) SELECT 'mail' FROM generate_series(1, $1) RETURNING id::text`, [n]);
      await t.db.query(`UPDATE qmaint.jobs SET status = 'failed', last_error = 'boom', updated_at = ${at} WHERE id = ANY ($1::bigint[])`, [
        rows.map((r) => r.id),
      ]);
      return rows.map((r) => r.id);
    };
    await fail(5, `now() - interval '2 hours'`);
    expect((await sqlChecks(t)).failed_jobs!.status).toBe('ok');
    const recent = await fail(60, 'now()');
    const rising = await health(t);
    expect(rising.code).toBe(0);
    expect(rising.check('failed_jobs').status).toBe('warn');
    expect(rising.check('failed_jobs').observed).toBe('60 failed in the last 1 hour, 0 in the 1 hour before');
    expect((await health(t, ['--strict'])).code).toBe(4);
    const critical = await health(t, ['--threshold', 'failed_critical=50']);
    expect(critical.code).toBe(4);
    expect(critical.check('failed_jobs').status).toBe('critical');
    // The same threshold kept in the database applies to scheduled runs too.
    await t.db.query(`INSERT INTO qmaint.health_thresholds (name, value) VALUES ('failed_critical', '50')`);
    expect((await sqlChecks(t)).failed_jobs!.status).toBe('critical');

    // A job counts while it is failed: retried or deleted, it no longer does (its recorded failure stays).
    await t.db.query(`UPDATE qmaint.jobs SET status = 'queued' WHERE id = ANY ($1::bigint[])`, [recent.slice(0, 10)]);
    await t.db.query(`DELETE FROM qmaint.jobs WHERE id = ANY ($1::bigint[])`, [recent.slice(10, 15)]);
    expect((await sqlChecks(t)).failed_jobs!.observed).toBe('45 failed in the last 1 hour, 0 in the 1 hour before');
    expect((await t.db.query(`SELECT 1 FROM qmaint.failed_jobs`)).rowCount).toBe(65);
    // Failing again records the new time: two of the retried jobs fail an hour and a half from now.
    const later = new Date(Date.now() + 90 * 60_000);
    await t.db.query(`UPDATE qmaint.jobs SET status = 'failed', updated_at = $2 WHERE id = ANY ($1::bigint[])`, [
      recent.slice(0, 2),
      new Date(later.getTime() - 1000),
    ]);
    const then = await sqlChecks(t, {}, later.toISOString());
    expect(then.failed_jobs!.observed).toBe('2 failed in the last 1 hour, 45 in the 1 hour before');
    expect((await t.db.query(`SELECT 1 FROM qmaint.failed_jobs`)).rowCount).toBe(65);
  });

  it('failed_jobs reads only the partitions holding a failure of its windows, and a rotate forgets the failures of dropped partitions', async () => {
    const t = await healthyDatabase();
    // A job made three days ago (in a partition of its own, the oldest) and one made now, both failed now.
    const { rows: made } = await t.db.query<{ oldest: string }>(`SELECT qmaint.ensure_jobs_partition(now() - interval '3 days')::text AS oldest`);
    const oldest = made[0]!.oldest;
    await t.db.query(`INSERT INTO qmaint.jobs (queue, created_at, run_at) VALUES ('lost', now() - interval '3 days', now()), ('lost', now(), now())`);
    await t.db.query(`UPDATE qmaint.jobs SET status = 'failed', updated_at = now() WHERE queue = 'lost'`);
    const { rows: parts } = await t.db.query<{ partition: string; lower: Date }>(
      `SELECT partition::text, lower_bound AS lower FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default ORDER BY lower_bound`,
    );
    expect(parts[0]!.partition).toBe(oldest);
    const holding = [
      oldest,
      (await t.db.query<{ p: string }>(`SELECT tableoid::regclass::text AS p FROM qmaint.jobs WHERE queue = 'lost' AND created_at > now() - interval '1 day'`))
        .rows[0]!.p,
    ];

    // One connection reads the partitions' scan counters, runs the check, and reads them again.
    const c = await t.client();
    try {
      const scans = async () => {
        await c.query('SELECT pg_stat_force_next_flush()');
        await c.query('SELECT pg_stat_clear_snapshot()');
        const { rows } = await c.query<{ p: string; n: string }>(
          `SELECT relid::regclass::text AS p, (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::text AS n FROM pg_stat_user_tables WHERE relid IN (SELECT partition FROM qmaint.partitions_of('qmaint.jobs'))`,
        );
        return new Map(rows.map((r) => [r.p, Number(r.n)]));
      };
      // at null: the server's now(), the clock the failures were stamped with.
      const check = async (at: string | null) =>
        (
          await c.query<{ observed: string }>(
            `SELECT observed FROM qmaint.health_failed_jobs(coalesce($1::timestamptz, now()), qmaint.health_resolve_thresholds('{}'))`,
            [at],
          )
        ).rows[0]!.observed;
      const before = await scans();
      expect(await check(null)).toBe('2 failed in the last 1 hour, 0 in the 1 hour before');
      const after = await scans();
      const read = [...after].filter(([p, n]) => n > (before.get(p) ?? 0)).map(([p]) => p);
      expect(read.sort()).toEqual([...holding].sort());
      // Three hours on, no failure lies in the two windows: no partition is read at all.
      expect(await check(new Date(Date.now() + 3 * 3_600_000).toISOString())).toBe('0 failed in the last 1 hour, 0 in the 1 hour before');
      expect(await scans()).toEqual(after);
    } finally {
      await c.end();
    }

    // The oldest partition goes as retention would drop it; the next rotate forgets its failed job.
    await t.db.query(`DROP TABLE ${oldest}`);
    expect((await t.db.query(`SELECT 1 FROM qmaint.failed_jobs`)).rowCount).toBe(2);
    await t.db.query(`SELECT qmaint.advance_low_water('qmaint.jobs', now())`);
    const left = await t.db.query<{ job_id: string }>(`SELECT job_id::text FROM qmaint.failed_jobs`);
    const { rows: alive } = await t.db.query<{ id: string }>(`SELECT id::text FROM qmaint.jobs WHERE queue = 'lost'`);
    expect(alive).toHaveLength(1);
    expect(left.rows).toEqual([{ job_id: alive[0]!.id }]);
  });

  it('an old due job, dead tuples on the hot partition and failing maintenance fire their rules', async () => {
    const t = await healthyDatabase();
    await t.db.query(`INSERT INTO qmaint.jobs (queue, run_at) VALUES ('reports', now() - interval '2 hours')`);
    const hot = await hotPartition(t);
    await t.db.query(`ALTER TABLE ${hot} SET (autovacuum_enabled = false)`);
    const writer = await t.client();
    await writer.query(`INSERT INTO qmaint.jobs (queue, status) SELECT 'bulk', 'completed' FROM generate_series(1, 30000)`);
    await writer.query(`DELETE FROM qmaint.jobs WHERE queue = 'bulk'`);
    await writer.query('SELECT pg_stat_force_next_flush()');
    await writer.query('SELECT 1');
    for (let i = 0; i < 3; i++) {
      await t.db.query(
        `INSERT INTO qmaint.maintenance_runs (task, runner, finished_at, status, message) VALUES ('vacuum', 'daemon', clock_timestamp(), 'failed', 'disk full')`,
      );
    }
    const checks = await sqlChecks(t);
    expect(checks.oldest_queued!.status).toBe('critical');
    expect(checks.oldest_queued!.observed).toMatch(/^02:00:\d\d waiting in queue 'reports'$/);
    expect(checks.dead_tuples!.status).toBe('critical');
    expect(checks.dead_tuples!.observed).toMatch(new RegExp(`worst ${hot.replace('.', '\\.')}: 30000 dead`));
    expect(checks.maintenance!.status).toBe('critical');
    expect(checks.maintenance!.message).toMatch(/vacuum: disk full/);
  });

  it('no recorded maintenance warns; bad thresholds exit 2 and change nothing', async () => {
    const t = await freshDatabase();
    expect((await sqlChecks(t)).maintenance!.status).toBe('warn');
    for (const args of [
      ['--threshold', 'nope=1'],
      ['--threshold', 'oldest_queued_warn=soon'],
      ['--threshold', 'failed_critical=many'],
      ['--now', 'yesterday'],
    ]) {
      const r = await runCli(['health', '--database-url', t.url, ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    const badSetting = await runCli(['health', '--database-url', t.url], { env: cleanEnv({ QMAINT_HEALTH_THRESHOLDS: '{"failed_window": 3' }) });
    expect(badSetting.code).toBe(2);
    expect(badSetting.stderr).toMatch(/healthThresholds is not valid JSON/);
    await expect(t.db.query(`INSERT INTO qmaint.health_thresholds (name, value) VALUES ('nope', '1')`)).rejects.toThrow(/health_thresholds_name_check/);
    const { rows } = await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.health_thresholds');
    expect(rows[0]!.n).toBe('0');
  });

  it.runIf(pgbouncerUrl)('works through PgBouncer in transaction pooling mode', async () => {
    const t = await healthyDatabase();
    const { code, doc } = await health(t, [], t.bouncerUrl);
    expect(code).toBe(0);
    expect(doc.status).toBe('ok');
  });
});
