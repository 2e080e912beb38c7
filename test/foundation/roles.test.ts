import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/db.js';
import { FUNCTIONS_DIR, migrate } from '../../src/migrate.js';
import { claimQuery, LOW_WATER_SQL } from '../../src/queue/claim.js';
import { enqueueMany } from '../../src/queue/enqueue.js';
import { COMPLETE_SQL, FAIL_SQL, HEARTBEAT_SQL, READY_SQL, RELEASE_SQL, RESCUE_SQL, fenceKey } from '../../src/queue/statements.js';
import { ROLE_NAMES, type RoleKind } from '../../src/roles.js';
import { cleanEnv, eventually, freshDatabase, pgcronUrl, ROOT, runCli, type TestDatabase } from '../helpers.js';

// Roles are cluster-wide and other test runs may share the server: every
// login made here has a random name and is dropped after the file; the four
// group roles are created by whichever install comes first and never dropped.

interface Login {
  name: string;
  url: string;
  client: pg.Client;
}

const logins: { t: TestDatabase; name: string; client: pg.Client }[] = [];

afterAll(async () => {
  for (const { client } of logins) await client.end().catch(() => undefined);
  // Each database's pool may be closed already: a client of our own per database.
  for (const { t, name } of logins.reverse()) {
    const admin = new pg.Client({ connectionString: t.url });
    await admin.connect();
    try {
      await admin.query(`DROP OWNED BY "${name}"`);
      await admin.query(`DROP ROLE "${name}"`);
    } finally {
      await admin.end();
    }
  }
});

