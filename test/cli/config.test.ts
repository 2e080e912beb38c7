import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { configJsonSchema, loadSettings } from '../../src/config.js';
import { ROOT, cleanEnv, runCli } from '../helpers.js';

function dirWith(config: unknown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-config-'));
  writeFileSync(path.join(dir, 'qmaint.config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  return dir;
}

describe('qmaint config', () => {
  it('shows every setting with its value and origin (flag, env, file, default), the connection password masked', async () => {
    const cwd = dirWith({ batch: 50, healthThresholds: { oldest_queued_warn: '5 minutes' } });
    const env = cleanEnv({ QMAINT_LOCK_TIMEOUT: '5m', DATABASE_URL: 'postgres://ada:s3cret@db.example:5432/app' });
    const r = await runCli(['config', '--concurrency', '4', '--json'], { cwd, env });
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ configFile: string; connection: { source: string; url: string }; settings: { key: string; value: unknown; origin: string }[] }>();
    const byKey = Object.fromEntries(doc.settings.map((s) => [s.key, s]));
    expect(byKey.concurrency).toMatchObject({ value: 4, origin: 'flag' });
    expect(byKey.lockTimeout).toMatchObject({ value: '5min', origin: 'env' });
    expect(byKey.batch).toMatchObject({ value: 50, origin: 'file' });
    expect(byKey.healthThresholds).toMatchObject({ value: '{"oldest_queued_warn":"5 minutes"}', origin: 'file' });
    expect(byKey.leaseSeconds).toMatchObject({ value: 60, origin: 'default' });
    expect(doc.configFile).toBe(path.join(cwd, 'qmaint.config.json'));
    expect(doc.connection).toEqual({ source: 'DATABASE_URL', url: 'postgres://ada:***@db.example:5432/app' });
    expect(r.stdout + r.stderr).not.toContain('s3cret');
    const human = await runCli(['config'], { cwd, env });
    expect(human.stdout).toMatch(/│ batch\s+│ 50\s+│ file\s+│/);
    expect(human.stdout).toContain('postgres://ada:***@db.example:5432/app (from DATABASE_URL)');
    expect(human.stdout + human.stderr).not.toContain('s3cret');
  });

  it('validates the config file with its schema: one line naming the file, the setting and the problem, exit 2', async () => {
    for (const [config, message] of [
      [{ batch: 'many' }, /qmaint\.config\.json: batch: Invalid input: expected number, received string/],
      [{ batch: 0 }, /qmaint\.config\.json: batch: Too small: expected number to be >=1/],
      [{ bacth: 5 }, /qmaint\.config\.json: unknown setting "bacth"; known settings are lockTimeout, /],
    ] as const) {
      const r = await runCli(['config'], { cwd: dirWith(config) });
      expect(r.code, JSON.stringify(config)).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });

  it('healthThresholds as JSON text still works, with a deprecation warning', async () => {
    const cwd = dirWith({ healthThresholds: '{"oldest_queued_warn": "5 minutes"}' });
    const loaded = loadSettings({}, {}, cwd);
    expect(loaded.values.healthThresholds).toBe('{"oldest_queued_warn": "5 minutes"}');
    expect(loaded.warnings).toEqual([
      'qmaint.config.json: healthThresholds as JSON text is deprecated; write the object itself, e.g. "healthThresholds": {"oldest_queued_warn": "5 minutes"}',
    ]);
    const r = await runCli(['config', '--json'], { cwd });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('warning: qmaint.config.json: healthThresholds as JSON text is deprecated');
  });

  it('qmaint.schema.json is the committed JSON Schema of the config file, and editors can check files with it', () => {
    const committed = JSON.parse(readFileSync(path.join(ROOT, 'qmaint.schema.json'), 'utf8')) as Record<string, unknown>;
    expect(committed, 'regenerate it: npx tsx scripts/config-schema.ts').toEqual(configJsonSchema());
    const validate = new Ajv2020({ strict: false }).compile(committed);
    expect(validate({ $schema: './qmaint.schema.json', lockTimeout: '2s', batch: 10, healthThresholds: { dead_ratio_warn: 0.3 } })).toBe(true);
    expect(validate({ batch: 0 })).toBe(false);
    expect(validate({ nope: 1 })).toBe(false);
  });
});
