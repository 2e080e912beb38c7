import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db, Queryable } from './db.js';
import { inTransaction } from './db.js';
import { QmaintError } from './errors.js';

/** Folder of the numbered migrations shipped with the package. */
export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'sql', 'migrations');

// Transaction-scoped advisory lock that serialises concurrent `qmaint migrate`
// runs (two int4 halves: 'qm' and 'mi').
const MIGRATE_LOCK = [29037, 28009] as const;

export interface MigrationFile {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

export interface MigrationStatus {
  version: number;
  name: string;
  checksum: string;
  state: 'applied' | 'pending';
  appliedAt: string | null;
}

export interface MigrateResult {
  applied: MigrationFile[];
  alreadyApplied: number;
  dryRun: boolean;
}

export function loadMigrations(dir: string = MIGRATIONS_DIR): MigrationFile[] {
  const files = readdirSync(dir).filter((f) => f.endsWith('.sql')).sort();
  const seen = new Set<number>();
  return files.map((file) => {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!match) throw new QmaintError('migration', `migration file ${file} is not named NNNN_name.sql; rename it`);
    const version = Number(match[1]);
    if (seen.has(version)) throw new QmaintError('migration', `two migration files carry version ${match[1]}; renumber one`);
    seen.add(version);
    const sql = readFileSync(path.join(dir, file), 'utf8');
    return { version, name: match[2]!, file, sql, checksum: createHash('sha256').update(sql).digest('hex') };
  });
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
}

async function appliedMigrations(client: Queryable): Promise<AppliedRow[] | null> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass('qmaint.schema_migrations') IS NOT NULL AS exists`);
  if (!rows[0]?.exists) return null;
  const result = await client.query<AppliedRow>('SELECT version, name, checksum, applied_at FROM qmaint.schema_migrations ORDER BY version');
  return result.rows;
}

/** Refuse a database that carries migrations this code does not know, or whose files changed. */
function checkHistory(applied: AppliedRow[], files: MigrationFile[]): void {
  const byVersion = new Map(files.map((f) => [f.version, f]));
  for (const row of applied) {
    const file = byVersion.get(row.version);
    const label = `${String(row.version).padStart(4, '0')}_${row.name}`;
    if (!file) {
      throw new QmaintError('migration', `the database carries migration ${label}, which this qmaint does not know; upgrade qmaint to the version that installed it`);
    }
    if (file.checksum !== row.checksum) {
      throw new QmaintError('migration', `migration ${label} was changed after it was applied (checksum differs); restore sql/migrations/${file.file} as released and put changes in a new migration`);
    }
  }
}

export async function migrationStatus(db: Db, dir?: string): Promise<MigrationStatus[]> {
  const files = loadMigrations(dir);
  const applied = (await appliedMigrations(db)) ?? [];
  checkHistory(applied, files);
  const byVersion = new Map(applied.map((r) => [r.version, r]));
  return files.map((f) => {
    const row = byVersion.get(f.version);
    return { version: f.version, name: f.name, checksum: f.checksum, state: row ? 'applied' : 'pending', appliedAt: row ? row.applied_at.toISOString() : null };
  });
}

/**
 * Apply pending migrations in order, all in one transaction under an advisory
 * lock, so concurrent runs install the schema once and both succeed.
 */
export async function migrate(db: Db, options: { dryRun?: boolean; dir?: string } = {}): Promise<MigrateResult> {
  const files = loadMigrations(options.dir);
  if (options.dryRun) {
    const applied = (await appliedMigrations(db)) ?? [];
    checkHistory(applied, files);
    const done = new Set(applied.map((r) => r.version));
    return { applied: files.filter((f) => !done.has(f.version)), alreadyApplied: done.size, dryRun: true };
  }
  return db.withClient((client) =>
    inTransaction(client, async () => {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [...MIGRATE_LOCK]);
      await client.query(`SET LOCAL client_min_messages = warning`);
      await client.query(`CREATE SCHEMA IF NOT EXISTS qmaint`);
      await client.query(`CREATE TABLE IF NOT EXISTS qmaint.schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      const applied = (await appliedMigrations(client)) ?? [];
      checkHistory(applied, files);
      const done = new Set(applied.map((r) => r.version));
      const pending = files.filter((f) => !done.has(f.version));
      for (const file of pending) {
        try {
          await client.query(file.sql);
        } catch (err) {
          throw new QmaintError('unexpected', `migration ${file.file} failed: ${(err as Error).message}`, { cause: err });
        }
        await client.query('INSERT INTO qmaint.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [file.version, file.name, file.checksum]);
      }
      return { applied: pending, alreadyApplied: done.size, dryRun: false };
    }),
  );
}

/** Fail with a clear line when the schema is missing or behind this code. */
export async function requireMigrated(db: Db): Promise<void> {
  const status = await migrationStatus(db);
  const pending = status.filter((s) => s.state === 'pending');
  if (pending.length > 0) {
    throw new QmaintError('config', `the qmaint schema is ${pending.length === status.length ? 'not installed' : `missing ${pending.length} migration(s)`} in ${db.target.database}; run qmaint migrate`);
  }
}