/** A LOGIN role with a random name, member of a qmaint group role (or of none), connected to t. */
async function login(t: TestDatabase, kind: RoleKind | null): Promise<Login> {
  const name = `qmt_login_${randomBytes(5).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  await t.db.query(`CREATE ROLE "${name}" LOGIN PASSWORD '${password}'${kind ? ` IN ROLE "${ROLE_NAMES[kind]}"` : ''}`);
  const url = new URL(t.url);
  url.username = name;
  url.password = password;
  const client = new pg.Client({ connectionString: url.toString() });
  client.on('error', () => undefined);
  logins.push({ t, name, client });
  await client.connect();
  return { name, url: url.toString(), client };
}

/** SQLSTATE of a failing query (the test fails when it succeeds). */
async function denied(client: pg.Client, sql: string, values: unknown[] = []): Promise<string> {
  await client.query('BEGIN');
  try {
    await client.query(sql, values);
  } catch (err) {
    return (err as { code: string }).code;
  } finally {
    await client.query('ROLLBACK');
  }
  throw new Error(`expected permission denied, but it ran: ${sql}`);
}

/** Owners and privileges of every qmaint object, and the four roles: what install may change. */
async function catalogState(t: TestDatabase): Promise<unknown> {
  const { rows } = await t.db.query(
    `SELECT 'schema' AS k, nspname::text AS n, pg_get_userbyid(nspowner)::text AS o, nspacl::text AS acl FROM pg_namespace WHERE nspname = 'qmaint'
     UNION ALL SELECT 'rel', c.oid::regclass::text, pg_get_userbyid(c.relowner), c.relacl::text FROM pg_class c WHERE c.relnamespace = 'qmaint'::regnamespace
     UNION ALL SELECT 'col', a.attrelid::regclass::text || '.' || a.attname, NULL, a.attacl::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                WHERE c.relnamespace = 'qmaint'::regnamespace AND a.attacl IS NOT NULL
     UNION ALL SELECT 'fn', p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.proacl::text FROM pg_proc p WHERE p.pronamespace = 'qmaint'::regnamespace
     UNION ALL SELECT 'type', t.oid::regtype::text, pg_get_userbyid(t.typowner), t.typacl::text FROM pg_type t WHERE t.typnamespace = 'qmaint'::regnamespace
     UNION ALL SELECT 'role', rolname::text, rolcanlogin::text, rolsuper::text FROM pg_roles WHERE rolname = ANY ($1::text[])
     ORDER BY 1, 2`,
    [Object.values(ROLE_NAMES)],
  );
  return rows;
}

/** qmaint functions PUBLIC may execute. */
async function publicFunctions(t: TestDatabase): Promise<string[]> {
  const { rows } = await t.db.query<{ fn: string }>(
    `SELECT p.oid::regprocedure::text AS fn FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
      WHERE p.pronamespace = 'qmaint'::regnamespace AND a.grantee = 0 AND a.privilege_type = 'EXECUTE' ORDER BY 1`,
  );
  return rows.map((r) => r.fn);
}

async function install(t: TestDatabase, ...extra: string[]) {
  return runCli(['roles', 'install', '--json', '--database-url', t.url, ...extra]);
}

describe('qmaint roles install', () => {
  // First to install, so that on a fresh server (the embedded one) both race to create the roles.
  it('two installs in two databases at the same moment both succeed; each role is created once', async () => {
    const [a, b] = await Promise.all([freshDatabase(), freshDatabase()]);
    const { rows } = await a.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY ($1::text[])`, [Object.values(ROLE_NAMES)]);
    const [ra, rb] = await Promise.all([install(a), install(b)]);
    expect([ra.code, rb.code], ra.stderr + rb.stderr).toEqual([0, 0]);
    expect(await publicFunctions(a)).toEqual([]);
    expect(await publicFunctions(b)).toEqual([]);
    const created = [ra, rb].flatMap((r) =>
      r
        .json<{ roles: { role: string; created: boolean }[] }>()
        .roles.filter((x) => x.created)
        .map((x) => x.role),
    );
    // Roles are cluster-wide: on a server that had them already, nobody creates them.
    expect(created.sort()).toEqual(rows[0]!.n === 0 ? Object.values(ROLE_NAMES).sort() : []);
  });

  it('--dry-run prints the SQL with its locks and changes nothing', async () => {
    const t = await freshDatabase();
    const before = await catalogState(t);
    const open = await publicFunctions(t);
    expect(open.length).toBeGreaterThan(50);
    // The SECURITY DEFINER functions are closed to PUBLIC even before roles are installed.
    expect(open.filter((fn) => /^qmaint\.(ensure_jobs_partition|lower_low_water|explain_claim)\(/.test(fn))).toEqual([]);
    expect(open).toContain('qmaint.enqueue(text,jsonb,timestamp with time zone,integer,integer,timestamp with time zone,integer)');
    const r = await install(t, '--dry-run');
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ dryRun: boolean; steps: { statement: string; lockLevel: string }[] }>();
    expect(doc.dryRun).toBe(true);
    const sql = doc.steps.map((s) => s.statement);
    expect(sql).toContain('ALTER SCHEMA qmaint OWNER TO "qmaint_admin"');
    expect(sql).toContain('REVOKE ALL ON ALL ROUTINES IN SCHEMA qmaint FROM PUBLIC, "qmaint_producer", "qmaint_worker", "qmaint_readonly"');
    expect(doc.steps.find((s) => s.statement === 'ALTER TABLE qmaint.jobs OWNER TO "qmaint_admin"')?.lockLevel).toBe('ACCESS EXCLUSIVE on qmaint.jobs');
    const text = await runCli(['roles', 'install', '--dry-run', '--database-url', t.url]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('GRANT USAGE ON SEQUENCE qmaint.jobs_id_seq TO "qmaint_producer";');
    expect(await catalogState(t)).toEqual(before);
  });

  it('installs once: every object owned by qmaint_admin, nothing executable by PUBLIC; a second run changes nothing', async () => {
    const t = await freshDatabase();
    const first = await install(t);
    expect(first.code, first.stderr).toBe(0);
    expect(await publicFunctions(t)).toEqual([]);
    const { rows: foreign } = await t.db.query(
      `SELECT c.oid::regclass::text AS rel FROM pg_class c WHERE c.relnamespace = 'qmaint'::regnamespace AND c.relowner <> 'qmaint_admin'::regrole
       UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'qmaint'::regnamespace AND p.proowner <> 'qmaint_admin'::regrole`,
    );
    expect(foreign).toEqual([]);
    const { rows: roles } = await t.db.query<{ rolname: string; rolcanlogin: boolean }>(
      `SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = ANY ($1::text[]) ORDER BY 1`,
      [Object.values(ROLE_NAMES)],
    );
    expect(roles).toEqual(
      Object.values(ROLE_NAMES)
        .sort()
        .map((rolname) => ({ rolname, rolcanlogin: false })),
    );
    const state = await catalogState(t);
    const second = await install(t);
    expect(second.code, second.stderr).toBe(0);
    expect(second.json()).toMatchObject({ ownerChanges: [], roles: Object.values(ROLE_NAMES).map((role) => ({ role, created: false })) });
    expect(await catalogState(t)).toEqual(state);
  });

  it('bad input exits 2 with one line; a role that may not create roles exits 3', async () => {
    const t = await freshDatabase();
    const before = await catalogState(t);
    for (const [args, message] of [
      [['--member', 'boss=alice'], /--member "boss=alice" must be KIND=LOGIN/],
      [['--member', 'worker=no such'], /member login "no such" is not a valid name/],
      [['--member', `worker=qmt_missing_${randomBytes(4).toString('hex')}`], /there is no role qmt_missing_/],
      [['--lock-timeout', '2s', '--frobnicate'], /Unknown argument: frobnicate/],
    ] as const) {
      const r = await runCli(['roles', 'install', '--database-url', t.url, ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const nobody = await login(t, null);
    const r = await runCli(['roles', 'install', '--database-url', nobody.url]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(new RegExp(`error: role ${nobody.name} may not create roles: run qmaint roles install as a superuser`));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // CREATEROLE without owning the schema: refused before any role or membership is made.
    const creator = await login(t, null);
    await t.db.query(`ALTER ROLE "${creator.name}" CREATEROLE`);
    const notOwner = await runCli(['roles', 'install', '--database-url', creator.url]);
    expect(notOwner.code).toBe(3);
    expect(notOwner.stderr).toMatch(new RegExp(`error: role ${creator.name} may not hand schema qmaint \\(owned by \\w+\\) to qmaint_admin`));
    expect(notOwner.stderr.trim().split('\n')).toHaveLength(1);
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_auth_members WHERE member = $1::regrole`, [creator.name]);
    expect(rows[0]!.n).toBe(0);
    expect(await catalogState(t)).toEqual(before);
  });

  it('--member adds a login to a group role', async () => {
    const t = await freshDatabase();
    const someone = await login(t, null);
    const r = await install(t, '--member', `readonly=${someone.name}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ members: [{ role: 'qmaint_readonly', member: someone.name, present: false }] });
    const { rows } = await t.db.query<{ member: boolean }>(`SELECT pg_has_role($1, 'qmaint_readonly', 'MEMBER') AS member`, [someone.name]);
    expect(rows[0]!.member).toBe(true);
    expect((await someone.client.query<{ n: number }>('SELECT count(*)::int AS n FROM qmaint.jobs')).rows[0]!.n).toBe(0);
  });
});

describe('each role can do its job and nothing else', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await freshDatabase();
    const r = await install(t);
    if (r.code !== 0) throw new Error(`roles install failed: ${r.stderr}`);
    await t.db.query(`CREATE TABLE public.secrets (s text); INSERT INTO public.secrets VALUES ('x')`);
  });

  it('producer: enqueue (one, COPY, into a missing partition); no claim, no reads, no updates', async () => {
    const p = await login(t, 'producer');
    const id = (await p.client.query<{ id: string }>(`SELECT qmaint.enqueue('prod', '{"a":1}') AS id`)).rows[0]!.id;
    expect(await enqueueMany(p.client, 'prod', [{ b: 1 }, { b: 2 }])).toBe(2);
    // A created_at with no partition: enqueue makes it through the SECURITY DEFINER path.
    const far = '2031-07-04T00:00:00Z';
    await p.client.query(`SELECT qmaint.enqueue('prod', '{}', p_created_at => $1)`, [far]);
    const { rows } = await t.db.query<{ id: string; status: string }>(`SELECT id::text, status::text FROM qmaint.jobs WHERE queue = 'prod' ORDER BY id`);
    expect(rows.map((x) => x.status)).toEqual(['queued', 'queued', 'queued', 'queued']);
    expect(rows[0]!.id).toBe(id);
    const part = await t.db.query<{ owner: string }>(
      `SELECT pg_get_userbyid(c.relowner)::text AS owner FROM pg_class c WHERE c.oid = (SELECT tableoid FROM qmaint.jobs WHERE created_at = $1)`,
      [far],
    );
    expect(part.rows).toEqual([{ owner: 'qmaint_admin' }]);

    const claim = claimQuery({ queue: 'prod', batch: 10, leaseSeconds: 30, workerId: 'p', lowWater: null });
    expect(await denied(p.client, claim.text, claim.values)).toBe('42501');
    expect(await denied(p.client, 'SELECT * FROM qmaint.jobs')).toBe('42501');
    expect(await denied(p.client, `UPDATE qmaint.jobs SET status = 'completed'`)).toBe('42501');
    expect(await denied(p.client, `DELETE FROM qmaint.jobs`)).toBe('42501');
    expect(await denied(p.client, `INSERT INTO qmaint.jobs (queue, status) VALUES ('prod', 'running')`)).toBe('42501');
    expect(await denied(p.client, RESCUE_SQL)).toBe('42501');
    expect(await denied(p.client, `SELECT qmaint.ensure_partition('qmaint.jobs', now() + interval '400 days')`)).toBe('42501');
    expect(await denied(p.client, `SELECT qmaint.rotate_all()`)).toBe('42501');
  });

  it('worker: claim, heartbeat, complete, fail, release, rescue, LISTEN, low-water mark; nothing else', async () => {
    await enqueueMany(
      t.db,
      'work',
      Array.from({ length: 4 }, (_, i) => ({ i })),
    );
    const w = await login(t, 'worker');
    const lw = (await w.client.query<{ low_water: Date }>(LOW_WATER_SQL)).rows[0]!.low_water;
    const claim = claimQuery({ queue: 'work', batch: 4, leaseSeconds: 30, workerId: 'w1', lowWater: lw });
    const claimed = (await w.client.query<{ id: string; created_at: Date; attempt: number }>(claim.text, claim.values)).rows;
    expect(claimed).toHaveLength(4);
    const [a, b, c, d] = claimed as [(typeof claimed)[0], (typeof claimed)[0], (typeof claimed)[0], (typeof claimed)[0]];
    const fence = (x: typeof a) => fenceKey(x.id, x.attempt);
    const held = await w.client.query<{ id: string }>(HEARTBEAT_SQL, [[a.id, b.id], [a.created_at, b.created_at], [fence(a), fence(b)], 'w1', 60, 'work']);
    expect(held.rows).toHaveLength(2);
    expect((await w.client.query(COMPLETE_SQL, [[a.id], [a.created_at], [fence(a)], 'w1', 'work'])).rowCount).toBe(1);
    expect((await w.client.query(FAIL_SQL, [[b.id], [b.created_at], [fence(b)], ['boom'], 'w1', 1, 60, 'work'])).rowCount).toBe(1);
    expect((await w.client.query(RELEASE_SQL, [[c.id], [c.created_at], [fence(c)], 'w1', 'work'])).rowCount).toBe(1);
    // d's lease runs out; the worker's rescue puts it back. With a mark set,
    // the rescue also asks whether a live job lies below it (qmaint.live_below).
    await t.db.query(`UPDATE qmaint.jobs SET locked_until = now() - interval '1 minute' WHERE id = $1`, [d.id]);
    await t.db.query(`UPDATE qmaint.partition_policy SET low_water = '2000-01-01Z' WHERE parent_table = 'qmaint.jobs'`);
    expect((await w.client.query<{ result: { requeued: number } }>(RESCUE_SQL)).rows[0]!.result.requeued).toBe(1);
    await t.db.query(`UPDATE qmaint.partition_policy SET low_water = $1 WHERE parent_table = 'qmaint.jobs'`, [lw]);
    await w.client.query('LISTEN qmaint_jobs');
    expect((await w.client.query<{ ready: boolean }>(READY_SQL, ['work', '-infinity'])).rows[0]!.ready).toBe(true);
    const { rows } = await t.db.query<{ id: string; status: string; last_error: string | null }>(
      `SELECT id::text, status::text, last_error FROM qmaint.jobs WHERE queue = 'work' ORDER BY id`,
    );
    expect(rows.map((x) => [x.id, x.status])).toEqual([
      [a.id, 'completed'],
      [b.id, 'queued'],
      [c.id, 'queued'],
      [d.id, 'queued'],
    ]);
    expect(rows[1]!.last_error).toBe('boom');

    for (const sql of [
      'DROP TABLE qmaint.jobs',
      'ALTER TABLE qmaint.jobs ADD COLUMN x int',
      'TRUNCATE qmaint.jobs',
      'DELETE FROM qmaint.jobs',
      `UPDATE qmaint.jobs SET payload = '{}', queue = 'other'`,
      `INSERT INTO qmaint.jobs (queue) VALUES ('x')`,
      'SELECT * FROM public.secrets',
      'SELECT * FROM qmaint.maintenance_runs',
      `UPDATE qmaint.partition_policy SET low_water = '-infinity'`,
      `SELECT qmaint.rotate_all()`,
      `SELECT qmaint.run_steps(ARRAY[]::qmaint.plan_step[], '1s')`,
      `SELECT qmaint.vacuum_tune_all()`,
      `SELECT qmaint.run_task('rotate', 'test')`,
      `SELECT qmaint.enqueue('x', '{}')`,
      `SELECT * FROM qmaint.retry_jobs(NULL, 'work')`,
    ]) {
      expect(await denied(w.client, sql), sql).toBe('42501');
    }
  });

  it('worker: qmaint work drains a queue as a member of qmaint_worker', async () => {
    await enqueueMany(t.db, 'cli', [{ n: 1 }, { n: 2 }, { n: 3 }]);
    const w = await login(t, 'worker');
    const handler = path.join(ROOT, 'test', 'foundation', 'fixtures', 'noop-handler.mjs');
    const run = await runCli(['work', '--queue', 'cli', '--handler', handler, '--drain', '--json'], { env: cleanEnv({ DATABASE_URL: w.url }) });
    expect(run.code, run.stderr).toBe(0);
    expect(run.json()).toMatchObject({ completed: 3, failed: 0 });
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = 'cli' AND status = 'completed'`);
    expect(rows[0]!.n).toBe(3);
    const rotate = await runCli(['partitions', 'rotate', '--database-url', w.url]);
    expect(rotate.code).toBe(3);
    expect(rotate.stderr).toMatch(/permission denied/);
  });

  it("readonly: status estimates the history from the partitions' statistics, which pg_stats hides from the role", async () => {
    await enqueueMany(
      t.db,
      'ro-history',
      Array.from({ length: 300 }, (_, n) => ({ n })),
    );
    await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE queue = 'ro-history'`);
    await t.db.query('ANALYZE qmaint.jobs');
    const ro = await login(t, 'readonly');
    const { rows: visible } = await ro.client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stats WHERE attname = 'status' AND tablename IN (SELECT relname FROM pg_class WHERE relispartition)`,
    );
    expect(visible[0]!.n).toBe(0);
    type Report = { queues: { queue: string; counts: Record<string, number>; estimated: Record<string, boolean> }[] };
    const mine = async (url: string) => {
      const r = await runCli(['status', '--json', '--database-url', url]);
      expect(r.code, r.stderr).toBe(0);
      return r.json<Report>().queues.find((q) => q.queue === 'ro-history')!;
    };
    const asReadonly = await mine(ro.url);
    expect(asReadonly.estimated.completed).toBe(true);
    expect(asReadonly.counts.completed).toBeGreaterThan(0);
    expect(asReadonly).toEqual(await mine(t.url));
  });

  it('readonly: status, jobs list, partitions list, health, explain dequeue without ANALYZE; no writes', async () => {
    const ro = await login(t, 'readonly');
    const status = await runCli(['status', '--json', '--database-url', ro.url]);
    expect(status.code, status.stderr).toBe(0);
    const total = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.jobs`)).rows[0]!.n;
    const counted = status
      .json<{ queues: { counts: Record<string, number> }[] }>()
      .queues.reduce((s, q) => s + Object.values(q.counts).reduce((x, y) => x + y, 0), 0);
    expect(counted).toBe(total);
    const list = await runCli(['jobs', 'list', '--json', '--limit', '1000', '--database-url', ro.url]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.json<{ jobs: unknown[] }>().jobs).toHaveLength(total);
    const parts = await runCli(['partitions', 'list', '--json', '--database-url', ro.url]);
    expect(parts.code, parts.stderr).toBe(0);
    // health and explain dequeue: the claim is planned (qmaint.explain_claim), not run.
    const health = await runCli(['health', '--json', '--queue', 'work', '--database-url', ro.url]);
    expect([0, 4], health.stderr).toContain(health.code);
    const report = health.json<{ checks: { check: string; observed: string }[]; dequeue: { analyzed: boolean; rules: { rule: string }[] } }>();
    expect(report.checks.length).toBeGreaterThan(5);
    expect(report.dequeue.analyzed).toBe(false);
    expect(report.dequeue.rules.map((x) => x.rule)).toEqual(['claim_index', 'pruning', 'dead_rows', 'planning_time']);
    const explain = await runCli(['explain', 'dequeue', '--json', '--queue', 'work', '--database-url', ro.url]);
    expect(explain.code, explain.stderr).toBe(0);
    const plan = explain.json<{ analyzed: boolean; claimed: number; explain: { Plan: { 'Node Type': string } } }>();
    expect(plan).toMatchObject({ analyzed: false, claimed: 0 });
    expect(plan.explain.Plan['Node Type']).toBe('ModifyTable');
    const queued = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = 'work' AND status = 'queued'`)).rows[0]!.n;
    expect(queued).toBeGreaterThan(0);
    const forced = await runCli(['explain', 'dequeue', '--analyze', '--queue', 'work', '--database-url', ro.url]);
    expect(forced.code).toBe(3);
    // explain_claim plans the claim statement and nothing else.
    expect(await denied(ro.client, `SELECT qmaint.explain_claim('SELECT * FROM public.secrets', 'q', NULL, 1, 'w', 1)`)).toBe('42501');
    for (const sql of [
      `INSERT INTO qmaint.jobs (queue) VALUES ('x')`,
      `UPDATE qmaint.jobs SET status = 'failed'`,
      'DELETE FROM qmaint.jobs',
      `UPDATE qmaint.partition_policy SET low_water = '-infinity'`,
      `SELECT qmaint.enqueue('x', '{}')`,
      `SELECT qmaint.lower_low_water('-infinity')`,
      `SELECT qmaint.rescue_expired()`,
      `SELECT qmaint.rotate_all()`,
      `SELECT * FROM qmaint.cancel_jobs(NULL, 'work')`,
      'SELECT * FROM public.secrets',
    ]) {
      expect(await denied(ro.client, sql), sql).toBe('42501');
    }
    expect((await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = 'work' AND status = 'queued'`)).rows[0]!.n).toBe(queued);
    const cancel = await runCli(['jobs', 'cancel', '--queue', 'work', '--database-url', ro.url]);
    expect(cancel.code).toBe(3);
  });

  it('admin: rotate makes partitions owned by qmaint_admin, tune sets storage parameters, scheduled tasks run', async () => {
    const adm = await login(t, 'admin');
    const ahead = new Date(Date.now() + 20 * 86_400_000).toISOString();
    const rotate = await runCli(['partitions', 'rotate', '--json', '--now', ahead, '--database-url', adm.url]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const { rows: owners } = await t.db.query<{ owner: string; n: number }>(
      `SELECT pg_get_userbyid(c.relowner)::text AS owner, count(*)::int AS n FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'qmaint.jobs'::regclass AND c.relkind = 'r' GROUP BY 1`,
    );
    expect(owners).toHaveLength(1);
    expect(owners[0]!.owner).toBe('qmaint_admin');
    const newest = await t.db.query<{ upper: Date }>(`SELECT max(upper_bound) AS upper FROM qmaint.partitions_of('qmaint.jobs')`);
    expect(newest.rows[0]!.upper.getTime()).toBeGreaterThan(Date.parse(ahead));
    // Another member re-profiles a partition the first one created: the
    // newest partition loses its storage parameters, tune puts them back.
    const newestPart = await t.db.query<{ rel: string; opts: string[] }>(
      `SELECT partition::text AS rel, (SELECT reloptions FROM pg_class WHERE oid = partition) AS opts
         FROM qmaint.partitions_of('qmaint.jobs') ORDER BY upper_bound DESC LIMIT 1`,
    );
    const { rel, opts } = newestPart.rows[0]!;
    expect(opts.length).toBeGreaterThan(0);
    const keys = opts.map((o) => /^([a-z_.]+)=/.exec(o)![1]!);
    await t.db.query(`ALTER TABLE ${rel} RESET (${keys.join(', ')})`);
    const other = await login(t, 'admin');
    const tune = await runCli(['vacuum', 'tune', '--server-side', '--json', '--database-url', other.url]);
    expect(tune.code, tune.stderr).toBe(0);
    const after = await t.db.query<{ opts: string[] | null }>(`SELECT reloptions AS opts FROM pg_class WHERE oid = $1::regclass`, [rel]);
    expect(after.rows[0]!.opts).toEqual(opts);
    const run = await other.client.query<{ status: string }>(`SELECT qmaint.run_task('rotate', 'cli') ->> 'status' AS status`);
    expect(run.rows[0]!.status).toBe('ok');
    expect(await denied(other.client, 'SELECT * FROM public.secrets')).toBe('42501');
  });

  it('migrate hands a new function to qmaint_admin and keeps it from PUBLIC', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-roles-fn-'));
    cpSync(FUNCTIONS_DIR, dir, { recursive: true });
    writeFileSync(
      path.join(dir, '99_later.sql'),
      `CREATE OR REPLACE FUNCTION qmaint.added_later() RETURNS integer LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT 42 $$;
       CREATE OR REPLACE FUNCTION qmaint.added_later_write() RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ DELETE FROM qmaint.jobs WHERE false $$;`,
    );
    const adm = await login(t, 'admin');
    const db = await connect({ databaseUrl: adm.url });
    try {
      const result = await migrate(db, { functionsDir: dir });
      expect(result.functions.map((f) => f.file)).toEqual(['99_later.sql']);
    } finally {
      await db.close();
    }
    expect(await publicFunctions(t)).toEqual([]);
    const { rows } = await t.db.query<{ fn: string; owner: string; ro: boolean; worker: boolean }>(
      `SELECT p.proname::text AS fn, pg_get_userbyid(p.proowner)::text AS owner,
              has_function_privilege('qmaint_readonly', p.oid, 'EXECUTE') AS ro, has_function_privilege('qmaint_worker', p.oid, 'EXECUTE') AS worker
         FROM pg_proc p WHERE p.pronamespace = 'qmaint'::regnamespace AND p.proname LIKE 'added_later%' ORDER BY 1`,
    );
    expect(rows).toEqual([
      { fn: 'added_later', owner: 'qmaint_admin', ro: true, worker: false },
      { fn: 'added_later_write', owner: 'qmaint_admin', ro: false, worker: false },
    ]);
  });
});

