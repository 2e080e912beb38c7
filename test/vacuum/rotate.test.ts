import { beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, runCli, type TestDatabase } from '../helpers.js';
import { profileWith, reloptions } from './support.js';

const D = '2032-06-10T00:00:00Z';
const at = (hours: number) => new Date(Date.parse(D) + hours * 3600_000).toISOString();
// No churn measured in this database: "auto" is the fallback.
const FALLBACK = { vacuum: 1000, analyze: 5000 };

let t: TestDatabase;
let partition: string;

async function rotate(now: string): Promise<void> {
  const r = await runCli(['partitions', 'rotate', '--now', now, '--json', '--database-url', t.url]);
  expect(r.code, r.stderr).toBe(0);
}

beforeAll(async () => {
  t = await freshDatabase();
});

describe('profiles follow a partition as it ages through rotate', () => {
  it('hot when made, warm while it holds live jobs, cold once drained; tune then freezes it', async () => {
    await rotate(at(1));
    const made = await t.db.query<{ p: string }>(
      `SELECT format('%I.%I', schema_name, table_name) AS p FROM qmaint.partitions_of('qmaint.jobs') WHERE lower_bound <= $1 AND $1 < upper_bound`,
      [at(2)],
    );
    expect(made.rows).toHaveLength(1); // rotate made it
    partition = made.rows[0]!.p;
    expect(await reloptions(t.db, partition)).toEqual(profileWith('hot', FALLBACK));

    const { rows } = await t.db.query(`INSERT INTO qmaint.jobs (queue, created_at) VALUES ('age', $1) RETURNING id`, [at(2)]);
    await rotate(at(26));
    expect(await reloptions(t.db, partition)).toMatchObject(profileWith('warm', FALLBACK));

    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = $1`, [rows[0]!.id]);
    await rotate(at(27));
    expect(await reloptions(t.db, partition)).toMatchObject(profileWith('cold', FALLBACK));

    const tune = await runCli(['vacuum', 'tune', '--now', at(27), '--sample', '0s', '--json', '--database-url', t.url]);
    expect(tune.code, tune.stderr).toBe(0);
    expect(
      tune
        .json<{ steps: { action: string; target: string }[] }>()
        .steps.filter((s) => s.target === partition)
        .map((s) => s.action),
    ).toEqual(['track', 'freeze', 'profile']);
    // Exactly the cold profile now: the hot keys rotate leaves alone are reset by tune.
    expect(await reloptions(t.db, partition)).toEqual(profileWith('cold', FALLBACK));
    // And rotate agrees with it: nothing to re-profile.
    await rotate(at(28));
    expect(await reloptions(t.db, partition)).toEqual(profileWith('cold', FALLBACK));
  });
});
