import { describe, expect, it } from 'vitest';
import { loadMigrations, requireMigrated } from '../../src/migrate.js';
import { freshDatabase, runCli } from '../helpers.js';

async function schemaObjects(db: { query: (t: string) => Promise<{ rows: { n: string }[] }> }): Promise<number> {
  const { rows } = await db.query(`SELECT count(*)::text AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'qmaint'`);
  return Number(rows[0]!.n);
}

describe('qmaint migrate', () => {
  it('installs the schema, records every migration with its checksum, and is idempotent', async () => {
    const t = await freshDatabase({ migrated: false });
    const first = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(first.code).toBe(0);
    const files = loadMigrations();
    expect(first.json<{ applied: unknown[] }>().applied).toHaveLength(files.length);
    const { rows } = await t.db.query<{ version: number; checksum: string }>('SELECT version, checksum FROM qmaint.schema_migrations ORDER BY version');
    expect(rows).toEqual(files.map((f) => ({ version: f.version, checksum: f.checksum })));
    const objects = await schemaObjects(t.db);
    const second = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(second.code).toBe(0);
    expect(second.json<{ applied: unknown[]; alreadyApplied: number }>()).toMatchObject({ applied: [], alreadyApplied: files.length });
    expect(await schemaObjects(t.db)).toBe(objects);
  });

  it('two runs started at the same moment both exit 0 and install the schema once', async () => {
    const t = await freshDatabase({ migrated: false });
    const [a, b] = await Promise.all([runCli(['migrate', '--database-url', t.url, '--json']), runCli(['migrate', '--database-url', t.url, '--json'])]);
    expect([a.code, b.code]).toEqual([0, 0]);
    const applied = [a, b].map((r) => r.json<{ applied: unknown[] }>().applied.length).sort();
    expect(applied).toEqual([0, loadMigrations().length]);
    const { rows } = await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.schema_migrations');
    expect(Number(rows[0]!.n)).toBe(loadMigrations().length);
  });

  it('--status lists applied migrations; --dry-run prints the SQL and changes nothing', async () => {
    const t = await freshDatabase({ migrated: false });
    const dry = await runCli(['migrate', '--dry-run', '--database-url', t.url]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('CREATE TABLE qmaint.jobs');
    const { rows } = await t.db.query<{ s: string | null }>(`SELECT to_regnamespace('qmaint')::text AS s`);
    expect(rows[0]!.s).toBeNull();
    const before = await runCli(['migrate', '--status', '--json', '--database-url', t.url]);
    expect(before.json<{ migrations: { state: string }[] }>().migrations.every((m) => m.state === 'pending')).toBe(true);
    await runCli(['migrate', '--database-url', t.url]);
    const after = await runCli(['migrate', '--status', '--json', '--database-url', t.url]);
    expect(after.json<{ migrations: { state: string }[] }>().migrations.every((m) => m.state === 'applied')).toBe(true);
  });

  it('refuses a database whose migration checksum changed (exit 2, nothing changed)', async () => {
    const t = await freshDatabase();
    await t.db.query(`UPDATE qmaint.schema_migrations SET checksum = 'tampered' WHERE version = 1`);
    const r = await runCli(['migrate', '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/migration 0001_core was changed after it was applied/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const { rows } = await t.db.query<{ checksum: string }>('SELECT checksum FROM qmaint.schema_migrations WHERE version = 1');
    expect(rows[0]!.checksum).toBe('tampered');
  });

  it('refuses a database that carries a migration this code does not know (exit 2)', async () => {
    const t = await freshDatabase();
    await t.db.query(`INSERT INTO qmaint.schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')`);
    const r = await runCli(['migrate', '--database-url', t.url, '--json']);
    expect(r.code).toBe(2);
    expect(r.json<{ ok: boolean; error: { message: string } }>().error.message).toMatch(/9999_from_the_future, which this qmaint does not know/);
  });

  it("every command's schema check reads both ledgers in one statement, and still tells a database without them what to run", async () => {
    const t = await freshDatabase();
    const sent: string[] = [];
    const recording = { target: t.db.target, query: (text: string, values?: unknown[]) => (sent.push(text), t.db.query(text, values)) };
    await requireMigrated(recording as never);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatch(/FROM qmaint\.schema_migrations[\s\S]*UNION ALL[\s\S]*FROM qmaint\.schema_functions/);
    // Without the function ledger (a 0.1.0 database): read one ledger at a time, every function file pending.
    await t.db.query('ALTER TABLE qmaint.schema_functions RENAME TO schema_functions_away');
    await expect(requireMigrated(t.db)).rejects.toThrow(/the qmaint functions in \S+ are older than this qmaint \(01_core\.sql, .*\); run qmaint migrate/);
    await t.db.query('ALTER TABLE qmaint.schema_functions_away RENAME TO schema_functions');
    await requireMigrated(t.db);
    const bare = await freshDatabase({ migrated: false });
    await expect(requireMigrated(bare.db)).rejects.toThrow(/the qmaint schema is not installed in \S+; run qmaint migrate/);
  });
});
