import { describe, expect, it } from 'vitest';
import { redactDeep, redactSecrets, redactUrl } from '../../src/config.js';
import { freePort } from '../../src/embedded.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const SECRET = 'S3cr3t-pw';

describe('redaction: every form a connection string takes', () => {
  it.each([
    ['URL', `postgres://me:${SECRET}@db:5432/app`, 'postgres://me:***@db:5432/app'],
    ['URL with a password query parameter', `postgres://me@db/app?sslmode=require&password=${SECRET}`, 'postgres://me@db/app?sslmode=require&password=***'],
    ['URL with both', `postgresql://me:${SECRET}@db/app?password=${SECRET}`, 'postgresql://me:***@db/app?password=***'],
    ['libpq keyword string', `host=db port=5432 password=${SECRET} dbname=app`, 'host=db port=5432 password=*** dbname=app'],
    ['quoted keyword value', `host=db password='${SECRET} x' dbname=app`, 'host=db password=*** dbname=app'],
    ['spaced keyword', `host=db password = ${SECRET}`, 'host=db password = ***'],
    ['sslpassword', `host=db sslpassword=${SECRET}`, 'host=db sslpassword=***'],
    ['malformed URL', `postgres://me:${SECRET}@[not-a-host/app`, 'postgres://me:***@[not-a-host/app'],
    ['malformed URL with @ in the password', `postgres://me:${SECRET}@x@db:99999/app`, 'postgres://me:***@db:99999/app'],
  ])('%s', (_what, input, expected) => {
    expect(redactUrl(input)).toBe(expected);
    expect(redactSecrets(`could not use (${input}) here`)).not.toContain(SECRET);
  });

  it('leaves text without secrets alone, and redacts inside structured details', () => {
    const text = 'password authentication failed for user "me"; passfile=/home/me/.pgpass';
    expect(redactSecrets(text)).toBe(text);
    expect(redactUrl('postgres://me@db/app')).toBe('postgres://me@db/app');
    expect(JSON.stringify(redactDeep({ a: [{ url: `postgres://u:${SECRET}@h/d` }], n: 1 }))).toBe('{"a":[{"url":"postgres://u:***@h/d"}],"n":1}');
  });
});

