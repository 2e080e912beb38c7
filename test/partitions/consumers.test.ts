import { describe, expect, it } from 'vitest';
import { rotate } from '../../src/partitions/index.js';
import { Consumer, type Job } from '../../src/queue/consumer.js';
import { eventually, freshDatabase, type TestDatabase } from '../helpers.js';
import { at, name, rotateAt, setPolicy, T0 } from './support.js';

async function ledger(t: TestDatabase): Promise<void> {
  await t.db.query('CREATE TABLE ledger (job_id bigint NOT NULL, created_at timestamptz NOT NULL)');
}

function consumer(t: TestDatabase, queue: string, errors: string[]): Consumer {
  const c = new Consumer(t.db, {
    queue,
    concurrency: 4,
    batch: 10,
    leaseSeconds: 30,
    pollMaxMs: 200,
    lowWaterRefreshMs: 100,
    handler: async (j: Job) => {
      await t.db.query('INSERT INTO ledger VALUES ($1, $2)', [j.id, j.createdAt]);
    },
  });
  c.on('db-error', (err, during) => errors.push(`${during}: ${err.message}`));
  c.on('failed', (j, error) => errors.push(`job ${j.id}: ${error}`));
  return c;
}

async function duplicates(t: TestDatabase): Promise<number> {
  const { rows } = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM (SELECT job_id FROM ledger GROUP BY 1 HAVING count(*) > 1) d');
  return rows[0]!.n;
}

describe('partition maintenance with consumers at work', () => {
  it('a straggler moved forward is still handled exactly once', async () => {
    const t = await freshDatabase();
    await ledger(t);
    await setPolicy(t.db, { premake: 1, retention: '1 day', stragglers: 'move' });
    await rotateAt(t, T0);
    // Ready now (run_at is the real clock) but stamped in a partition that will expire.
    const { rows } = await t.db.query<{ id: string }>(
      `INSERT INTO qmaint.jobs (queue, created_at) SELECT 'late', $1 FROM generate_series(1, 60) RETURNING id`,
      [T0],
    );
    const ids = rows.map((r) => r.id).sort();

    const result = await rotate(t.db, { now: at(3), mode: 'direct' });
    expect(result.ran && result.tables[0]!.done.find((d) => d.action === 'move')?.moved).toBe(60);
    const where = await t.db.query<{ p: string; n: number }>(`SELECT tableoid::regclass::text AS p, count(*)::int AS n FROM qmaint.jobs GROUP BY 1`);
    expect(where.rows).toEqual([{ p: name(at(3)), n: 60 }]);

    const errors: string[] = [];
    const c = consumer(t, 'late', errors);
    await c.start();
    await eventually(async () => (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ledger`)).rows[0]!.n >= 60, 20_000);
    await c.stop();
    const handled = await t.db.query<{ id: string }>('SELECT job_id::text AS id FROM ledger ORDER BY 1');
    expect(handled.rows.map((r) => r.id)).toEqual(ids);
    expect(await duplicates(t)).toBe(0);
    expect(errors).toEqual([]);
    // Drained now: the next rotate retires the old partition.
    await rotateAt(t, at(3));
    expect((await t.db.query(`SELECT to_regclass($1) AS r`, [name(T0)])).rows).toEqual([{ r: null }]);
  });

  it('consumers keep claiming with no errors and no lost jobs while rotate runs in a loop', async () => {
    const t = await freshDatabase();
    await ledger(t);
    await setPolicy(t.db, { premake: 2, retention: '1 day', stragglers: 'move', lock_timeout: '1s' });
    await rotateAt(t, T0);
    const errors: string[] = [];
    const consumers = [consumer(t, 'busy', errors), consumer(t, 'busy', errors)];
    for (const c of consumers) await c.start();
    let enqueued = 0;
    const actions = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const now = at(i);
      // Producers stamp jobs with the travelled clock; a third only become ready
      // a little later, so some are still queued when their partition expires.
      await t.db.query(
        `SELECT qmaint.enqueue('busy', jsonb_build_object('n', n), clock_timestamp() + CASE WHEN n % 3 = 0 THEN interval '1.5 seconds' ELSE interval '0' END, 0, 5, $1)
           FROM generate_series(1, 40) n`,
        [now],
      );
      enqueued += 40;
      const r = await rotate(t.db, { now, mode: 'direct', lockTimeout: '1s' });
      if (r.ran) for (const d of r.tables[0]!.done) actions.set(d.action, (actions.get(d.action) ?? 0) + 1);
      await new Promise((res) => setTimeout(res, 300));
    }
    await eventually(async () => (await t.db.query<{ n: number }>(`SELECT count(DISTINCT job_id)::int AS n FROM ledger`)).rows[0]!.n >= enqueued, 30_000, 100);
    for (const c of consumers) await c.stop();
    expect(errors).toEqual([]);
    expect(await duplicates(t)).toBe(0);
    // Every job was handled once; none is left behind (completed ones in retired partitions are gone with them).
    expect((await t.db.query(`SELECT count(*)::int AS n FROM ledger`)).rows).toEqual([{ n: enqueued }]);
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE status <> 'completed'`)).rows).toEqual([{ n: 0 }]);
    // The loop really created, moved and retired while the consumers worked.
    expect(actions.get('create')).toBeGreaterThan(0);
    expect(actions.get('move')).toBeGreaterThan(0);
    expect(actions.get('drop')).toBeGreaterThan(0);
  });
});
