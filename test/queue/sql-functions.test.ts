import { describe, expect, it } from 'vitest';
import { freshDatabase } from '../helpers.js';

describe('queue SQL functions', () => {
  it('retry_delay never overflows: the cap applies before the delay becomes an interval', async () => {
    const t = await freshDatabase();
    const { rows } = await t.db.query<{ a: number; b: number; c: number }>(
      `SELECT extract(epoch FROM qmaint.retry_delay(41, '8 seconds', '1 hour'))::float8 AS a,
              extract(epoch FROM qmaint.retry_delay(2147483647, '1 day', '1 year'))::float8 AS b,
              extract(epoch FROM qmaint.retry_delay(3, '1 second', '1 hour'))::float8 AS c`,
    );
    const r = rows[0]!;
    // Equal jitter: between half the capped delay and all of it.
    expect(r.a).toBeGreaterThanOrEqual(1800);
    expect(r.a).toBeLessThanOrEqual(3600);
    expect(r.b).toBeGreaterThanOrEqual(365.25 * 86400 / 2);
    expect(r.b).toBeLessThanOrEqual(365.25 * 86400);
    expect(r.c).toBeGreaterThanOrEqual(2);
    expect(r.c).toBeLessThanOrEqual(4);
  });

  it('enqueue heals only a missing partition: a failing CHECK constraint still raises', async () => {
    const t = await freshDatabase();
    // No partition for 2040 yet: enqueue makes it and inserts.
    const made = await t.db.query<{ id: string }>(`SELECT qmaint.enqueue('q', '{}', NULL, 0, 5, '2040-06-01T00:00:00Z') AS id`);
    expect(made.rows[0]!.id).toMatch(/^\d+$/);
    // A queue name the table's CHECK refuses, in a slot with no partition: the CHECK error comes through
    // (under any lc_messages: the decision reads the constraint name, not the message).
    await expect(t.db.query(`SELECT qmaint.enqueue('', '{}', NULL, 0, 5, '2041-06-01T00:00:00Z')`)).rejects.toMatchObject({ message: expect.stringMatching(/jobs_queue_check/) as string });
    await expect(t.db.query(`SELECT qmaint.enqueue('', '{}')`)).rejects.toMatchObject({ message: expect.stringMatching(/jobs_queue_check/) as string });
    const { rows } = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint.jobs WHERE queue = ''`);
    expect(rows[0]!.n).toBe('0');
  });
});
