import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { envName, loadSettings, redactUrl, resolveConnection, settingSpecs } from '../../src/config.js';
import { QmaintError } from '../../src/errors.js';

describe('connection precedence', () => {
  const env = { DATABASE_URL: 'postgres://env@h2/db2', PGHOST: 'h3' };
  it('prefers --database-url', () => {
    expect(resolveConnection('postgres://flag@h1/db1', env)).toEqual({ source: 'flag', url: 'postgres://flag@h1/db1' });
  });
  it('then DATABASE_URL', () => {
    expect(resolveConnection(undefined, env)).toEqual({ source: 'DATABASE_URL', url: 'postgres://env@h2/db2' });
  });
  it('then libpq PG* variables', () => {
    expect(resolveConnection(undefined, { PGHOST: 'h3' })).toEqual({ source: 'libpq' });
    expect(resolveConnection(undefined, { PGDATABASE: 'x' })).toEqual({ source: 'libpq' });
  });
  it('then the embedded default', () => {
    expect(resolveConnection(undefined, { HOME: '/root' })).toEqual({ source: 'embedded' });
  });
  it('refuses a malformed URL with a configuration error that hides the password', () => {
    try {
      resolveConnection('http://u:secret@h/db', {});
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(QmaintError);
      expect((err as QmaintError).exitCode).toBe(2);
      expect((err as Error).message).not.toContain('secret');
    }
  });
  it('redacts passwords', () => {
    expect(redactUrl('postgres://me:hunter2@db:5432/app')).toBe('postgres://me:***@db:5432/app');
    expect(redactUrl('postgres://me@db/app')).toBe('postgres://me@db/app');
  });
});

describe('settings precedence: flags > QMAINT_* > qmaint.config.json > defaults', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-cfg-'));
  writeFileSync(path.join(dir, 'qmaint.config.json'), JSON.stringify({ leaseSeconds: 30, batch: 50, lockTimeout: '5s' }));

  it('layers the four sources', () => {
    const s = loadSettings({ leaseSeconds: '10' }, { QMAINT_BATCH: '25' }, dir);
    expect(s.values.leaseSeconds).toBe(10);
    expect(s.origin.leaseSeconds).toBe('flag');
    expect(s.values.batch).toBe(25);
    expect(s.origin.batch).toBe('env');
    expect(s.values.lockTimeout).toBe('5s');
    expect(s.origin.lockTimeout).toBe('file');
    expect(s.values.concurrency).toBe(10);
    expect(s.origin.concurrency).toBe('default');
  });
  it('docs/cli.md lists every setting with its environment variable and default', () => {
    const doc = readFileSync(new URL('../../docs/cli.md', import.meta.url), 'utf8');
    for (const [key, spec] of Object.entries(settingSpecs)) {
      expect(doc).toContain(`| \`${key}\` | \`${envName(key)}\` | ${typeof spec.default === 'string' ? `\`${spec.default}\`` : spec.default} |`);
    }
  });
  it('names environment variables in upper snake case', () => {
    expect(envName('leaseSeconds')).toBe('QMAINT_LEASE_SECONDS');
  });
  it('rejects out-of-range and unknown settings with exit 2', () => {
    expect(() => loadSettings({ batch: '0' }, {}, dir)).toThrow(/batch must be at least 1/);
    const bad = mkdtempSync(path.join(os.tmpdir(), 'qmaint-cfg-'));
    writeFileSync(path.join(bad, 'qmaint.config.json'), JSON.stringify({ leesSeconds: 1 }));
    expect(() => loadSettings({}, {}, bad)).toThrow(/unknown setting "leesSeconds"/);
  });
});
