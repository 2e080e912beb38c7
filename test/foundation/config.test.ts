import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { durationMs, envName, loadSettings, redactUrl, resolveConnection, settingSpecs } from '../../src/config.js';
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
      expect((err as QmaintError).code).toBe('config');
      expect((err as QmaintError).options).toEqual(['databaseUrl']);
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

describe('durations (lockTimeout, statementTimeout)', () => {
  it('one syntax (the ms package): a unit, or milliseconds', () => {
    expect(['500ms', '2s', '1.1s', '1.5min', '5m', '1h', '1d', '1500', ' 3 s ', '2 seconds', '2S'].map(durationMs)).toEqual([
      500, 2000, 1100, 90_000, 300_000, 3_600_000, 86_400_000, 1500, 3000, 2000, 2000,
    ]);
    expect(['banana', '', '1.5', '1.5ms', '-1s', 's', '2 fortnights'].map(durationMs)).toEqual(Array(7).fill(undefined));
  });

  it('a setting is kept in units PostgreSQL reads too: 1500 is 1500ms, 1.5min is 90s, 5m is 5min', () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), 'qmaint-duration-'));
    expect(loadSettings({ lockTimeout: '1500', statementTimeout: '1.5min' }, {}, empty).values).toMatchObject({
      lockTimeout: '1500ms',
      statementTimeout: '90s',
    });
    expect(loadSettings({ lockTimeout: '5m' }, {}, empty).values.lockTimeout).toBe('5min');
    expect(() => loadSettings({ lockTimeout: '0' }, {}, empty)).toThrow(/^lockTimeout must be more than 0 and at most 10min, got "0"/);
    expect(() => loadSettings({}, { QMAINT_STATEMENT_TIMEOUT: '2d' }, empty)).toThrow(
      /QMAINT_STATEMENT_TIMEOUT: statementTimeout must be more than 0 and at most 1d/,
    );
  });
});
