import { describe, expect, it } from 'vitest';
import { MAINTENANCE_LOCK_KEY } from '../../src/db.js';
import { freshDatabase, pgbouncerUrl } from '../helpers.js';
import { at, cli, job, name, partitions, rotateAt, setPolicy, T0 } from './support.js';

describe('partition maintenance and locks', () => {
  it('a DDL statement blocked by an open transaction gives up after lock_timeout, names the blocker, exits 5 and leaves nothing half done', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day', lock_timeout: '150ms' });
    await rotateAt(t, T0);
    const id = await job(t.db, T0, 'completed');
    // Someone fixing data by hand in the expired partition, transaction left open.
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    // Its statement text carries data of its own; blocker reports never repeat it.
    await blocker.query(`UPDATE ${name(T0)} SET last_error = 'customer-secret-4711' WHERE id = ${id}`);

    const r = await cli(t, ['partitions', 'rotate', '--now', at(3).toISOString(), '--lock-retries', '1']);
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`pid ${pid}`);
    expect(r.stderr).toMatch(/idle in transaction/);
    const err = r.json<{ error: { code: string; details: { blockers: { pid: number; command: string }[] } } }>().error;
    expect(err.code).toBe('lock_timeout');
    expect(err.details.blockers.find((b) => b.pid === pid)).toMatchObject({ command: 'UPDATE' });
    expect(r.stdout + r.stderr).not.toContain('customer-secret-4711');
    // The runway made before the give-up stays; the expired partition is untouched: attached, no guard.
    const names = (await partitions(t.db)).map((p) => p.name);
    expect(names).toEqual([name(T0), name(at(1)), name(at(3)), name(at(4))]);
    const guard = await t.db.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = 'qmaint_retire'`, [name(T0)]);
    expect(guard.rows).toEqual([{ n: 0 }]);
    const run = await t.db.query(`SELECT status, runner FROM qmaint.maintenance_runs WHERE task = 'rotate' ORDER BY id DESC LIMIT 1`);
    expect(run.rows).toEqual([{ status: 'lock_timeout', runner: 'cli' }]);

    // The server-side rotate (pg_cron, the daemon) gives up the same way and says so in its result.
    const server = await t.db.query<{ r: { status: string; tables: Record<string, { blockers: { pid: number }[] }> } }>(`SELECT qmaint.rotate_all($1) AS r`, [
      at(3),
    ]);
    expect(server.rows[0]!.r.status).toBe('lock_timeout');
    expect(server.rows[0]!.r.tables['qmaint.jobs']!.blockers.map((b) => b.pid)).toContain(pid);
    expect(JSON.stringify(server.rows[0]!.r)).not.toContain('customer-secret-4711');
    const stored = await t.db.query<{ n: string }>(
      `SELECT count(*) AS n FROM qmaint.maintenance_runs WHERE coalesce(message, '') || coalesce(details::text, '') LIKE '%customer-secret%'`,
    );
    expect(stored.rows[0]!.n).toBe('0');
    expect((await partitions(t.db)).map((p) => p.name)).toContain(name(T0));

    await blocker.query('ROLLBACK');
    expect((await cli(t, ['partitions', 'rotate', '--now', at(3).toISOString()])).code).toBe(0);
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([name(at(3)), name(at(4))]);
  });

  it('one maintenance run at a time: a second run exits 0 saying another holds the lock', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 2, retention: '1 day' });
    const holder = await t.client();
    await holder.query('SELECT pg_advisory_lock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const before = await partitions(t.db);
    const r = await cli(t, ['partitions', 'rotate', '--now', T0.toISOString()]);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, skipped: true });
    expect(r.json<{ message: string }>().message).toMatch(new RegExp(`another maintenance run holds the lock \\(pid ${pid}`));
    const server = await t.db.query<{ r: { skipped: boolean } }>(`SELECT qmaint.rotate_all($1) AS r`, [T0]);
    expect(server.rows[0]!.r.skipped).toBe(true);
    expect(await partitions(t.db)).toEqual(before);
    await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);

    // Several at once, CLI and server side: each either works or skips; the result is the same runway.
    const runs = await Promise.all([
      cli(t, ['partitions', 'rotate', '--now', T0.toISOString()]),
      cli(t, ['partitions', 'rotate', '--now', T0.toISOString()]),
      t.db.query(`SELECT qmaint.rotate_all($1) AS r`, [T0]),
    ]);
    expect(runs.slice(0, 2).map((x) => ('code' in x ? x.code : 0))).toEqual([0, 0]);
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([0, 1, 2].map((n) => name(at(n))));
  });

  it('a DETACH ... CONCURRENTLY left pending by an interrupted run is found and finalized', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day', lock_timeout: '200ms' });
    await rotateAt(t, T0);
    await job(t.db, T0, 'completed');
    // An old snapshot makes DETACH ... CONCURRENTLY wait in its second phase, after the first committed.
    const reader = await t.client();
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await reader.query('SELECT count(*) FROM qmaint.jobs');
    const r = await cli(t, ['partitions', 'rotate', '--now', at(3).toISOString(), '--lock-retries', '1']);
    expect(r.code).toBe(5);
    const pending = await t.db.query(`SELECT inhdetachpending AS p FROM pg_inherits WHERE inhrelid = to_regclass($1)`, [name(T0)]);
    expect(pending.rows).toEqual([{ p: true }]);
    const list = await cli(t, ['partitions', 'list', '--now', at(3).toISOString()]);
    const row = list
      .json<{ tables: { partitions: { name: string; detachPending: boolean; retiring: boolean }[] }[] }>()
      .tables[0]!.partitions.find((p) => p.name === name(T0));
    expect(row).toMatchObject({ detachPending: true, retiring: true });
    await reader.query('COMMIT');

    const plan = await cli(t, ['partitions', 'plan', '--now', at(3).toISOString()]);
    const steps = plan.json<{ tables: { steps: { action: string; statement: string }[] }[] }>().tables[0]!.steps;
    expect(steps[0]).toMatchObject({ action: 'finalize', statement: `ALTER TABLE qmaint.jobs DETACH PARTITION ${name(T0)} FINALIZE` });
    expect(steps[1]).toMatchObject({ action: 'drop' });
    const fin = await cli(t, ['partitions', 'rotate', '--now', at(3).toISOString()]);
    expect(fin.code, fin.stderr).toBe(0);
    expect((await t.db.query(`SELECT to_regclass($1) AS r`, [name(T0)])).rows).toEqual([{ r: null }]);
  });

  it.runIf(!!pgbouncerUrl)('through PgBouncer (transaction pooling) it runs as one transaction under the transaction-level lock', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day' });
    const dry = await cli(t, ['partitions', 'rotate', '--dry-run', '--now', T0.toISOString()], t.bouncerUrl);
    expect(dry.code, dry.stderr).toBe(0);
    const dryDoc = dry.json<{ pooled: boolean; tables: { steps: { statement: string }[] }[] }>();
    expect(dryDoc.pooled).toBe(true);
    expect(dryDoc.tables[0]!.steps.some((s) => /CONCURRENTLY/.test(s.statement))).toBe(false);
    expect(dryDoc.tables[0]!.steps.some((s) => /DETACH PARTITION/.test(s.statement))).toBe(true);

    const r = await cli(t, ['partitions', 'rotate', '--now', T0.toISOString()], t.bouncerUrl);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ pooled: true, skipped: false });
    expect((await partitions(t.db)).map((p) => p.name)).toEqual([name(T0), name(at(1))]);
    // No session advisory lock was left behind on a pooled server connection. Other test files run
    // in other databases of the same cluster at the same time, so only this database's locks count.
    const left = await t.db.query(
      `SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    );
    expect(left.rows).toEqual([{ n: 0 }]);

    // A direct run holding the session lock makes the pooled run skip.
    const holder = await t.client();
    await holder.query('SELECT pg_advisory_lock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
    const skipped = await cli(t, ['partitions', 'rotate', '--now', at(3).toISOString()], t.bouncerUrl);
    expect(skipped.code).toBe(0);
    expect(skipped.json()).toMatchObject({ skipped: true, pooled: true });
    await holder.query('SELECT pg_advisory_unlock($1::bigint)', [MAINTENANCE_LOCK_KEY.toString()]);
  });
});
