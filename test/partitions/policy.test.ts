import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkPolicyShape } from '../../src/partitions/policy.js';
import { freshDatabase } from '../helpers.js';
import { cli } from './support.js';

const good = {
  table: 'qmaint.jobs',
  interval: '6 hours',
  premake: 4,
  retention: '2 days',
  retentionMode: 'archive',
  stragglers: 'wait',
  defaultPartition: false,
  lockTimeout: '500ms',
  vacuum: { hot: { autovacuum_vacuum_scale_factor: 0, autovacuum_vacuum_threshold: 500 } },
};

function write(dir: string, file: string, doc: unknown): string {
  const p = path.join(dir, file);
  writeFileSync(p, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return p;
}

async function policyRow(t: Awaited<ReturnType<typeof freshDatabase>>) {
  const { rows } = await t.db.query(
    `SELECT partition_interval::text AS interval, premake, retention::text AS retention, retention_mode, stragglers, lock_timeout::text AS lock_timeout, vacuum
       FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`,
  );
  return rows[0];
}

describe('qmaint partitions apply', () => {
  it('writes a good policy (and the shipped one), --dry-run changes nothing', async () => {
    const t = await freshDatabase();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-policy-'));
    const file = write(dir, 'jobs.json', good);
    const before = await policyRow(t);
    const dry = await cli(t, ['partitions', 'apply', file, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.json<{ statements: { statement: string; lockLevel: string }[] }>().statements[0]).toMatchObject({
      statement: expect.stringMatching(/^INSERT INTO qmaint\.partition_policy .*'6 hours'::interval/) as string,
      lockLevel: 'ROW EXCLUSIVE on qmaint.partition_policy',
    });
    expect(await policyRow(t)).toEqual(before);

    const r = await cli(t, ['partitions', 'apply', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(await policyRow(t)).toEqual({
      interval: '06:00:00',
      premake: 4,
      retention: '2 days',
      retention_mode: 'archive',
      stragglers: 'wait',
      lock_timeout: '00:00:00.5',
      vacuum: good.vacuum,
    });
    // With no file named, the shipped partitions/jobs.json is applied.
    const shipped = await cli(t, ['partitions', 'apply']);
    expect(shipped.code, shipped.stderr).toBe(0);
    expect(await policyRow(t)).toMatchObject({ interval: '1 day', premake: null, retention: '7 days', retention_mode: 'drop' });
  });

  it('a bad policy exits 2, lists every problem and writes nothing', async () => {
    const t = await freshDatabase();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-policy-'));
    const before = await policyRow(t);
    const files = [
      write(dir, 'a.json', { ...good, colour: 'red', interval: 'fortnightly', premake: -1 }),
      write(dir, 'b.json', { ...good, table: 'public.nowhere', interval: '1 day', retention: '2 hours', lockTimeout: 'soon' }),
      write(dir, 'c.json', '{ "table": '),
      write(dir, 'd.json', { ...good, interval: '2 months', vacuum: { hot: { autovacuum_vacuum_scale_factor: 500 }, tepid: {} } }),
      write(dir, 'ok.json', good),
    ];
    const r = await cli(t, ['partitions', 'apply', ...files]);
    expect(r.code).toBe(2);
    const problems = r.json<{ error: { details: { problems: string[] } } }>().error.details.problems;
    const expected = [
      /^a\.json: unknown key "colour"/,
      /^a\.json: premake must be "auto" or a whole number/,
      /^a\.json: interval "fortnightly" is not a PostgreSQL interval/,
      /^b\.json: table public\.nowhere does not exist/,
      /^b\.json: retention 2 hours is shorter than the interval 1 day/,
      /^b\.json: lockTimeout "soon" is not a PostgreSQL interval/,
      /^c\.json: not valid JSON/,
      /^d\.json: vacuum: /,
      /^d\.json: interval 2 months: interval must be at most 1 month/,
    ];
    for (const re of expected)
      expect(
        problems.some((p) => re.test(p)),
        `${re} in ${problems.join('\n')}`,
      ).toBe(true);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(await policyRow(t)).toEqual(before);
  });

  it('checks the shape without a database', () => {
    expect(checkPolicyShape(good)).toEqual([]);
    expect(checkPolicyShape({ ...good, premake: 'auto', $schema: './policy.schema.json' })).toEqual([]);
    expect(checkPolicyShape([])).toEqual(['the file must hold one JSON object']);
    expect(checkPolicyShape({ table: 'jobs' })).toEqual([
      'interval is missing',
      'premake is missing',
      'retention is missing',
      'table must be "schema.table", got "jobs"',
    ]);
    expect(checkPolicyShape({ ...good, retentionMode: 'shred', stragglers: 'nudge', defaultPartition: 'yes' })).toHaveLength(3);
  });
});