describe('no command prints a password', () => {
  const leaks = (r: { stdout: string; stderr: string }) => expect(r.stdout + r.stderr).not.toContain(SECRET);

  it('a keyword string or a malformed URL is refused with exit 2, never echoed (flag, DATABASE_URL, --json, --verbose)', async () => {
    for (const url of [
      `host=127.0.0.1,127.0.0.2 port=1,2,3 password=${SECRET}`,
      `host=127.0.0.1 password='${SECRET}`,
      `postgres://me:${SECRET}@[oops/db`,
      `postgres://me:${SECRET}@h:99999/db`,
      `postgres://me:${SECRET}@a:1,,b:2/db`,
    ]) {
      for (const extra of [[], ['--json'], ['--verbose']]) {
        const r = await runCli(['migrate', '--status', '--database-url', url, ...extra]);
        expect(r.code, url).toBe(2);
        leaks(r);
        const env = await runCli(['status', ...extra], { env: cleanEnv({ DATABASE_URL: url }) });
        expect(env.code, url).toBe(2);
        leaks(env);
      }
    }
    const escape = await runCli(['migrate', '--status', '--database-url', `postgres://me:${SECRET}%zz@127.0.0.1:1/db`]);
    expect(escape.code).toBe(2);
    expect(escape.stderr).toMatch(/malformed %-escape/);
    leaks(escape);
    const kw = await runCli(['migrate', '--database-url', `host=h password='${SECRET}`]);
    expect(kw.stderr).toMatch(/--database-url: the keyword=value string has an unterminated quoted value at character \d+/);
    leaks(kw);
  });

  it('the other connection flags are checked the same way', async () => {
    const listen = await runCli(['work', '--queue', 'q', '--handler', 'x.js', '--listen-url', `host=h port=x password=${SECRET}`]);
    expect(listen.code).toBe(2);
    expect(listen.stderr).toMatch(/--listen-url: port "x" is not a port number/);
    leaks(listen);
    const cron = await runCli(['schedule', 'list', '--cron-database-url', `host=h port=x password=${SECRET}`, '--json']);
    expect(cron.code).toBe(2);
    leaks(cron);
    // qmaint config shows the connection it would use: redacted, in every form.
    for (const [url, extra] of [
      [`postgres://me:${SECRET}@h/db`, ['--verbose']],
      [`postgres://me@h/db?password=${SECRET}`, ['--json']],
      [`host=h password=${SECRET} dbname=db`, []],
    ] as [string, string[]][]) {
      const shown = await runCli(['config', '--database-url', url, ...extra]);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toMatch(/\*\*\*/);
      leaks(shown);
    }
    const fromEnv = await runCli(['config', '--json'], { env: cleanEnv({ DATABASE_URL: `postgres://me@h/db?password=${SECRET}` }) });
    expect(fromEnv.code).toBe(0);
    leaks(fromEnv);
  });

  it('a password in the query string is used, and never shown (migrate line, --json, errors)', async () => {
    const t = await freshDatabase();
    const url = new URL(t.url);
    // A server with trust authentication (the PostgreSQL 15 rig) has no password in its URL: any one will do.
    const password = decodeURIComponent(url.password) || 'trust-accepts-any-4711';
    url.password = '';
    url.searchParams.set('password', password);
    const human = await runCli(['migrate', '--database-url', url.toString()]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/schema up to date .* in postgres:\/\/.*password=\*\*\*/);
    expect(human.stdout + human.stderr).not.toContain(password);
    const json = await runCli(['migrate', '--status', '--json', '--verbose', '--database-url', url.toString()]);
    expect(json.code).toBe(0);
    expect(json.json<{ database: string }>().database).toContain('password=***');
    expect(json.stdout + json.stderr).not.toContain(password);
    const port = await freePort();
    const down = await runCli(['migrate', '--verbose', '--json', '--database-url', `postgres://me@127.0.0.1:${port}/db?password=${SECRET}`]);
    expect(down.code).toBe(3);
    leaks(down);
  });

  it('the daemon (human, --json, --json-lines, --verbose), schedule list and maintenance_runs never show it', { timeout: 90_000 }, async () => {
    const t = await freshDatabase();
    const url = new URL(t.url);
    const password = decodeURIComponent(url.password) || 'trust-accepts-any-4711';
    url.password = '';
    url.searchParams.set('password', password);
    const db = url.toString();
    for (const extra of [['--verbose'], ['--json', '--verbose'], ['--json-lines', '--verbose']]) {
      const r = await runCli([
        'schedule',
        'daemon',
        '--rotate-cron',
        '* * * * * *',
        '--health-cron',
        '* * * * * *',
        '--exit-after',
        '1500ms',
        '--database-url',
        db,
        ...extra,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout + r.stderr).not.toContain(password);
    }
    for (const extra of [[], ['--json', '--verbose']]) {
      const list = await runCli(['schedule', 'list', '--database-url', db, ...extra]);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout + list.stderr).not.toContain(password);
    }
    const { rows } = await t.db.query<{ runs: number; leaks: number }>(
      `SELECT count(*)::int AS runs, count(*) FILTER (WHERE concat_ws(' ', message, details::text) LIKE '%' || $1 || '%')::int AS leaks FROM qmaint.maintenance_runs`,
      [password],
    );
    expect(rows[0]!.runs).toBeGreaterThan(0);
    expect(rows[0]!.leaks).toBe(0);
    // A daemon that cannot reach its server says so with exit 3, and never with the password.
    const port = await freePort();
    for (const [down, extra] of [
      [`postgres://me:${SECRET}@127.0.0.1:${port}/db`, ['--verbose']],
      [`postgres://me@127.0.0.1:${port}/db?password=${SECRET}`, ['--json-lines', '--verbose']],
      [`host=127.0.0.1 port=${port} user=me password=${SECRET}`, ['--json']],
    ] as [string, string[]][]) {
      const r = await runCli(['schedule', 'daemon', '--exit-after', '2s', '--database-url', down, ...extra]);
      expect(r.code, r.stderr).toBe(3);
      leaks(r);
    }
  });
});
