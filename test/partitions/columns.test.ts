import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../helpers.js';
import { at, cli, T0 } from './support.js';

/** A table with its own layout: task_id, state (pending/working/done), no updated_at. */
async function ownTable(t: TestDatabase): Promise<void> {
  await t.db.query(`CREATE SCHEMA app;
    CREATE TABLE app.tasks (task_id bigserial, body text, state text NOT NULL DEFAULT 'pending', created_at timestamptz NOT NULL,
                            PRIMARY KEY (task_id, created_at)) PARTITION BY RANGE (created_at);
    CREATE INDEX tasks_pending_idx ON app.tasks (created_at) WHERE state = 'pending'`);
}

function policyFile(t: TestDatabase, columns: unknown): string {
  const file = path.join('/tmp', `${t.name}-tasks.json`);
  writeFileSync(file, JSON.stringify({ table: 'app.tasks', interval: '1 day', premake: 2, retention: '3 days', columns }));
  return file;
}

const parts = async (t: TestDatabase) =>
  (
    await t.db.query<{ p: string; state: string; live: number }>(
      `SELECT partition::text AS p, state, live_jobs::int AS live FROM qmaint.partition_states('app.tasks', $1) ORDER BY lower_bound`,
      [at(5)],
    )
  ).rows;

describe('policy column mapping (a table with its own job columns)', () => {
  it('refuses a mapping that names missing columns, and changes nothing', async () => {
    const t = await freshDatabase();
    await ownTable(t);
    // qmaint's own layout does not fit this table.
    const plain = await cli(t, ['partitions', 'apply', policyFile(t, {})]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/lacks the job column\(s\) id, status, updated_at/);
    const wrong = await cli(t, ['partitions', 'apply', policyFile(t, { status: 'state', key: ['task_id'], touch: 'changed_at', time: 'body' })]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/not on its time column body/);
    const shape = await cli(t, ['partitions', 'apply', policyFile(t, { live: [], colour: 'x' })]);
    expect(shape.code).toBe(2);
    expect(shape.stderr).toMatch(/columns: unknown key "colour".*live must be a list/);
    const { rows } = await t.db.query(`SELECT 1 FROM qmaint.partition_policy WHERE parent_table = 'app.tasks'`);
    expect(rows).toHaveLength(0);
  });

  it('rotate counts, moves and retires by the mapped columns; health and partition states read them too', async () => {
    const t = await freshDatabase();
    await ownTable(t);
    const columns = { time: 'created_at', status: 'state', live: ['pending', 'working'], key: ['task_id'], touch: null };
    const apply = await cli(t, ['partitions', 'apply', policyFile(t, columns)]);
    expect(apply.code, apply.stderr).toBe(0);
    const pol = await t.db.query(
      `SELECT time_column, status_column, live_values, key_columns, touch_column FROM qmaint.partition_policy WHERE parent_table = 'app.tasks'`,
    );
    expect(pol.rows[0]).toEqual({
      time_column: 'created_at',
      status_column: 'state',
      live_values: ['pending', 'working'],
      key_columns: ['task_id'],
      touch_column: null,
    });
    // qmaint.jobs keeps qmaint's own layout.
    const jobs = await t.db.query(
      `SELECT status_column, live_values, key_columns, touch_column FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'`,
    );
    expect(jobs.rows[0]).toEqual({ status_column: 'status', live_values: ['queued', 'running'], key_columns: ['id'], touch_column: 'updated_at' });

    const first = await cli(t, ['partitions', 'rotate', '--table', 'app.tasks', '--now', T0.toISOString()]);
    expect(first.code, first.stderr).toBe(0);
    await t.db.query(
      `INSERT INTO app.tasks (body, state, created_at) VALUES ('a', 'pending', $1), ('b', 'done', $1), ('c', 'working', $2), ('d', 'done', $2), ('e', 'done', $2)`,
      [T0, at(1)],
    );
    // At T0+5d (retention 3 days) days 0 and 1 are expired: day 0 holds a pending task (moved), day 1 a working one (stays).
    expect((await parts(t)).slice(0, 2).map((p) => [p.state, p.live])).toEqual([
      ['warm', 1],
      ['warm', 1],
    ]);
    const plan = await cli(t, ['partitions', 'plan', '--table', 'app.tasks', '--now', at(5).toISOString()]);
    const steps = plan.json<{ tables: { steps: { action: string; target: string; reason: string }[] }[] }>().tables[0]!.steps;
    const move = steps.find((s) => s.action === 'move');
    expect(move?.target).toBe('app.tasks_p20310310');
    expect(move?.reason).toMatch(/holds 1 queued job/);
    expect(steps.some((s) => s.action === 'move' && s.target === 'app.tasks_p20310311')).toBe(false);

    const rotated = await cli(t, ['partitions', 'rotate', '--table', 'app.tasks', '--now', at(5).toISOString()]);
    expect(rotated.code, rotated.stderr).toBe(0);
    const rows = await t.db.query<{ body: string; state: string; p: string }>(`SELECT body, state, tableoid::regclass::text AS p FROM app.tasks ORDER BY body`);
    // The pending task moved into the partition holding now; day 0 retired; day 1 waits for its working task.
    expect(rows.rows.find((r) => r.body === 'a')).toEqual({ body: 'a', state: 'pending', p: 'app.tasks_p20310315' });
    const names = (await parts(t)).map((p) => p.p);
    expect(names).not.toContain('app.tasks_p20310310');
    expect(names).toContain('app.tasks_p20310311');

    // The retention health check reads the mapping: day 1 is not overdue while its task works; empty day 2 is.
    const health = await t.db.query<{ observed: string }>(`SELECT observed FROM qmaint.health_retention($1, qmaint.health_default_thresholds())`, [at(9)]);
    expect(health.rows[0]!.observed).toMatch(/app\.tasks_p20310312/);
    expect(health.rows[0]!.observed).not.toMatch(/app\.tasks_p20310311/);
    // Once the working task is done, day 1 retires.
    await t.db.query(`UPDATE app.tasks SET state = 'done' WHERE body = 'c'`);
    const again = await cli(t, ['partitions', 'rotate', '--table', 'app.tasks', '--now', at(5).toISOString()]);
    expect(again.code, again.stderr).toBe(0);
    expect((await parts(t)).map((p) => p.p)).not.toContain('app.tasks_p20310311');
    // Retention dropped the finished tasks with their partitions; the moved one is left.
    expect((await t.db.query(`SELECT body FROM app.tasks`)).rows).toEqual([{ body: 'a' }]);
  });

  it('the retire guard refuses a row made live through the mapped status column', async () => {
    const t = await freshDatabase();
    await ownTable(t);
    await cli(t, ['partitions', 'apply', policyFile(t, { status: 'state', live: ['pending', 'working'], key: ['task_id'], touch: null })]);
    await cli(t, ['partitions', 'rotate', '--table', 'app.tasks', '--now', T0.toISOString()]);
    await t.db.query(`INSERT INTO app.tasks (body, state, created_at) VALUES ('x', 'done', $1)`, [T0]);
    await t.db.query(
      `CREATE TRIGGER qmaint_retire BEFORE INSERT OR UPDATE ON app.tasks_p20310310 FOR EACH ROW EXECUTE FUNCTION qmaint.refuse_live_jobs('app.tasks', 'state', 'pending', 'working')`,
    );
    await expect(t.db.query(`UPDATE app.tasks SET state = 'working' WHERE body = 'x'`)).rejects.toThrow(/being retired/);
    await t.db.query(`UPDATE app.tasks SET body = 'y' WHERE body = 'x'`);
    // Rotate's own guard carries the mapping in its arguments (a writer needs no right to read the policy).
    const plan = await cli(t, ['partitions', 'plan', '--table', 'app.tasks', '--now', at(5).toISOString()]);
    const guard = plan.json<{ tables: { steps: { action: string; statement: string }[] }[] }>().tables[0]!.steps.find((s) => s.action === 'guard');
    expect(guard?.statement).toContain(`qmaint.refuse_live_jobs('app.tasks', 'state', 'pending', 'working')`);
    await expect(t.db.query(`SELECT qmaint.assert_drained('app.tasks_p20310310')`)).resolves.toBeDefined();
  });
});
