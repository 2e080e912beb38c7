import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/embedded.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

describe('CLI conventions', () => {
  it('--help lists every command group', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const group of [
      'migrate',
      'enqueue',
      'work',
      'status',
      'jobs',
      'partitions',
      'vacuum',
      'explain',
      'health',
      'schedule',
      'roles',
      'demo',
      'embedded',
    ]) {
      expect(r.stdout).toMatch(new RegExp(`qmaint ${group}\\b`));
    }
  });

  it('an unknown command exits 2 with a suggestion, in one line', async () => {
    const r = await runCli(['migrat']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command "migrat"\. Did you mean migrate\?/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });

  it('an unknown flag exits 2', async () => {
    const r = await runCli(['migrate', '--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Unknown argument: frobnicate/);
  });

  it('a malformed URL exits 2 and never echoes the password', async () => {
    const r = await runCli(['migrate', '--database-url', 'mysql://me:s3cret@h/db']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/must start with postgres:\/\//);
    expect(r.stderr + r.stdout).not.toContain('s3cret');
  });

  it('an unreachable server exits 3 naming host and port', async () => {
    const port = await freePort();
    const r = await runCli(['migrate', '--database-url', `postgres://me:s3cret@127.0.0.1:${port}/db`]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
    expect(r.stderr).not.toContain('s3cret');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exit 3 for every failure to reach a server: unknown host, and a server that never answers (bounded by connectTimeoutMs)', async () => {
    const host = await runCli(['status', '--database-url', 'postgres://me@no-such-host.invalid:5432/db']);
    expect(host.code, host.stderr).toBe(3);
    expect(host.stderr).toContain('no-such-host.invalid');
    // Accepts TCP, never says a word.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const url = `postgres://me@127.0.0.1:${port}/db`;
      const viaEnv = await runCli(['status', '--database-url', url], { env: cleanEnv({ QMAINT_CONNECT_TIMEOUT_MS: '300' }) });
      expect(viaEnv.code, viaEnv.stderr).toBe(3);
      expect(viaEnv.stderr).toContain(`127.0.0.1:${port}`);
      expect(viaEnv.stderr.trim().split('\n')).toHaveLength(1);
      const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-connect-'));
      writeFileSync(path.join(dir, 'qmaint.config.json'), JSON.stringify({ connectTimeoutMs: 300 }));
      const viaFile = await runCli(['migrate', '--database-url', url, '--json'], { cwd: dir });
      expect(viaFile.code, viaFile.stderr).toBe(3);
      expect(viaFile.json()).toMatchObject({ ok: false, error: { code: 'connection', exitCode: 3 } });
      // The long-running commands and the producer as well, against the silent server and a closed port.
      const handler = path.join(dir, 'handler.mjs');
      writeFileSync(handler, 'export default async () => {};\n');
      const closed = `postgres://me@127.0.0.1:${await freePort()}/db`;
      for (const target of [url, closed]) {
        for (const args of [
          ['work', '--queue', 'q', '--handler', handler],
          ['schedule', 'daemon'],
          ['enqueue', '--queue', 'q', '--payload', '{}'],
        ]) {
          const r = await runCli([...args, '--database-url', target], { env: cleanEnv({ QMAINT_CONNECT_TIMEOUT_MS: '300' }), timeoutMs: 20_000 });
          expect(r.code, `${args.join(' ')} ${target}: ${r.stderr}`).toBe(3);
          expect(r.stderr.trim().split('\n')).toHaveLength(1);
        }
      }
      expect(sockets.length).toBeGreaterThanOrEqual(5);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('--verbose adds the stack', async () => {
    const port = await freePort();
    const r = await runCli(['migrate', '--verbose', '--database-url', `postgres://127.0.0.1:${port}/db`]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/\n\s+at /);
  });

  it('a missing database exits 3; a role without permission exits 3', async () => {
    const t = await freshDatabase();
    const missing = new URL(t.url);
    missing.pathname = '/no_such_database_here';
    const r = await runCli(['migrate', '--database-url', missing.toString()]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/no_such_database_here/);
    await t.db.query(`DROP ROLE IF EXISTS qmaint_nobody`);
    await t.db.query(`CREATE ROLE qmaint_nobody LOGIN PASSWORD 'pw'`);
    try {
      const nobody = new URL(t.url);
      nobody.username = 'qmaint_nobody';
      nobody.password = 'pw';
      const before = await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.schema_migrations');
      await t.db.query(`UPDATE qmaint.schema_migrations SET applied_at = applied_at`);
      const denied = await runCli(['migrate', '--database-url', nobody.toString()]);
      expect(denied.code).toBe(3);
      expect(denied.stderr).toMatch(/permission denied/);
      const after = await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.schema_migrations');
      expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    } finally {
      await t.db.query(`DROP OWNED BY qmaint_nobody`);
      await t.db.query(`DROP ROLE qmaint_nobody`);
    }
  });

  it('--json prints exactly one JSON document, also for errors', async () => {
    const t = await freshDatabase();
    const ok = await runCli(['migrate', '--status', '--json', '--database-url', t.url]);
    expect(ok.code).toBe(0);
    expect(ok.json<{ ok: boolean }>().ok).toBe(true);
    const bad = await runCli(['migrate', '--json', '--now', 'yesterday']);
    expect(bad.code).toBe(2);
    expect(bad.json<{ ok: boolean; error: { exitCode: number; message: string } }>()).toMatchObject({ ok: false, error: { exitCode: 2 } });
  });

  it('the database URL comes from DATABASE_URL when no flag is given', async () => {
    const t = await freshDatabase();
    const r = await runCli(['migrate', '--status', '--json'], { env: cleanEnv({ DATABASE_URL: t.url }) });
    expect(r.code).toBe(0);
    expect(r.json<{ database: string }>().database).toContain(t.name);
  });
});
