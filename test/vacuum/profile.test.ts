import { describe, expect, it } from 'vitest';
import { DEFAULT_VACUUM_PROFILES, STORAGE_PARAMETERS, resolveVacuumProfiles, validateVacuumProfiles } from '../../src/vacuum/profile.js';
import { freshDatabase } from '../helpers.js';

describe('validateVacuumProfiles', () => {
  it('accepts the defaults and a partial policy', () => {
    expect(validateVacuumProfiles(DEFAULT_VACUUM_PROFILES)).toEqual([]);
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

  it('lays given parameters over the defaults', () => {
    const resolved = resolveVacuumProfiles({ hot: { autovacuum_vacuum_cost_limit: 3000 } });
    expect(resolved.hot).toEqual({ ...DEFAULT_VACUUM_PROFILES.hot, autovacuum_vacuum_cost_limit: 3000 });
    expect(resolved.cold).toEqual(DEFAULT_VACUUM_PROFILES.cold);
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
      for (const [value, ok] of [[spec.min!, true], [spec.max!, true], [spec.min! - step, false], [spec.max! + step, false]] as const) {
        const local = validateVacuumProfiles({ warm: { [key]: value } }).length === 0;
        if (local !== ok) mismatches.push(`${key}=${value}: qmaint says ${local}`);
        if ((await accepts(key, value)) !== ok) mismatches.push(`${key}=${value}: PostgreSQL says ${!ok}`);
      }
    }
    expect(mismatches).toEqual([]);
  });
});

describe('profiles in SQL', () => {
  it('qmaint.vacuum_default_profiles() equals DEFAULT_VACUUM_PROFILES, and a partial policy is laid over it', async () => {
    const t = await freshDatabase();
    const { rows } = await t.db.query(`SELECT qmaint.vacuum_default_profiles() AS d`);
    expect(rows[0].d).toEqual(DEFAULT_VACUUM_PROFILES);
    await t.db.query(`UPDATE qmaint.partition_policy SET vacuum = '{"warm": {"autovacuum_vacuum_cost_limit": 500}}' WHERE parent_table = 'qmaint.jobs'`);
    const warm = await t.db.query(`SELECT qmaint.effective_profile('qmaint.jobs', 'warm') AS p`);
    expect(warm.rows[0].p).toEqual({ ...DEFAULT_VACUUM_PROFILES.warm, autovacuum_vacuum_cost_limit: 500 });
    const cold = await t.db.query(`SELECT qmaint.effective_profile('qmaint.jobs', 'cold') AS p`);
    expect(cold.rows[0].p).toEqual(DEFAULT_VACUUM_PROFILES.cold);
  });
});
