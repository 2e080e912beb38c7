import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { seedTableSql, startLoad } from '../../scripts/adopt/load.js';
import { freshDatabase, runCli, type TestDatabase } from '../helpers.js';

/** Seed rows in the regular suite (the 1M-row run is `npm run bench -- adopt`). */
const ROWS = 20_000;
const LOCK_TIMEOUT_MS = 2000;
const DAY = 86_400_000;

const cli = (t: TestDatabase, args: string[]) => runCli([...args, '--database-url', t.url, '--json'], { timeoutMs: 120_000 });

/** What a failed or dry adoption must leave exactly as it was: the catalog of schema app and the policies. */
async function fingerprint(t: TestDatabase): Promise<unknown> {
  const { rows } = await t.db.query(
    `SELECT c.relname, c.relkind, c.relispartition,
            ARRAY(SELECT conname || ':' || convalidated FROM pg_constraint WHERE conrelid = c.oid ORDER BY 1) AS constraints,
            (SELECT array_agg(parent_table ORDER BY 1) FROM qmaint.partition_policy) AS policies
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app' ORDER BY 1`,
  );
  return rows;
}

async function checksum(t: TestDatabase, where: string): Promise<{ n: number; sum: string }> {
  const { rows } = await t.db.query<{ n: number; sum: string }>(
    `SELECT count(*)::int AS n, coalesce(sum(hashtextextended(id::text || '|' || payload::text || '|' || created_at::text, 0)), 0)::text AS sum FROM app.jobs WHERE ${where}`,
  );
  return rows[0]!;
}

