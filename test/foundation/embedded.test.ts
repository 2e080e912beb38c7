import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanEnv, runCli, shellWords } from '../helpers.js';

describe('the embedded default', () => {
  const home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-home-'));
  const env = cleanEnv({ QMAINT_HOME: home });
  afterAll(async () => {
    await runCli(['embedded', 'stop'], { env });
    rmSync(home, { recursive: true, force: true });
  });

  it('starts on demand, is reused by the next command, and stops', async () => {
    const status0 = await runCli(['embedded', 'status', '--json'], { env });
    expect(status0.json()).toMatchObject({ initialised: false, running: false });
    const start = await runCli(['embedded', 'start', '--json'], { env });
    expect(start.code).toBe(0);
    const first = start.json<{ started: boolean; port: number; url: string }>();
    expect(first.started).toBe(true);
    expect(first.url).toContain(':***@');
    const again = await runCli(['embedded', 'start', '--json'], { env });
    expect(again.json()).toMatchObject({ started: false, port: first.port });
    // With no database configured at all, commands use (and reuse) the embedded server.
    const migrate = await runCli(['migrate', '--json'], { env });
    expect(migrate.code).toBe(0);
    // ... and say so on stderr (the password masked).
    expect(migrate.stderr).toMatch(
      /using the embedded PostgreSQL at postgres:\/\/[^ ]*:\*\*\*@[^ ]* \(no database configured; qmaint embedded stop stops it\)/,
    );
    expect(migrate.json<{ database: string }>().database).toContain(`:${first.port}/`);
    const status = await runCli(['migrate', '--status', '--json'], { env });
    expect(status.json<{ migrations: { state: string }[] }>().migrations.every((m) => m.state === 'applied')).toBe(true);
    const stop = await runCli(['embedded', 'stop', '--json'], { env });
    expect(stop.json()).toMatchObject({ stopped: true, running: false });
    expect((await runCli(['embedded', 'status', '--json'], { env })).json()).toMatchObject({ initialised: true, running: false });
  });

  it('the run that creates the server keeps its exit code', async () => {
    const fresh = mkdtempSync(path.join(os.tmpdir(), 'qmaint-home-'));
    const freshEnv = cleanEnv({ QMAINT_HOME: fresh });
    try {
      const r = await runCli(['status'], { env: freshEnv, timeoutMs: 120_000 });
      expect(r.stderr).toMatch(/creating an embedded PostgreSQL/);
      expect(r.stderr).toMatch(/the qmaint schema is not installed in postgres; run qmaint migrate/);
      expect(r.code).toBe(2);
    } finally {
      await runCli(['embedded', 'stop'], { env: freshEnv });
      rmSync(fresh, { recursive: true, force: true });
    }
  }, 120_000);

  it('runs the demo with no configuration at all; every command it prints pastes into a shell as the argv it ran', async () => {
    const r = await runCli(['demo', '--verbose'], { env, timeoutMs: 300_000 });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/demo finished/);
    // The argv each nested command really ran (--verbose), in order; the demo adds its own database.
    const ran = [...r.stderr.matchAll(/^demo runs argv (.*)$/gm)].map((m) => JSON.parse(m[1]!) as string[]);
    const printed = r.stdout.split('\n').filter((line) => line.startsWith('$ '));
    expect(printed.length).toBeGreaterThan(20);
    expect(printed).toHaveLength(ran.length);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-paste-'));
    try {
      // Files here make an unquoted * or ? expand, as it would where a user pastes.
      for (const name of ['a.txt', 'b.txt']) writeFileSync(path.join(dir, name), '');
      printed.forEach((line, i) => {
        const words = shellWords(line.slice(2), dir);
        const prog = words[0] === 'npx' ? 2 : 1;
        expect(words.slice(0, prog), line).toEqual(prog === 2 ? ['npx', 'qmaint'] : ['qmaint']);
        const argv = ran[i]!;
        const own = argv.slice(0, argv.indexOf('--database-url'));
        expect(words.slice(prog), line).toEqual(own);
        expect(
          argv.slice(own.length + 2).filter((a) => a !== '--no-color'),
          line,
        ).toEqual([]);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // The payload and the cron expressions are the ones that used to break.
    expect(printed.join('\n')).toContain(`--payload '{"to":"ada@example.com","subject":"welcome"}'`);
    expect(printed.join('\n')).toContain(`--rescue-cron '* * * * * *'`);
    // The embedded server is left running, and the demo says so and how to stop it.
    expect(r.stdout).toMatch(/The embedded PostgreSQL is still running, on port \d+/);
    expect(r.stdout).toContain(`\n  ${home}\n`);
    expect(r.stdout).toMatch(/^ {2}(npx )?qmaint embedded stop {6}stop it/m);
    expect((await runCli(['embedded', 'status', '--json'], { env })).json()).toMatchObject({ running: true });
  }, 300_000);

  it('embedded status tells where data and log are, and a psql line that connects (password only with --show-password)', async () => {
    const start = await runCli(['embedded', 'start', '--json'], { env });
    expect(start.code, start.stderr).toBe(0);
    const status = await runCli(['embedded', 'status', '--json'], { env });
    const doc = status.json<{ dataDir: string; log: string; psql: string; port: number; running: boolean }>();
    expect(doc).toMatchObject({ running: true, dataDir: path.join(home, 'data'), log: path.join(home, 'postgres.log') });
    expect(existsSync(doc.log)).toBe(true);
    expect(doc.psql).toBe(`psql -h 127.0.0.1 -p ${doc.port} -U postgres postgres`);
    const password = (JSON.parse(readFileSync(path.join(home, 'embedded.json'), 'utf8')) as { password: string }).password;
    expect(status.stdout).not.toContain(password);
    const human = await runCli(['embedded', 'status'], { env });
    expect(human.stdout).toContain(`psql:        psql -h 127.0.0.1 -p ${doc.port} -U postgres postgres`);
    expect(human.stdout).toMatch(/^data: +.*data$/m);
    expect(human.stdout).not.toContain(password);
    const shown = await runCli(['embedded', 'status', '--show-password', '--json'], { env });
    const line = shown.json<{ psql: string }>().psql;
    expect(line).toBe(`PGPASSWORD=${password} psql -h 127.0.0.1 -p ${doc.port} -U postgres postgres`);
    // The line connects: run its psql arguments through a client with that password.
    const words = shellWords(line.replace(/^PGPASSWORD=\S+ /, ''), home);
    const client = new pg.Client({ host: words[2], port: Number(words[4]), user: words[6], database: words[7], password });
    await client.connect();
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    await client.end();
  });
});
