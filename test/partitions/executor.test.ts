import { describe, expect, it } from 'vitest';
import { settingSpecs } from '../../src/config.js';
import type { Queryable } from '../../src/db.js';
import { QmaintError } from '../../src/errors.js';
import { detach } from '../../src/partitions/index.js';
import { executeSteps, type PlanStep, type StepEvent } from '../../src/plan.js';
import { freshDatabase } from '../helpers.js';
import { at, cli, job, name, partitions, rotateAt, setPolicy, T0 } from './support.js';

/** The retries both executors default to. */
async function lockRetries(db: Queryable): Promise<number> {
  return (await db.query<{ n: number }>('SELECT qmaint.lock_retries() AS n')).rows[0]!.n;
}

async function fillfactor(db: Queryable, relation: string): Promise<string | null> {
  const { rows } = await db.query<{ f: string | null }>(
    `SELECT (SELECT split_part(o, '=', 2) FROM unnest(reloptions) o WHERE o LIKE 'fillfactor=%') AS f FROM pg_class WHERE oid = to_regclass($1)`,
    [relation],
  );
  return rows[0]!.f;
}

/** A step the way the planning functions build one: its statement and the relation it locks. */
function alterStep(partition: string, statement: string): PlanStep {
  return {
    seq: 1,
    action: 'profile',
    target: partition,
    statement,
    lockLevel: `SHARE UPDATE EXCLUSIVE on ${partition}`,
    reason: 'test',
    transactional: true,
    locks: [partition],
  };
}

