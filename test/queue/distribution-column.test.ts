// The constraint Citus puts on a table distributed by queue (docs/scale-out.md):
// a statement is routed to one shard only when it filters by the distribution
// column. Every statement a consumer runs against qmaint.jobs (claim, complete,
// fail, heartbeat, release) must therefore say which queue, and must change
// nothing of another queue.
import { describe, expect, it } from 'vitest';
import { CLAIM_SQL, claimQuery } from '../../src/queue/claim.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { CANCELLED_SQL, COMPLETE_SQL, FAIL_SQL, fenceKey, HEARTBEAT_SQL, RELEASE_SQL } from '../../src/queue/statements.js';
import { freshDatabase } from '../helpers.js';

/** Parameter number of the queue in each statement. */
const STATEMENTS: Record<string, { sql: string; queueParam: number }> = {
  claim: { sql: CLAIM_SQL, queueParam: 1 },
  complete: { sql: COMPLETE_SQL, queueParam: 5 },
  fail: { sql: FAIL_SQL, queueParam: 8 },
  heartbeat: { sql: HEARTBEAT_SQL, queueParam: 6 },
  release: { sql: RELEASE_SQL, queueParam: 5 },
  cancelled: { sql: CANCELLED_SQL, queueParam: 4 },
};

describe('every claim/complete/fail/heartbeat/release statement filters by queue (the distribution column)', () => {
  it('each reference to qmaint.jobs is filtered by queue = its queue parameter', () => {
    for (const [name, { sql, queueParam }] of Object.entries(STATEMENTS)) {
      // Each part of the statement that reads or updates qmaint.jobs: from the reference to the next one.
      const parts = sql.split(/(?=\b(?:UPDATE|FROM)\s+qmaint\.jobs\b)/).filter((p) => /^(UPDATE|FROM)\s+qmaint\.jobs\b/.test(p));
      expect(parts.length, name).toBeGreaterThan(0);
      for (const part of parts) expect(part, `${name}: ${part.split('\n')[0]}`).toMatch(new RegExp(`\\b(?:j\\.)?queue = \\$${queueParam}\\b`));
    }
  });

  it('a statement given another queue changes nothing; given the job’s queue it does', async () => {
    const t = await freshDatabase();
    for (let i = 0; i < 4; i++) await enqueue(t.db, 'routed', { i });
    await enqueue(t.db, 'other', { i: 0 });
    const claim = claimQuery({ queue: 'routed', batch: 4, leaseSeconds: 60, workerId: 'w1', lowWater: null });
    const claimed = (await t.db.query<{ id: string; created_at: Date; attempt: number; queue: string }>(claim.text, claim.values)).rows;
    expect(claimed.map((r) => r.queue)).toEqual(['routed', 'routed', 'routed', 'routed']);
    const [a, b, c, d] = claimed as [(typeof claimed)[0], (typeof claimed)[0], (typeof claimed)[0], (typeof claimed)[0]];
    const key = (x: typeof a) => [[x.id], [x.created_at], [fenceKey(x.id, x.attempt)]];
    const runs = {
      heartbeat: (x: typeof a, q: string) => t.db.query(HEARTBEAT_SQL, [...key(x), 'w1', 60, q]),
      complete: (x: typeof a, q: string) => t.db.query(COMPLETE_SQL, [...key(x), 'w1', q]),
      fail: (x: typeof a, q: string) => t.db.query(FAIL_SQL, [...key(x), ['boom'], 'w1', 1, 60, q]),
      release: (x: typeof a, q: string) => t.db.query(RELEASE_SQL, [...key(x), 'w1', q]),
    };
    const targets = { heartbeat: d, complete: a, fail: b, release: c };
    for (const [name, run] of Object.entries(runs)) {
      const job = targets[name as keyof typeof targets];
      expect((await run(job, 'other')).rowCount, `${name} with another queue`).toBe(0);
      expect((await run(job, 'routed')).rowCount, `${name} with the job's queue`).toBe(1);
    }
  });
});