describe('qmaint adopt', () => {
  it('a primary key without the time column: exit 2 with the SQL that fixes it, and nothing changes', async () => {
    const t = await freshDatabase();
    await t.db.query(
      `CREATE SCHEMA app; CREATE TABLE app.jobs (id bigserial PRIMARY KEY, payload jsonb, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
    );
    const before = await fingerprint(t);
    const r = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day']);
    expect(r.code).toBe(2);
    const error = r.json<{ error: { message: string } }>().error.message;
    expect(error).toMatch(/PRIMARY KEY jobs_pkey \(id\) does not include the time column created_at/);
    expect(error).toContain(
      'CREATE UNIQUE INDEX CONCURRENTLY "jobs_pkey_with_t" ON "app"."jobs" ("id", "created_at"); ALTER TABLE "app"."jobs" DROP CONSTRAINT "jobs_pkey", ADD CONSTRAINT "jobs_pkey" PRIMARY KEY USING INDEX "jobs_pkey_with_t";',
    );
    expect(await fingerprint(t)).toEqual(before);
    // The fix it prints works: then the table can be adopted.
    const fix = error.slice(error.indexOf('Fix: ') + 5).split('; ');
    for (const statement of fix) await t.db.query(statement);
    const again = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day', '--dry-run']);
    expect(again.code, again.stderr).toBe(0);
  });

  it('refuses what it cannot carry over (incoming foreign keys, triggers, a non-timestamptz column) and lists it', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE SCHEMA app;
      CREATE TABLE app.jobs (id bigserial, payload jsonb, status text NOT NULL, created_at timestamp NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at));
      CREATE TABLE app.audit (job_id bigint, job_created timestamp, FOREIGN KEY (job_id, job_created) REFERENCES app.jobs (id, created_at));
      CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
      CREATE TRIGGER jobs_touch BEFORE UPDATE ON app.jobs FOR EACH ROW EXECUTE FUNCTION app.touch()`);
    const before = await fingerprint(t);
    const r = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day']);
    expect(r.code).toBe(2);
    const error = r.json<{ error: { message: string; details: { problems: { message: string }[] } } }>().error;
    expect(error.details.problems.map((p) => p.message.split(' ').slice(0, 3).join(' '))).toEqual([
      'the time column',
      'foreign key audit_job_id_job_created_fkey',
      'trigger jobs_touch is',
    ]);
    expect(error.message).toContain(`ALTER TABLE "app"."jobs" ALTER COLUMN "created_at" TYPE timestamptz USING "created_at" AT TIME ZONE 'UTC';`);
    expect(await fingerprint(t)).toEqual(before);
  });

  it('--dry-run prints every statement with its lock level and changes nothing', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', 100)}`);
    const before = await fingerprint(t);
    const r = await runCli(['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day', '--dry-run', '--database-url', t.url]);
    expect(r.code, r.stderr).toBe(0);
    const steps = r.stdout.split('\n').filter((l) => l.startsWith('-- lock: '));
    expect(steps).toEqual([
      '-- lock: ACCESS EXCLUSIVE on app.jobs (a catalog change, no scan; held for milliseconds)',
      '-- lock: SHARE UPDATE EXCLUSIVE on app.jobs (scans the table; inserts, updates and claims go on)',
      '-- lock: ACCESS EXCLUSIVE on app.jobs until the commit (catalog changes only; the attach is proven by the CHECK)',
    ]);
    expect(r.stdout).toMatch(/ADD CONSTRAINT "jobs_qmaint_adopt" CHECK \("created_at" IS NOT NULL AND "created_at" < '[^']+'\) NOT VALID;/);
    expect(r.stdout).toContain('ALTER TABLE "app"."jobs" ATTACH PARTITION "app"."jobs_legacy" FOR VALUES FROM (MINVALUE) TO (');
    expect(r.stdout).toContain('INSERT INTO qmaint.partition_policy');
    expect(await fingerprint(t)).toEqual(before);
  });

  it('adopts a table in use: no insert or claim fails, no row is lost or doubled, writers stall less than lockTimeout + 1 s; rotate retires the old table once its jobs are done', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', ROWS)}
      CREATE VIEW app.queued AS SELECT id, payload FROM app.jobs WHERE status = 'queued'`);
    const seed = await checksum(t, 'true');
    expect(seed.n).toBe(ROWS);

    const load = await startLoad(t.url, 'app.jobs', { producers: 2, consumers: 2, tag: 'during' });
    let reports;
    let adopt;
    try {
      adopt = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day', '--lock-timeout', `${LOCK_TIMEOUT_MS}ms`]);
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      reports = await load.stop();
    }
    expect(adopt.code, adopt.stderr).toBe(0);
    expect(adopt.json<{ results: { action: string; outcome: string }[] }>().results.map((s) => `${s.action} ${s.outcome}`)).toEqual([
      'check done',
      'validate done',
      'swap done',
    ]);

    // Nothing failed, every worker got work done on both sides of the swap.
    for (const r of reports) {
      expect(r.errors, `${r.role}: ${r.errors.join('; ')}`).toEqual([]);
      expect(r.ops).toBeGreaterThan(10);
      expect(r.maxMs, `${r.role} stalled ${r.maxMs} ms at ${r.maxAt}`).toBeLessThan(LOCK_TIMEOUT_MS + 1000);
    }
    // The seed rows are all there, unchanged (status aside, which consumers set).
    expect(await checksum(t, `payload ? 'seed'`)).toEqual(seed);
    // Every row written during the adoption is there exactly once.
    const inserted = reports.filter((r) => r.role === 'producer').flatMap((r) => r.ids);
    expect(inserted.length).toBeGreaterThan(0);
    const during = await t.db.query<{ n: number; ids: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM app.jobs WHERE payload->>'tag' = 'during'`,
    );
    expect(during.rows[0]).toEqual({ n: inserted.length, ids: inserted.length });
    expect(new Set(inserted).size).toBe(inserted.length);
    // No job was claimed twice, and every claimed job is done.
    const claimed = reports.filter((r) => r.role === 'consumer').flatMap((r) => r.ids);
    expect(new Set(claimed).size).toBe(claimed.length);
    const done = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM app.jobs WHERE id = ANY ($1::bigint[]) AND status = 'done'`, [claimed]);
    expect(done.rows[0]!.n).toBe(claimed.length);
    expect((await checksum(t, 'true')).n).toBe(ROWS + inserted.length);

    // It is partitioned now, under its own name, the old table its first partition; the view reads the parent.
    const shape = await t.db.query<{ relkind: string; parts: string[]; view_reads: string }>(
      `SELECT c.relkind::text AS relkind, ARRAY(SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = c.oid ORDER BY 1) AS parts,
              (SELECT refobjid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                WHERE r.ev_class = 'app.queued'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> 'app.queued'::regclass LIMIT 1) AS view_reads
         FROM pg_class c WHERE c.oid = 'app.jobs'::regclass`,
    );
    expect(shape.rows[0]!.relkind).toBe('p');
    expect(shape.rows[0]!.parts[0]).toBe('app.jobs_legacy');
    expect(shape.rows[0]!.parts).toHaveLength(4);
    expect(shape.rows[0]!.view_reads).toBe('app.jobs');
    const sequence = await t.db.query(`SELECT pg_get_serial_sequence('app.jobs', 'id') AS s`);
    expect(sequence.rows[0]).toEqual({ s: 'app.jobs_id_seq' });

    // Rotate keeps the legacy partition while it holds queued jobs (stragglers wait) and retires it once they are done.
    await t.db.query(`UPDATE qmaint.partition_policy SET stragglers = 'wait' WHERE parent_table = 'app.jobs'`);
    const later = new Date(Date.now() + 10 * DAY).toISOString();
    const keep = await cli(t, ['partitions', 'rotate', '--table', 'app.jobs', '--now', later]);
    expect(keep.code, keep.stderr).toBe(0);
    expect((await t.db.query(`SELECT to_regclass('app.jobs_legacy') IS NOT NULL AS attached`)).rows[0]).toEqual({ attached: true });
    await t.db.query(`UPDATE app.jobs SET status = 'done' WHERE status = 'queued'`);
    const retire = await cli(t, ['partitions', 'rotate', '--table', 'app.jobs', '--now', later]);
    expect(retire.code, retire.stderr).toBe(0);
    expect((await t.db.query(`SELECT to_regclass('app.jobs_legacy') AS legacy`)).rows[0]).toEqual({ legacy: null });
    // The sequence survived the legacy partition and still feeds inserts.
    await t.db.query(`INSERT INTO app.jobs (payload, created_at) VALUES ('{}', $1)`, [later]);
  });

  it('--revert before the old table is retired: it takes back its name, its indexes and the rows written since; the policy goes', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', 1000)}
      CREATE VIEW app.queued AS SELECT id, payload FROM app.jobs WHERE status = 'queued'`);
    const indexesBefore = await t.db.query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app' ORDER BY 1`);
    const adopted = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day']);
    expect(adopted.code, adopted.stderr).toBe(0);
    const bound = adopted.json<{ bound: string }>().bound;
    await t.db.query(
      `INSERT INTO app.jobs (payload, created_at) SELECT jsonb_build_object('after', i), $1::timestamptz + i * interval '1 minute' FROM generate_series(1, 50) i`,
      [bound],
    );
    const all = await checksum(t, 'true');

    const dry = await cli(t, ['adopt', '--revert', '--table', 'app.jobs', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.json<{ rowsToMerge: number; steps: { lockLevel: string }[] }>()).toMatchObject({ rowsToMerge: 50 });
    expect((await t.db.query(`SELECT relkind::text FROM pg_class WHERE oid = 'app.jobs'::regclass`)).rows[0]).toEqual({ relkind: 'p' });

    const reverted = await cli(t, ['adopt', '--revert', '--table', 'app.jobs']);
    expect(reverted.code, reverted.stderr).toBe(0);
    expect((await t.db.query(`SELECT relkind::text FROM pg_class WHERE oid = 'app.jobs'::regclass`)).rows[0]).toEqual({ relkind: 'r' });
    expect(await checksum(t, 'true')).toEqual(all);
    expect((await t.db.query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app' ORDER BY 1`)).rows).toEqual(indexesBefore.rows);
    expect((await t.db.query(`SELECT count(*)::int AS n FROM app.queued`)).rows[0]).toEqual({ n: (await checksum(t, `status = 'queued'`)).n });
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.partition_policy WHERE parent_table = 'app.jobs'`)).rows[0]).toEqual({ n: 0 });
    expect((await t.db.query(`SELECT pg_get_serial_sequence('app.jobs', 'id') AS s`)).rows[0]).toEqual({ s: 'app.jobs_id_seq' });
    expect(
      (
        await t.db.query(
          `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app' AND c.relname ~ '^jobs_p[0-9]'`,
        )
      ).rows[0],
    ).toEqual({ n: 0 });
    // A second revert has nothing to undo.
    const again = await cli(t, ['adopt', '--revert', '--table', 'app.jobs']);
    expect(again.code).toBe(2);
  });

  it('explain dequeue --sql judges your own claim on the adopted table (rolled back): the classic claim uses the partial index, one without it is critical', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE SCHEMA app; ${seedTableSql('app.jobs', 5000)}`);
    // A future-dated row stops the adoption (it would not fit the first partition), nothing changed.
    await t.db.query(`INSERT INTO app.jobs (payload, created_at) VALUES ('{}', now() + interval '3 days')`);
    const before = await fingerprint(t);
    const late = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day']);
    expect(late.code).toBe(2);
    expect(late.json<{ error: { message: string } }>().error.message).toMatch(/1 row\(s\) have created_at at or after/);
    expect(await fingerprint(t)).toEqual(before);
    await t.db.query(`DELETE FROM app.jobs WHERE created_at > now() + interval '1 day'`);
    const adopted = await cli(t, ['adopt', '--table', 'app.jobs', '--column', 'created_at', '--interval', '1 day']);
    expect(adopted.code, adopted.stderr).toBe(0);
    await t.db.query('ANALYZE app.jobs');
    const queued = await checksum(t, `status = 'queued'`);

    const classic = `/tmp/${t.name}-claim.sql`;
    writeFileSync(
      classic,
      `WITH c AS (SELECT id, created_at FROM app.jobs WHERE status = 'queued' ORDER BY created_at LIMIT 10 FOR UPDATE SKIP LOCKED)
      UPDATE app.jobs j SET status = 'running' FROM c WHERE j.id = c.id AND j.created_at = c.created_at RETURNING j.id;\n`,
    );
    const good = await cli(t, ['explain', 'dequeue', '--sql', classic, '--table', 'app.jobs']);
    expect(good.code, good.stderr).toBe(0);
    const report = good.json<{ claimed: number; verdict: string; rules: { rule: string; verdict: string }[] }>();
    expect(report.claimed).toBe(10);
    expect(report.rules.find((r) => r.rule === 'claim_index')?.verdict).toBe('ok');
    // Rolled back: nothing was claimed.
    expect(await checksum(t, `status = 'queued'`)).toEqual(queued);

    const unindexed = `/tmp/${t.name}-claim2.sql`;
    writeFileSync(
      unindexed,
      `WITH c AS (SELECT id, created_at FROM app.jobs WHERE retry_count = 0 AND status <> 'done' ORDER BY payload LIMIT 10 FOR UPDATE SKIP LOCKED)
      UPDATE app.jobs j SET status = 'running' FROM c WHERE j.id = c.id AND j.created_at = c.created_at`,
    );
    const bad = await cli(t, ['explain', 'dequeue', '--sql', unindexed, '--table', 'app.jobs']);
    expect(bad.code).toBe(4);
    expect(bad.json<{ rules: { rule: string; verdict: string }[] }>().rules.find((r) => r.rule === 'claim_index')?.verdict).toBe('critical');

    const two = `/tmp/${t.name}-claim3.sql`;
    writeFileSync(two, 'SELECT 1; DELETE FROM app.jobs');
    const refused = await cli(t, ['explain', 'dequeue', '--sql', two, '--table', 'app.jobs']);
    expect(refused.code).toBe(2);
    expect(refused.json<{ error: { message: string } }>().error.message).toMatch(/one statement/);
  });
});
