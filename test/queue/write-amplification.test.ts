// What a job's lease costs in writes: the heartbeat changes only locked_until,
// which no index of qmaint.jobs uses (migration 0019), so each extension is a
// HOT update (a new row version on the same page, no new index entry). The
// numbers behind it are in docs/queue.md ("Write amplification").
import { describe, expect, it } from 'vitest';
import { Claimer } from '../../src/queue/consumer/claimer.js';
import { Attempt } from '../../src/queue/consumer/job.js';
import { LeaseKeeper } from '../../src/queue/consumer/lease-keeper.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { freshDatabase } from '../helpers.js';

const t = await freshDatabase();
const options = { queue: 'hot', workerId: 'wa-test', leaseSeconds: 60, lowWaterRefreshMs: 3_600_000, rescanMs: 3_600_000 };

describe('write amplification of a lease', () => {
  it('no index of qmaint.jobs or of its partitions uses locked_until, in its key or its predicate', async () => {
    const { rows } = await t.db.query<{ index: string; def: string }>(
      `SELECT i.indexrelid::regclass::text AS index, pg_get_indexdef(i.indexrelid) AS def
         FROM pg_index i
        WHERE i.indrelid = 'qmaint.jobs'::regclass
           OR i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'qmaint.jobs'::regclass)`,
    );
    expect(rows.length).toBeGreaterThan(4);
    expect(rows.filter((r) => r.def.includes('locked_until'))).toEqual([]);
    // The running jobs still have their partial index (rescue, low-water mark, live-job counts).
    expect(rows.map((r) => r.index)).toContain('qmaint.jobs_running_idx');
    const running = rows.find((r) => r.index === 'qmaint.jobs_running_idx')!;
    expect(running.def).toMatch(/\(created_at\) WHERE \(status = 'running'::qmaint\.job_status\)$/);
  });

  it('a heartbeat is a HOT update: every extended lease is a new row version on its page, with no index entry', async () => {
    for (let i = 0; i < 5; i++) await enqueue(t.db, 'hot', { i });
    const held = (await new Claimer(options).claim(t.db, 'hot', 5, null)).map((r) => new Attempt(r, 900));
    expect(held).toHaveLength(5);
    const ids = held.map((h) => h.row.id);
    const c = await t.client();
    try {
      await c.query('BEGIN');
      const before = await c.query<{ until: Date[] }>(`SELECT array_agg(locked_until ORDER BY id) AS until FROM qmaint.jobs WHERE id = ANY ($1::bigint[])`, [
        ids,
      ]);
      await c.query('SELECT pg_sleep(0.01)');
      expect(await new LeaseKeeper(c, options).extend(held)).toEqual([]);
      // This transaction's own counters of the partition holding the jobs.
      const { rows } = await c.query<{ updated: string; hot: string; until: Date[] }>(
        `SELECT pg_stat_get_xact_tuples_updated(p.oid)::text AS updated, pg_stat_get_xact_tuples_hot_updated(p.oid)::text AS hot,
                (SELECT array_agg(locked_until ORDER BY id) FROM qmaint.jobs WHERE id = ANY ($1::bigint[])) AS until
           FROM (SELECT DISTINCT tableoid AS oid FROM qmaint.jobs WHERE id = ANY ($1::bigint[])) p`,
        [ids],
      );
      expect(rows).toHaveLength(1);
      expect(rows[0]!.updated).toBe('5');
      expect(rows[0]!.hot).toBe('5');
      rows[0]!.until.forEach((u, i) => expect(u.getTime()).toBeGreaterThan(before.rows[0]!.until[i]!.getTime()));
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
  });
});
