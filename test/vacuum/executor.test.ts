import { describe, expect, it } from 'vitest';
import { freshDatabase } from '../helpers.js';
import { partitionFor, reloptions } from './support.js';

const D = '2030-01-10T00:00:00Z';
const NEXT = '2030-01-11T00:00:00Z';
const NOW = '2030-01-10T01:00:00Z';

interface Result {
  seq: number;
  action: string;
  target: string;
  attempts: number;
  outcome: string;
  blockers: { pid: number }[];
  ms: number;
}

describe('server-side vacuum tune runs through qmaint.run_steps', () => {
  it("reports every step in the executor's shape; a blocked partition gives up after retries + 1 attempts, the others are re-profiled", async () => {
    const t = await freshDatabase();
    await t.db.query(`UPDATE qmaint.partition_policy SET lock_timeout = '100ms' WHERE parent_table = 'qmaint.jobs'`);
    const blocked = await partitionFor(t.db, D);
    const free = await partitionFor(t.db, NEXT);
    // Both drift from their profile, so tune has an ALTER TABLE for each.
    for (const p of [blocked, free]) await t.db.query(`ALTER TABLE ${p} SET (autovacuum_vacuum_cost_delay = 7)`);
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE ${blocked} IN SHARE MODE`);

    const { rows } = await t.db.query<{ r: { applied: number; gave_up: (Result & { statement: string })[]; steps: Result[] } }>(
      'SELECT qmaint.vacuum_tune_all($1) AS r',
      [NOW],
    );
    await blocker.query('ROLLBACK');
    const r = rows[0]!.r;
    const retries = (await t.db.query<{ n: number }>('SELECT qmaint.lock_retries() AS n')).rows[0]!.n;
    for (const s of r.steps) expect(Object.keys(s).sort()).toEqual(['action', 'attempts', 'blockers', 'ms', 'outcome', 'seq', 'target']);
    const gaveUp = r.steps.filter((s) => s.outcome === 'gave_up');
    expect(gaveUp.map((s) => [s.action, s.target, s.attempts])).toEqual([['profile', blocked, retries + 1]]);
    expect(gaveUp[0]!.blockers.map((b) => b.pid)).toEqual([pid]);
    expect(r.gave_up).toMatchObject([{ target: blocked, outcome: 'gave_up', attempts: retries + 1 }]);
    expect(r.gave_up[0]!.statement).toMatch(/^ALTER TABLE /);
    expect(r.steps.find((s) => s.target === free && s.action === 'profile')).toMatchObject({ outcome: 'done', attempts: 1, blockers: [] });
    expect(r.applied).toBe(r.steps.filter((s) => s.action === 'profile' && s.outcome === 'done').length);
    expect((await reloptions(t.db, blocked)).autovacuum_vacuum_cost_delay).toBe(7);
    expect((await reloptions(t.db, free)).autovacuum_vacuum_cost_delay).not.toBe(7);

    // run_task reads the give-up from the same result: a lock_timeout run naming the partition.
    const again = await t.client();
    await again.query('BEGIN');
    await again.query(`LOCK TABLE ${blocked} IN SHARE MODE`);
    const run = await t.db.query<{ r: { status: string; message: string } }>(`SELECT qmaint.run_task('vacuum', 'cli', $1) AS r`, [NOW]);
    await again.query('ROLLBACK');
    expect(run.rows[0]!.r.status).toBe('lock_timeout');
    expect(run.rows[0]!.r.message).toContain(blocked);
  });
});