// Needs pg_cron (CI's PostgreSQL 15 pass, or scripts/pg15.sh): pg_cron keeps its
// jobs in another database there, as docs/scheduling.md describes.
describe.skipIf(pgcronUrl === undefined)('pg_cron jobs run as a member of qmaint_admin', () => {
  it('a member installs the jobs with the documented grants; a real tick rotates as that member', { timeout: 150_000 }, async () => {
    const t = await freshDatabase();
    const r = await install(t);
    expect(r.code, r.stderr).toBe(0);
    const ops = await login(t, 'admin');
    const cron = new pg.Client({ connectionString: pgcronUrl });
    await cron.connect();
    try {
      await cron.query(`GRANT USAGE ON SCHEMA cron TO "${ops.name}"`);
      await cron.query(
        `GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, boolean), cron.alter_job(bigint, text, text, text, text, boolean) TO "${ops.name}"`,
      );
      await cron.query(`GRANT pg_read_all_settings TO "${ops.name}"`);
      // Take the runway away, so rotate has partitions to create.
      const future = await t.db.query<{ partition: string }>(
        `SELECT partition::text FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default AND lower_bound > now()`,
      );
      for (const p of future.rows) await t.db.query(`DROP TABLE ${p.partition}`);
      const schedule = await runCli(
        [
          'schedule',
          'install',
          '--pg-cron',
          '--rotate-cron',
          '* * * * *',
          '--vacuum-cron',
          'off',
          '--rescue-cron',
          'off',
          '--health-cron',
          'off',
          '--recurring-cron',
          'off',
        ],
        { env: cleanEnv({ DATABASE_URL: ops.url }) },
      );
      expect(schedule.code, schedule.stderr).toBe(0);
      const jobs = await cron.query<{ username: string }>(`SELECT username FROM cron.job WHERE database = $1`, [t.name]);
      expect(jobs.rows).toEqual([{ username: ops.name }]);
      const run = await eventually(
        async () => {
          const { rows } = await t.db.query<{ status: string; message: string | null }>(
            `SELECT status, message FROM qmaint.maintenance_runs WHERE task = 'rotate' AND runner = 'pg_cron' AND status <> 'running' ORDER BY id LIMIT 1`,
          );
          return rows[0];
        },
        90_000,
        1000,
      );
      expect(run.status, run.message ?? '').toBe('ok');
      const { rows } = await t.db.query<{ n: number; foreign: number }>(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE c.relowner <> 'qmaint_admin'::regrole)::int AS foreign
           FROM qmaint.partitions_of('qmaint.jobs') p JOIN pg_class c ON c.oid = p.partition WHERE p.lower_bound > now()`,
      );
      expect(rows[0]!.n).toBeGreaterThan(0);
      expect(rows[0]!.foreign).toBe(0);
    } finally {
      await cron.query(`SELECT cron.unschedule(jobid) FROM cron.job WHERE database = $1`, [t.name]);
      await cron.query(`DROP OWNED BY "${ops.name}"`);
      await cron.query(`REVOKE pg_read_all_settings FROM "${ops.name}"`);
      await cron.end();
    }
  });
});
