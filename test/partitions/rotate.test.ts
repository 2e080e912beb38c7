import { describe, expect, it } from 'vitest';
import { eventually, freshDatabase, runCli, type TestDatabase } from '../helpers.js';
import { at, cli, DAY, job, lowWater, name, partitions, rotateAt, setPolicy, T0 } from './support.js';

const day = (d: Date) => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));

/** Until some session waits for the per-parent partition-creation lock (qmaint.lock_slot). */
async function waitingForCreationLock(t: TestDatabase): Promise<void> {
  await eventually(async () => {
    const { rows } = await t.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = 29037 AND objid = 'qmaint.jobs'::regclass::oid`,
    );
    return rows[0]!.n > 0;
  }, 30_000);
}

describe('qmaint partitions rotate', () => {
  it('makes exactly the runway the policy asks for, and one far-future row does not widen it', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 2, retention: '1 day' });
    const first = await cli(t, ['partitions', 'rotate', '--now', T0.toISOString()]);
    expect(first.code, first.stderr).toBe(0);
    // The migration's partitions (real clock) are long expired and drained: retired.
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([name(T0), name(at(1)), name(at(2))]);
    expect((await partitions(t.db))[0]).toMatchObject({ from: day(T0).toISOString(), to: day(at(1)).toISOString() });

    await setPolicy(t.db, { premake: 5 });
    await rotateAt(t, T0);
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([0, 1, 2, 3, 4, 5].map((n) => name(at(n))));

    // "auto" with no measured traffic keeps the floor (3) ahead; a day later one more appears.
    await setPolicy(t.db, { premake: null });
    const list = await cli(t, ['partitions', 'list', '--now', at(1).toISOString()]);
    expect(list.json<{ tables: { runwayTarget: number }[] }>().tables[0]!.runwayTarget).toBe(3);

    await job(t.db, at(400));
    const far = await cli(t, ['partitions', 'rotate', '--now', at(4).toISOString()]);
    expect(far.code, far.stderr).toBe(0);
    const names = (await partitions(t.db)).map((p) => p.name);
    expect(names).toEqual([...[3, 4, 5, 6, 7].map((n) => name(at(n))), name(at(400))]);
    // A second rotate at the same time has nothing to do.
    const again = await cli(t, ['partitions', 'rotate', '--now', at(4).toISOString()]);
    expect(again.json<{ summary: string }>().summary).toBe('qmaint.jobs: nothing to do');
  });

  it('retires only expired partitions with no queued or running job, and advances the low-water mark', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 2, retention: '3 days', stragglers: 'wait' });
    await rotateAt(t, T0);
    await job(t.db, T0, 'completed');
    const live = await job(t.db, T0, 'queued');
    await job(t.db, at(1), 'completed');
    await job(t.db, at(1), 'failed');
    await job(t.db, at(2), 'running');

    // At T0+5d the cut-off is T0+2d: day 0 (live) and day 1 (drained) are expired, day 2 (running) is not.
    const plan = await cli(t, ['partitions', 'plan', '--now', at(5).toISOString()]);
    const steps = plan.json<{ tables: { steps: { action: string; target: string; lockLevel: string }[] }[] }>().tables[0]!.steps;
    expect(steps.filter((s) => ['guard', 'detach', 'drop'].includes(s.action)).map((s) => `${s.action} ${s.target}`)).toEqual([
      `guard ${name(at(1))}`,
      `detach ${name(at(1))}`,
      `drop ${name(at(1))}`,
    ]);
    expect(steps.find((s) => s.action === 'detach')!.lockLevel).toMatch(/SHARE UPDATE EXCLUSIVE/);

    const r = await cli(t, ['partitions', 'rotate', '--now', at(5).toISOString()]);
    expect(r.code, r.stderr).toBe(0);
    const names = (await partitions(t.db)).map((p) => p.name);
    expect(names).toContain(name(T0));
    expect(names).not.toContain(name(at(1)));
    expect(names).toContain(name(at(2)));
    // The mark stops at the oldest partition holding a live job.
    expect(await lowWater(t.db)).toBe(day(T0).toISOString());
    const { rows } = await t.db.query(`SELECT status FROM qmaint.jobs WHERE id = $1`, [live]);
    expect(rows).toEqual([{ status: 'queued' }]);

    // Once done, the next rotate retires it and the mark moves on to the partition holding now.
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = $1`, [live]);
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE status = 'running'`);
    await rotateAt(t, at(6));
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([5, 6, 7, 8].map((n) => name(at(n))));
    expect(await lowWater(t.db)).toBe(day(at(6)).toISOString());
  });

  it('moves queued stragglers forward in batches, then retires the drained partition', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '2 days', stragglers: 'move' });
    await rotateAt(t, T0);
    await t.db.query(`INSERT INTO qmaint.jobs (queue, created_at, run_at) SELECT 'bulk', $1, $1 FROM generate_series(1, 2500)`, [T0]);
    const running = await job(t.db, T0, 'running');

    // Without --json: progress lines on stderr, their total counted before the move starts.
    const r = await runCli(['partitions', 'rotate', '--now', at(4).toISOString(), '--database-url', t.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`moving jobs out of ${name(T0)}: 2500/2500 (100%)`);
    expect(r.stdout).toMatch(/move qmaint\.jobs_p20310310 .*2500 jobs moved/);
    const { rows } = await t.db.query<{ p: string; status: string; n: string }>(
      `SELECT tableoid::regclass::text AS p, status::text, count(*) AS n FROM qmaint.jobs GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    // The running job stays (its consumer owns it); the partition waits for it.
    expect(rows).toEqual([
      { p: name(T0), status: 'running', n: '1' },
      { p: name(at(4)), status: 'queued', n: '2500' },
    ]);
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = $1`, [running]);
    await rotateAt(t, at(4));
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([name(at(4)), name(at(5))]);
    expect(Number((await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint.jobs WHERE status = 'queued'`)).rows[0]!.n)).toBe(2500);
  });

  it('--dry-run prints the SQL with lock levels and changes nothing', async () => {
    const t = await freshDatabase();
    const before = await partitions(t.db);
    const r = await cli(t, ['partitions', 'rotate', '--dry-run', '--now', T0.toISOString()]);
    expect(r.code, r.stderr).toBe(0);
    const steps = r.json<{ dryRun: boolean; tables: { steps: { statement: string; lockLevel: string }[] }[] }>().tables[0]!.steps;
    expect(steps.some((s) => /ATTACH PARTITION/.test(s.statement) && /SHARE UPDATE EXCLUSIVE/.test(s.lockLevel))).toBe(true);
    expect(steps.some((s) => /DETACH PARTITION .* CONCURRENTLY/.test(s.statement))).toBe(true);
    expect(await partitions(t.db)).toEqual(before);
    const human = await cli(t, ['partitions', 'rotate', '--dry-run', '--now', T0.toISOString()]);
    expect(human.code).toBe(0);
  });

  it('keeps or archives retired tables per retentionMode', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 0, retention: '1 day', retention_mode: 'detach' });
    await rotateAt(t, T0);
    await job(t.db, T0, 'completed');
    await rotateAt(t, at(2));
    const kept = await t.db.query<{ ispart: boolean; comment: string; n: string }>(
      `SELECT c.relispartition AS ispart, obj_description(c.oid, 'pg_class') AS comment, (SELECT count(*) FROM ${name(T0)}) AS n
         FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [name(T0)],
    );
    expect(kept.rows).toEqual([{ ispart: false, comment: expect.stringMatching(/^qmaint: detached from qmaint.jobs/) as string, n: '1' }]);

    await setPolicy(t.db, { retention_mode: 'archive' });
    await job(t.db, at(2), 'completed');
    await rotateAt(t, at(4));
    const archived = await t.db.query(`SELECT to_regclass($1) IS NOT NULL AS here`, [
      `qmaint_archive.jobs_p${at(2).toISOString().slice(0, 10).replace(/-/g, '')}`,
    ]);
    expect(archived.rows).toEqual([{ here: true }]);

    // drop NAME takes a table qmaint detached; detach/drop refuse the hot partition and live jobs.
    expect((await cli(t, ['partitions', 'drop', name(T0)])).code).toBe(0);
    expect((await t.db.query(`SELECT to_regclass($1) AS r`, [name(T0)])).rows).toEqual([{ r: null }]);
    const hot = await cli(t, ['partitions', 'detach', name(at(4)), '--now', at(4).toISOString()]);
    expect(hot.code).toBe(2);
    expect(hot.stderr).toMatch(/hot partition.*only past partitions/);
    await setPolicy(t.db, { retention: '30 days' });
    await rotateAt(t, at(6));
    await job(t.db, at(4), 'queued');
    const liveRefused = await cli(t, ['partitions', 'drop', name(at(4)), '--now', at(6).toISOString()]);
    expect(liveRefused.code).toBe(2);
    expect(liveRefused.stderr).toMatch(/holds 1 queued or running job/);
    expect((await partitions(t.db)).map((p) => p.name)).toContain(name(at(4)));
  });

  it('archive mode: a slot that gets a partition again after its first was archived retires under a free name', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 0, retention: '1 day', retention_mode: 'archive' });
    await rotateAt(t, T0);
    await job(t.db, T0, 'completed');
    await rotateAt(t, at(2));
    const first = `qmaint_archive.jobs_p${T0.toISOString().slice(0, 10).replace(/-/g, '')}`;
    expect((await t.db.query(`SELECT to_regclass($1) IS NOT NULL AS here`, [first])).rows).toEqual([{ here: true }]);
    // A late job for the archived day: enqueue makes the slot's partition again.
    await job(t.db, T0, 'completed');
    expect((await partitions(t.db)).map((p) => p.name)).toContain(name(T0));
    await rotateAt(t, at(3));
    expect((await partitions(t.db)).map((p) => p.name)).not.toContain(name(T0));
    const tables = await t.db.query<{ relname: string }>(
      `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'qmaint_archive' AND c.relkind = 'r' AND c.relname LIKE $1 ORDER BY 1`,
      [`jobs_p${T0.toISOString().slice(0, 10).replace(/-/g, '')}%`],
    );
    const archived = [];
    for (const { relname } of tables.rows) {
      const { rows } = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint_archive."${relname}"`);
      archived.push({ relname, n: rows[0]!.n });
    }
    expect(archived).toEqual([
      { relname: `jobs_p${T0.toISOString().slice(0, 10).replace(/-/g, '')}`, n: '1' },
      { relname: expect.stringMatching(/^jobs_p20310310_a\d{14}$/) as string, n: '1' },
    ]);
    // Rotation goes on working afterwards.
    await rotateAt(t, at(4));
  });

  it('a 30-day (or 720-hour) interval means fixed 30-day partitions, not calendar months', async () => {
    const t = await freshDatabase();
    await t.db.query(`DELETE FROM qmaint.jobs`);
    for (const p of await partitions(t.db)) await t.db.query(`DROP TABLE ${p.name}`);
    for (const interval of ['30 days', '720 hours']) {
      await setPolicy(t.db, { partition_interval: interval, premake: 0 });
      expect((await t.db.query(`SELECT qmaint.check_partition_interval($1::interval) AS problem`, [interval])).rows).toEqual([{ problem: null }]);
    }
    // The 31st of a month: with month arithmetic this slot had empty bounds.
    await job(t.db, new Date('2031-01-31T10:00:00Z'));
    await rotateAt(t, new Date('2031-01-31T10:00:00Z'));
    const parts = await partitions(t.db);
    expect(parts.length).toBeGreaterThanOrEqual(1);
    for (const p of parts) expect(new Date(p.to).getTime() - new Date(p.from).getTime()).toBe(30 * DAY);
    const holding = parts.find((p) => p.from <= '2031-01-31T10:00:00.000Z' && p.to > '2031-01-31T10:00:00.000Z');
    expect(holding).toBeDefined();
    // Exactly one calendar month still means calendar months.
    expect(
      (await t.db.query(`SELECT qmaint.is_month('1 month') AS m, qmaint.is_month('30 days') AS d, qmaint.is_month('1 month 1 second') AS s`)).rows,
    ).toEqual([{ m: true, d: false, s: false }]);
  });

  it('rotate and an enqueue that makes the same partition do not collide: the later one waits, then skips', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 2 });
    await rotateAt(t, T0);
    const slot = at(3);
    expect((await partitions(t.db)).map((p) => p.name)).not.toContain(name(slot));
    // An enqueue's self-healing makes the slot's partition, its transaction still open.
    const producer = await t.client();
    await producer.query('BEGIN');
    await producer.query(`SELECT qmaint.enqueue('q', '{}', NULL, 0, 5, $1)`, [slot]);
    // Rotate plans the same partition and waits at its creation lock.
    const rotating = cli(t, ['partitions', 'rotate', '--now', at(1).toISOString()]);
    await waitingForCreationLock(t);
    await producer.query('COMMIT');
    const r = await rotating;
    expect(r.code, r.stderr).toBe(0);
    const skipped = r.json<{ tables: { skipped: { action: string; target: string; outcome: string; reason: string }[] }[] }>().tables.flatMap((x) => x.skipped);
    expect(skipped).toEqual([
      expect.objectContaining({
        action: 'create',
        target: name(slot),
        outcome: 'skipped',
        reason: expect.stringMatching(/another session made it meanwhile/) as string,
      }),
    ]);
    expect((await partitions(t.db)).filter((p) => p.name === name(slot))).toHaveLength(1);
    // The server-side rotate skips the same way.
    const server = await t.client();
    await server.query('BEGIN');
    await server.query(`SELECT qmaint.enqueue('q', '{}', NULL, 0, 5, $1)`, [at(4)]);
    const sql = t.db.query<{ r: { status: string } }>(`SELECT qmaint.rotate_all($1) AS r`, [at(2)]);
    await waitingForCreationLock(t);
    await server.query('COMMIT');
    expect((await sql).rows[0]!.r.status).toBe('ok');
    expect((await partitions(t.db)).filter((p) => p.name === name(at(4)))).toHaveLength(1);
  });

  it('create --until makes the missing partitions, refuses a flood, and keeps the default partition empty', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '2 days', default_partition: true });
    const c = await cli(t, ['partitions', 'create', '--until', at(3).toISOString(), '--now', T0.toISOString()]);
    expect(c.code, c.stderr).toBe(0);
    expect((await partitions(t.db)).map((p) => p.name)).toEqual(expect.arrayContaining([0, 1, 2, 3].map((n) => name(at(n)))));
    const flood = await cli(t, ['partitions', 'create', '--until', at(5000).toISOString(), '--now', T0.toISOString()]);
    expect(flood.code).toBe(2);
    expect(flood.stderr).toMatch(/more than the limit of 1000/);

    await rotateAt(t, T0);
    const parts = await partitions(t.db);
    expect(parts.filter((p) => p.isDefault).map((p) => p.name)).toEqual(['qmaint.jobs_default']);
    // Rows with no partition of their own land in the default partition; rotate moves them out.
    await t.db.query(`INSERT INTO qmaint.jobs (queue, created_at) VALUES ('d', $1), ('d', $2)`, [at(20), at(-30)]);
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.jobs_default`)).rows).toEqual([{ n: 2 }]);
    const r = await cli(t, ['partitions', 'rotate', '--now', T0.toISOString()]);
    expect(r.code, r.stderr).toBe(0);
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.jobs_default`)).rows).toEqual([{ n: 0 }]);
    const { rows } = await t.db.query<{ p: string }>(`SELECT tableoid::regclass::text AS p FROM qmaint.jobs WHERE queue = 'd' ORDER BY created_at`);
    expect(rows.map((x) => x.p)).toEqual([name(at(-30)), name(at(20))]);
    // The old one is live (queued): the mark stays below it.
    expect(new Date(await lowWater(t.db)).getTime()).toBeLessThanOrEqual(day(at(-30)).getTime());
  });
});