describe('one executor, in TypeScript and in SQL: truthful attempts, the same result shape', () => {
  it('TypeScript: a blocker held for the first two attempts makes the step succeed at attempt 3 or later, and says so', async () => {
    const t = await freshDatabase();
    await rotateAt(t, T0);
    const part = name(T0);
    const blocker = await t.client();
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE ${part} IN SHARE MODE`); // conflicts with ALTER TABLE ... SET
    const events: StepEvent[] = [];
    let released: Promise<unknown> | undefined;
    const results = await t.db.withClient((client) =>
      executeSteps(client, [alterStep(part, `ALTER TABLE ${part} SET (fillfactor = 90)`)], {
        lockTimeout: '100ms',
        retries: 5,
        onEvent: (event) => {
          events.push(event);
          if (event.outcome === 'retry' && event.attempts === 2) released = blocker.query('ROLLBACK');
        },
      }),
    );
    await released;
    const retries = events.filter((e) => e.outcome === 'retry');
    expect(retries.map((e) => e.attempts)).toEqual(retries.map((_e, i) => i + 1));
    expect(results).toEqual([{ seq: 1, action: 'profile', target: part, attempts: retries.length + 1, outcome: 'done', blockers: [], ms: results[0]!.ms }]);
    expect(results[0]!.attempts).toBeGreaterThanOrEqual(3);
    expect(events.at(-1)).toMatchObject({ outcome: 'done', attempts: results[0]!.attempts });
    expect(await fillfactor(t.db, part)).toBe('90');
  });

  it('TypeScript (CLI): a blocker held throughout: exit 5 after retries + 1 attempts (default retries = qmaint.lock_retries()), naming it', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day', lock_timeout: '100ms' });
    await rotateAt(t, T0);
    const id = await job(t.db, T0, 'completed');
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    await blocker.query(`UPDATE ${name(T0)} SET priority = priority WHERE id = ${id}`);

    const r = await cli(t, ['partitions', 'detach', name(T0), '--now', at(3).toISOString()]);
    expect(r.code, r.stderr).toBe(5);
    const err = r.json<{ error: { code: string; details: { attempts: number; step: { action: string; locks: string[] }; blockers: { pid: number }[] } } }>()
      .error;
    expect(err.code).toBe('lock_timeout');
    expect(err.details.attempts).toBe((await lockRetries(t.db)) + 1);
    expect(settingSpecs.lockRetries.default).toBe(await lockRetries(t.db));
    expect(err.details.step).toMatchObject({ action: 'guard', locks: [name(T0)] });
    expect(err.details.blockers.map((b) => b.pid)).toEqual([pid]);
    expect(r.stderr).toContain(`after ${err.details.attempts} tries`);

    const flag = await cli(t, ['partitions', 'detach', name(T0), '--now', at(3).toISOString(), '--lock-retries', '1']);
    expect(flag.code).toBe(5);
    expect(flag.json<{ error: { details: { attempts: number } } }>().error.details.attempts).toBe(2);
    expect((await partitions(t.db)).map((p) => p.name)).toContain(name(T0));
    await blocker.query('ROLLBACK');
  });

  it('SQL (qmaint.run_steps): a blocker held throughout: gave_up after retries + 1 attempts, with the blocker, nothing half done', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day' });
    await rotateAt(t, T0);
    const id = await job(t.db, T0, 'completed');
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    await blocker.query(`UPDATE ${name(T0)} SET priority = priority WHERE id = ${id}`);

    const { rows } = await t.db.query<{ r: { status: string; done: unknown[]; failed: Record<string, unknown>; blockers: { pid: number }[] } }>(
      `SELECT qmaint.run_steps(ARRAY(SELECT s FROM qmaint.detach_plan($1, $2, false, false) s), '100ms') AS r`,
      [name(T0), at(3)],
    );
    const r = rows[0]!.r;
    expect(r.status).toBe('lock_timeout');
    expect(r.done).toEqual([]);
    expect(r.failed).toMatchObject({ seq: 1, action: 'detach', target: name(T0), attempts: (await lockRetries(t.db)) + 1, outcome: 'gave_up' });
    expect((r.failed.blockers as { pid: number }[]).map((b) => b.pid)).toEqual([pid]);
    expect(r.blockers.map((b) => b.pid)).toEqual([pid]);
    expect((await partitions(t.db)).map((p) => p.name)).toContain(name(T0));
    await blocker.query('ROLLBACK');
  });

  it('the runner in pooled mode (one transaction, run_steps) gives up with the same details as on a direct connection', async () => {
    const t = await freshDatabase();
    await setPolicy(t.db, { premake: 1, retention: '1 day', lock_timeout: '100ms' });
    await rotateAt(t, T0);
    const id = await job(t.db, T0, 'completed');
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    await blocker.query(`UPDATE ${name(T0)} SET priority = priority WHERE id = ${id}`);
    const error = await detach(t.db, name(T0), { now: at(3), mode: 'pooled', retries: 2 }).then(
      () => null,
      (e: unknown) => e,
    );
    await blocker.query('ROLLBACK');
    expect(error).toBeInstanceOf(QmaintError);
    const e = error as QmaintError;
    expect(e.code).toBe('lock_timeout');
    expect(e.details).toMatchObject({ step: { action: 'detach', target: name(T0), locks: ['qmaint.jobs', name(T0)] }, attempts: 3, completedSteps: 0 });
    expect((e.details!.blockers as { pid: number; applicationName: string }[]).map((b) => [b.pid, b.applicationName])).toEqual([[pid, 'qmaint-test']]);
  });

  it("SQL (qmaint.run_steps): a blocker gone at the third attempt: done with attempts 3, in the TypeScript executor's shape", async () => {
    const t = await freshDatabase();
    await rotateAt(t, T0);
    const part = name(T0);
    const blocker = await t.client();
    const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE ${part} IN SHARE MODE`);
    // A sequence survives the rollback of a failed attempt: at the third one the
    // statement ends the blocking session (and waits until its locks are gone) before its ALTER.
    await t.db.query('CREATE SEQUENCE public.attempts');
    const statement =
      `DO $$ BEGIN IF nextval('public.attempts') >= 3 THEN PERFORM pg_terminate_backend(${pid}); ` +
      `WHILE EXISTS (SELECT 1 FROM pg_locks WHERE pid = ${pid}) LOOP PERFORM pg_sleep(0.01); END LOOP; END IF; END $$; ` +
      `ALTER TABLE ${part} SET (fillfactor = 80)`;
    const step = alterStep(part, statement);
    const { rows } = await t.db.query<{ r: { status: string; done: Record<string, unknown>[] } }>(
      `SELECT qmaint.run_steps(ARRAY[ROW($1::integer, $2, $3, $4, $5, $6, $7, $8::text[])::qmaint.plan_step], '100ms', 5) AS r`,
      [step.seq, step.action, step.target, step.statement, step.lockLevel, step.reason, step.transactional, step.locks],
    );
    const r = rows[0]!.r;
    expect(r.status).toBe('ok');
    expect(r.done).toEqual([{ seq: 1, action: 'profile', target: part, attempts: 3, outcome: 'done', blockers: [], ms: r.done[0]!.ms }]);
    expect(await fillfactor(t.db, part)).toBe('80');
    expect((await t.db.query<{ n: string }>('SELECT last_value AS n FROM public.attempts')).rows[0]!.n).toBe('3');

    // The TypeScript executor reports the same step with the same fields.
    const [ts] = await t.db.withClient((client) =>
      executeSteps(client, [alterStep(part, `ALTER TABLE ${part} SET (fillfactor = 70)`)], { lockTimeout: '100ms' }),
    );
    expect(Object.keys(ts!).sort()).toEqual(Object.keys(r.done[0]!).sort());
  });
});
