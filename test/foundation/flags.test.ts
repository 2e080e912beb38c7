import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

// Every flag is checked before anything touches the database: a refused command exits 2 with one line and writes nothing.
const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });

async function snapshot() {
  const { rows } = await t.db.query(
    `SELECT (SELECT count(*) FROM qmaint.maintenance_runs)::int AS runs,
            (SELECT count(*) FROM qmaint.partitions_of('qmaint.jobs'))::int AS partitions,
            (SELECT count(*) FROM qmaint.vacuum_samples)::int AS samples,
            (SELECT count(*) FROM qmaint.jobs)::int AS jobs,
            (SELECT count(*) FROM qmaint.partition_policy)::int AS policies,
            (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)::int AS public_relations`,
  );
  return rows[0];
}

function refused(r: { code: number | null; stdout: string; stderr: string }, what: string, pattern: RegExp) {
  expect(r.code, what).toBe(2);
  expect(r.stderr, what).toMatch(pattern);
  expect(r.stderr.trim().split('\n'), what).toHaveLength(1);
  expect(r.stdout, what).toBe('');
}

const LOCK_COMMANDS = [
  ['partitions', 'rotate'],
  ['partitions', 'create', '--until', '2040-01-01'],
  ['partitions', 'detach', 'qmaint.jobs_p20200101'],
  ['partitions', 'drop', 'qmaint.jobs_p20200101'],
  ['partitions', 'compact'],
  ['vacuum', 'tune', '--sample', '0s'],
  ['vacuum', 'run'],
  ['roles', 'install'],
  ['adopt', '--table', 'public.orders', '--column', 'created_at', '--interval', '1 day'],
  ['adopt', '--table', 'public.orders', '--revert'],
];

