import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanEnv, runCli } from '../helpers.js';

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

  it('runs the demo with no configuration at all', async () => {
    const r = await runCli(['demo'], { env, timeoutMs: 300_000 });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/demo finished/);
  }, 300_000);
});
