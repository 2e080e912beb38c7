import { describe, expect, it } from 'vitest';
import { defaultVacuumProfiles, STORAGE_PARAMETERS, validateVacuumProfiles } from '../../src/vacuum/profile.js';
import { freshDatabase } from '../helpers.js';
import { DOCUMENTED_DEFAULTS } from './support.js';

describe('validateVacuumProfiles', () => {
  it('accepts the defaults and a partial policy', async () => {
    const t = await freshDatabase();
    expect(validateVacuumProfiles(await defaultVacuumProfiles(t.db))).toEqual([]);
    expect(validateVacuumProfiles({ hot: { autovacuum_vacuum_cost_limit: 3000 } })).toEqual([]);
    expect(validateVacuumProfiles(undefined)).toEqual([]);
  });

  it('lists every problem', () => {
    const problems = validateVacuumProfiles({
      lukewarm: {},
      hot: { autovacuum_vacuum_threshold: -1, autovacuum_vacuum_cost_limit: 0, autovacuum_naptime: 5, autovacuum_enabled: 'yes' },
      warm: { autovacuum_vacuum_threshold: 'auto', autovacuum_vacuum_scale_factor: 100.5, autovacuum_freeze_max_age: 99_999 },
      cold: { autovacuum_vacuum_cost_delay: -1, autovacuum_analyze_threshold: 1.5, fillfactor: '90' },
    });
    expect(problems).toEqual([
      'vacuum.lukewarm: unknown profile; use hot, warm or cold',
      "vacuum.hot.autovacuum_vacuum_threshold: -1 is outside PostgreSQL's limits 0..2147483647",
      "vacuum.hot.autovacuum_vacuum_cost_limit: 0 is outside PostgreSQL's limits 1..10000",
      expect.stringMatching(/^vacuum\.hot\.autovacuum_naptime: unknown storage parameter/),
      'vacuum.hot.autovacuum_enabled: must be true or false, got "yes"',
      'vacuum.warm.autovacuum_vacuum_threshold: "auto" is only allowed for autovacuum_vacuum_threshold and autovacuum_analyze_threshold in the hot profile',
      "vacuum.warm.autovacuum_vacuum_scale_factor: 100.5 is outside PostgreSQL's limits 0..100",
      "vacuum.warm.autovacuum_freeze_max_age: 99999 is outside PostgreSQL's limits 100000..2000000000",
      "vacuum.cold.autovacuum_vacuum_cost_delay: -1 is outside PostgreSQL's limits 0..100",
      'vacuum.cold.autovacuum_analyze_threshold: must be a whole number, got 1.5',
      'vacuum.cold.fillfactor: must be a number, got "90"',
    ]);
    expect(validateVacuumProfiles([])).toHaveLength(1);
    expect(validateVacuumProfiles({ hot: null })).toEqual(['vacuum.hot: must be an object of storage parameters, got null']);
  });
});

describe('the limits match the server', () => {
  it('PostgreSQL accepts each parameter at its limits and refuses it just outside', async () => {
    const t = await freshDatabase({ migrated: false });
    const client = await t.client();
    const accepts = async (key: string, value: number | boolean) => {
      try {
        await client.query(`CREATE TEMP TABLE limit_probe (a int) WITH (${key} = ${String(value)})`);
      } catch {
        return false;
      }
      await client.query('DROP TABLE limit_probe');
      return true;
    };
    const mismatches: string[] = [];
    for (const [key, spec] of Object.entries(STORAGE_PARAMETERS)) {
      if (spec.type === 'boolean') {
        if (!(await accepts(key, true))) mismatches.push(`${key}=true refused`);
        continue;
      }
      const step = spec.type === 'integer' ? 1 : 0.5;
      for (const [value, ok] of [
        [spec.min!, true],
        [spec.max!, true],
        [spec.min! - step, false],
        [spec.max! + step, false],
      ] as const) {
        const local = validateVacuumProfiles({ warm: { [key]: value } }).length === 0;
        if (local !== ok) mismatches.push(`${key}=${value}: qmaint says ${local}`);
        if ((await accepts(key, value)) !== ok) mismatches.push(`${key}=${value}: PostgreSQL says ${!ok}`);
      }
    }
    expect(mismatches).toEqual([]);
  });
});

describe('profiles in SQL', () => {
  it('the defaults are the documented ones (defined once, in SQL), and a partial policy is laid over them', async () => {
    const t = await freshDatabase();
    expect(await defaultVacuumProfiles(t.db)).toEqual(DOCUMENTED_DEFAULTS);
    await t.db.query(`UPDATE qmaint.partition_policy SET vacuum = '{"warm": {"autovacuum_vacuum_cost_limit": 500}}' WHERE parent_table = 'qmaint.jobs'`);
    const warm = await t.db.query(`SELECT qmaint.effective_profile('qmaint.jobs', 'warm') AS p`);
    expect(warm.rows[0]!.p).toEqual({ ...DOCUMENTED_DEFAULTS.warm, autovacuum_vacuum_cost_limit: 500 });
    const cold = await t.db.query(`SELECT qmaint.effective_profile('qmaint.jobs', 'cold') AS p`);
    expect(cold.rows[0]!.p).toEqual(DOCUMENTED_DEFAULTS.cold);
  });
});