describe('--lock-timeout and --statement-timeout', () => {
  it('--lock-timeout banana exits 2 on every command, with and without --dry-run, and writes nothing', async () => {
    const before = await snapshot();
    for (const command of LOCK_COMMANDS) {
      for (const dry of [[], ['--dry-run']]) {
        const args = [...command, ...dry, '--lock-timeout', 'banana'];
        refused(
          await runCli(args, { env }),
          args.join(' '),
          /--lock-timeout must be a duration such as 500ms, 2s or 5m \(more than 0 and at most 10min\), got "banana"/,
        );
      }
    }
    // qmaint config shows the settings a command would use: it refuses the same values.
    refused(await runCli(['config', '--lock-timeout', 'banana'], { env }), 'config', /^error: --lock-timeout must be a duration/);
    expect(await snapshot()).toEqual(before);
  });

  it('refuses 0, as a policy does (PostgreSQL would wait forever), and out-of-range values; also from QMAINT_LOCK_TIMEOUT', async () => {
    const before = await snapshot();
    for (const value of ['0', '0ms', '11min', '1.5ms', '2 fortnights']) {
      refused(await runCli(['partitions', 'rotate', '--lock-timeout', value], { env }), value, /--lock-timeout must be .*more than 0 and at most 10min/);
    }
    for (const command of LOCK_COMMANDS) {
      const args = [...command, '--lock-timeout', '0'];
      refused(await runCli(args, { env }), args.join(' '), /^error: --lock-timeout must be more than 0 and at most 10min, got "0"$/m);
    }
    refused(
      await runCli(['partitions', 'rotate'], { env: { ...env, QMAINT_LOCK_TIMEOUT: 'banana' } }),
      'env',
      /^error: QMAINT_LOCK_TIMEOUT: lockTimeout must be a duration/,
    );
    expect(await snapshot()).toEqual(before);
  });

  it('three refused rotates leave no failed run behind (health stays out of it); a good value runs', async () => {
    for (let i = 0; i < 3; i++) expect((await runCli(['partitions', 'rotate', '--lock-timeout', 'bananna'], { env })).code).toBe(2);
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.maintenance_runs WHERE status <> 'ok'`);
    expect(rows[0]!.n).toBe(0);
    // Three failed rotates in a row would make the maintenance check critical.
    const health = await t.db.query<{ status: string }>(`SELECT status FROM qmaint.health_checks() WHERE check_name = 'maintenance'`);
    expect(health.rows).toEqual([{ status: 'warn' }]); // no run recorded yet: warn, not critical
    for (const value of ['1500', '1.5s', '1m']) {
      const r = await runCli(['partitions', 'rotate', '--lock-timeout', value, '--json'], { env });
      expect(r.code, value).toBe(0);
    }
    const runs = await t.db.query<{ status: string }>(`SELECT status FROM qmaint.maintenance_runs ORDER BY id`);
    expect(runs.rows.map((r) => r.status)).toEqual(['ok', 'ok', 'ok']);
  });

  it('--statement-timeout banana (or 0) exits 2 for health and explain, with and without --dry-run', async () => {
    const before = await snapshot();
    for (const args of [
      ['health', '--statement-timeout', 'banana'],
      ['explain', 'dequeue', '--statement-timeout', 'banana'],
      ['explain', 'dequeue', '--dry-run', '--statement-timeout', 'banana'],
      ['health', '--statement-timeout', '0'],
    ]) {
      refused(await runCli(args, { env }), args.join(' '), /--statement-timeout must be .*more than 0 and at most 1d/);
    }
    expect(await snapshot()).toEqual(before);
    expect((await runCli(['explain', 'dequeue', '--dry-run', '--statement-timeout', '5s'], { env })).code).toBe(0);
  });
});

describe('other flags', () => {
  it('enqueue options and partition names are checked before the database, --dry-run included', async () => {
    const before = await snapshot();
    for (const [args, pattern] of [
      [['enqueue', '--queue', 'q', '--payload', '{}', '--priority', 'banana', '--dry-run'], /--priority must be a number, got "banana"; e.g. --priority 10/],
      [['enqueue', '--queue', 'q', '--payload', '{}', '--priority', '1.5'], /priority must be a whole number/],
      [['enqueue', '--queue', 'q', '--file', '-', '--max-retries', '-1', '--dry-run'], /--max-retries must be a whole number from 0/],
      [['partitions', 'detach', 'no.such.thing.x'], /partition "no\.such\.thing\.x" must be "table" or "schema\.table"/],
      [['partitions', 'rotate', '--table', 'a b', '--dry-run'], /--table "a b" is not a valid name/],
      [['explain', 'dequeue', '--queue', '', '--dry-run'], /queue name "" is not valid/],
      [['health', '--queue', 'tab\there'], /queue name "tab\\there" is not valid/],
      [['jobs', 'list', '--limit', '0'], /^error: --limit must be a whole number from 1 to 100000, got 0$/m],
      [['jobs', 'retry'], /^error: name the jobs: give job ids, or --queue for all its jobs$/m],
    ] as [string[], RegExp][]) {
      refused(await runCli(args, { env, input: '{}\n' }), args.join(' '), pattern);
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe('connection settings', () => {
  // A directory with nothing in it: a command that fell back to the embedded server would create .qmaint here.
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'qmaint-flags-'));

  it("--database-url '' is refused, not read as 'no flag' (which fell back to the embedded server)", async () => {
    refused(await runCli(['migrate', '--status', '--database-url', ''], { cwd }), 'empty', /--database-url is empty; use postgres:\/\/.*, or leave it out/);
    expect(existsSync(path.join(cwd, '.qmaint'))).toBe(false);
  });

  it('PGPORT=abc is refused', async () => {
    refused(
      await runCli(['migrate', '--status'], { cwd, env: cleanEnv({ PGPORT: 'abc', PGHOST: '127.0.0.1' }) }),
      'PGPORT',
      /PGPORT "abc" is not a port number/,
    );
    refused(await runCli(['status'], { cwd, env: cleanEnv({ DATABASE_URL: t.url, PGPORT: '70000' }) }), 'PGPORT', /PGPORT "70000"/);
    expect(existsSync(path.join(cwd, '.qmaint'))).toBe(false);
  });

  it("--listen-url 'not a url' is refused before the consumer starts", async () => {
    refused(
      await runCli(['work', '--queue', 'q', '--handler', 'handler.js', '--listen-url', 'not a url'], { env }),
      'listen',
      /--listen-url is not a valid URL/,
    );
    refused(await runCli(['work', '--queue', 'q', '--handler', 'handler.js', '--listen-url', ''], { env }), 'listen', /--listen-url is empty/);
  });

  it('an unusable QMAINT_HOME exits 2 at once (mkdir -p under /proc never returned)', async () => {
    for (const home of ['/proc/qmaint-home', '/dev/null', '/dev/null/qmaint']) {
      const r = await runCli(['status'], { cwd, env: cleanEnv({ QMAINT_HOME: home }), timeoutMs: 30_000 });
      refused(r, home, new RegExp(`QMAINT_HOME ${home} cannot be used: .*; point QMAINT_HOME at a directory you can write`));
    }
  });
});
