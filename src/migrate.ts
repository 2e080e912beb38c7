import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Db, Queryable } from './db.js';
import { inTransaction, SCHEMA_LOCK } from './db.js';
import { QmaintError, sqlState } from './errors.js';
import { packageRoot } from './package-root.js';
import { reapplyRoleGrants } from './roles.js';

const SQL_DIR = path.join(packageRoot(), 'sql');

/** Folder of the numbered migrations shipped with the package: tables, types, indexes, data changes. */
export const MIGRATIONS_DIR = path.join(SQL_DIR, 'migrations');

/** Folder of the function files shipped with the package: re-applied whenever they change. */
export const FUNCTIONS_DIR = path.join(SQL_DIR, 'functions');

/** A numbered migration file: what is created once (tables, types, indexes). */
export interface MigrationFile {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

/** One file of sql/functions/: CREATE OR REPLACE statements, applied as a whole. */
export interface FunctionFile {
  file: string;
  sql: string;
  checksum: string;
}

/** A migration and whether this database has applied it. */
export interface MigrationStatus {
  version: number;
  name: string;
  checksum: string;
  state: 'applied' | 'pending';
  appliedAt: string | null;
}

/** A function file and whether this database has its current version (`changed`: an older version). */
export interface FunctionFileStatus {
  file: string;
  checksum: string;
  /** applied: the database has this checksum; changed: an older one; pending: never applied. */
  state: 'applied' | 'changed' | 'pending';
  appliedAt: string | null;
}

/** What {@link migrationStatus} reports: every migration and function file with its state. */
export interface SchemaStatus {
  migrations: MigrationStatus[];
  functions: FunctionFileStatus[];
  /** Files the database recorded that this qmaint no longer ships (their rows go at the next migrate). */
  retiredFunctionFiles: string[];
}

/** What {@link migrate} applied (or, with dryRun, would apply). */
export interface MigrateResult {
  applied: MigrationFile[];
  /** Function files applied (or, with dryRun, to apply): new or changed since the last migrate. */
  functions: FunctionFile[];
  retiredFunctionFiles: string[];
  alreadyApplied: number;
  dryRun: boolean;
}

function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex');
}

export function loadMigrations(dir: string = MIGRATIONS_DIR): MigrationFile[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort();
  const seen = new Set<number>();
  return files.map((file) => {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!match) throw new QmaintError('migration', `migration file ${file} is not named NNNN_name.sql; rename it`);
    const version = Number(match[1]);
    if (seen.has(version)) throw new QmaintError('migration', `two migration files carry version ${match[1]}; renumber one`);
    seen.add(version);
    const sql = readFileSync(path.join(dir, file), 'utf8');
    return { version, name: match[2]!, file, sql, checksum: checksum(sql) };
  });
}

/** The function files in the order they are applied (their NN_ prefix is the dependency order). */
export function loadFunctionFiles(dir: string = FUNCTIONS_DIR): FunctionFile[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((file) => {
      if (!/^\d{2}_[a-z0-9_]+\.sql$/.test(file)) throw new QmaintError('migration', `function file ${file} is not named NN_name.sql; rename it`);
      const sql = readFileSync(path.join(dir, file), 'utf8');
      return { file, sql, checksum: checksum(sql) };
    });
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
}

interface AppliedFunctionRow {
  file: string;
  checksum: string;
  applied_at: Date;
}

async function tableExists(client: Queryable, name: string): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [name]);
  return rows[0]?.exists === true;
}

async function appliedMigrations(client: Queryable): Promise<AppliedRow[]> {
  if (!(await tableExists(client, 'qmaint.schema_migrations'))) return [];
  const result = await client.query<AppliedRow>('SELECT version, name, checksum, applied_at FROM qmaint.schema_migrations ORDER BY version');
  return result.rows;
}

/** The function ledger; empty before migration 0008 (a 0.1.0 database, or a fresh one). */
async function appliedFunctionFiles(client: Queryable): Promise<AppliedFunctionRow[]> {
  if (!(await tableExists(client, 'qmaint.schema_functions'))) return [];
  const result = await client.query<AppliedFunctionRow>('SELECT file, checksum, applied_at FROM qmaint.schema_functions ORDER BY file');
  return result.rows;
}

/**
 * Both ledgers in one round trip, as every command's schema check reads them
 * (so it costs one statement, not four). When either table is missing (a new
 * database, or one of 0.1.0 without the function ledger) the statement fails
 * and the ledgers are read one at a time, each empty when absent. Only
 * outside a transaction: the failed statement would abort one.
 */
async function ledgersAtOnce(client: Queryable): Promise<{ migrations: AppliedRow[]; functions: AppliedFunctionRow[] }> {
  try {
    const { rows } = await client.query<AppliedRow & { ledger: 'm' | 'f' }>(
      `SELECT 'm' AS ledger, version, name, checksum, applied_at FROM qmaint.schema_migrations
       UNION ALL
       SELECT 'f', NULL, file, checksum, applied_at FROM qmaint.schema_functions`,
    );
    return {
      migrations: rows.filter((r) => r.ledger === 'm').sort((a, b) => a.version - b.version),
      functions: rows
        .filter((r) => r.ledger === 'f')
        .map((r) => ({ file: r.name, checksum: r.checksum, applied_at: r.applied_at }))
        .sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0)),
    };
  } catch (err) {
    const code = sqlState(err);
    if (code !== '42P01' && code !== '3F000') throw err;
    return { migrations: await appliedMigrations(client), functions: await appliedFunctionFiles(client) };
  }
}

/** Refuse a database that carries migrations this code does not know, or whose files changed. */
function checkHistory(applied: AppliedRow[], files: MigrationFile[]): void {
  const byVersion = new Map(files.map((f) => [f.version, f]));
  for (const row of applied) {
    const file = byVersion.get(row.version);
    const label = `${String(row.version).padStart(4, '0')}_${row.name}`;
    if (!file) {
      throw new QmaintError(
        'migration',
        `the database carries migration ${label}, which this qmaint does not know; upgrade qmaint to the version that installed it`,
      );
    }
    if (file.checksum !== row.checksum) {
      throw new QmaintError(
        'migration',
        `migration ${label} was changed after it was applied (checksum differs); restore sql/migrations/${file.file} as released and put changes in a new migration`,
      );
    }
  }
}

function functionStates(files: FunctionFile[], applied: AppliedFunctionRow[]): { status: FunctionFileStatus[]; retired: string[] } {
  const byFile = new Map(applied.map((r) => [r.file, r]));
  const shipped = new Set(files.map((f) => f.file));
  const status = files.map((f): FunctionFileStatus => {
    const row = byFile.get(f.file);
    const state = !row ? 'pending' : row.checksum === f.checksum ? 'applied' : 'changed';
    return { file: f.file, checksum: f.checksum, state, appliedAt: row ? row.applied_at.toISOString() : null };
  });
  return { status, retired: applied.filter((r) => !shipped.has(r.file)).map((r) => r.file) };
}

interface Loaded {
  migrations: MigrationFile[];
  functions: FunctionFile[];
}

/** Where {@link migrate} and {@link migrationStatus} read the SQL from (both default to the files this package ships). */
export interface MigrateOptions {
  /** Folder of numbered migrations (default: the package's `sql/migrations`). */
  dir?: string;
  /** Folder of function files (default: the package's `sql/functions`). */
  functionsDir?: string;
  /** Change nothing: return what would be applied (default false). Ignored by migrationStatus. */
  dryRun?: boolean;
}

type Dirs = Pick<MigrateOptions, 'dir' | 'functionsDir'>;

function load(dirs: Dirs): Loaded {
  return { migrations: loadMigrations(dirs.dir), functions: loadFunctionFiles(dirs.functionsDir) };
}

/** What `migrate` would do: pending migrations, and function files that are new or changed. */
async function plan(
  client: Queryable,
  loaded: Loaded,
  transactional: boolean,
): Promise<{ status: SchemaStatus; pending: MigrationFile[]; functions: FunctionFile[]; alreadyApplied: number }> {
  const ledgers = transactional ? null : await ledgersAtOnce(client);
  const applied = ledgers?.migrations ?? (await appliedMigrations(client));
  checkHistory(applied, loaded.migrations);
  const byVersion = new Map(applied.map((r) => [r.version, r]));
  const migrations = loaded.migrations.map((f): MigrationStatus => {
    const row = byVersion.get(f.version);
    return { version: f.version, name: f.name, checksum: f.checksum, state: row ? 'applied' : 'pending', appliedAt: row ? row.applied_at.toISOString() : null };
  });
  const fns = functionStates(loaded.functions, ledgers?.functions ?? (await appliedFunctionFiles(client)));
  const stale = new Set(fns.status.filter((s) => s.state !== 'applied').map((s) => s.file));
  return {
    status: { migrations, functions: fns.status, retiredFunctionFiles: fns.retired },
    pending: loaded.migrations.filter((f) => !byVersion.has(f.version)),
    functions: loaded.functions.filter((f) => stale.has(f.file)),
    alreadyApplied: applied.length,
  };
}

/**
 * Every migration and function file with its state in this database.
 *
 * @param db - the database
 * @param dirs - where the SQL is read from (default: the package's)
 * @throws {@link QmaintError} `migration` when a recorded migration's file changed
 */
export async function migrationStatus(db: Db, dirs: MigrateOptions = {}): Promise<SchemaStatus> {
  return (await plan(db, load(dirs), false)).status;
}

/**
 * Bring the schema up to date, all in one transaction under an advisory lock
 * (concurrent runs install it once and both succeed): first the pending
 * numbered migrations in order, then every function file that is new or whose
 * checksum changed, in file order. Files the database recorded but this qmaint
 * no longer ships leave the ledger (their functions are dropped by the
 * migration that retired them).
 *
 * @param db - the database; its role needs CREATE on the database (the first time) or ownership of schema qmaint (member of qmaint_admin after installRoles)
 * @param options - see {@link MigrateOptions}; defaults: the package's SQL, not a dry run
 * @returns what was applied
 * @throws {@link QmaintError} `migration` when a recorded migration's file changed or the files are misnamed; `unexpected` naming the file whose SQL failed (nothing is applied then)
 */
export async function migrate(db: Db, options: MigrateOptions = {}): Promise<MigrateResult> {
  const loaded = load(options);
  if (options.dryRun) {
    const p = await plan(db, loaded, false);
    return { applied: p.pending, functions: p.functions, retiredFunctionFiles: p.status.retiredFunctionFiles, alreadyApplied: p.alreadyApplied, dryRun: true };
  }
  return db.withClient((client) =>
    inTransaction(client, async () => {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [...SCHEMA_LOCK]);
      await client.query(`SET LOCAL client_min_messages = warning`);
      // Only when missing: CREATE SCHEMA needs CREATE on the database even
      // with IF NOT EXISTS, which a member of qmaint_admin need not have.
      if (!(await client.query<{ ok: boolean }>(`SELECT to_regnamespace('qmaint') IS NOT NULL AS ok`)).rows[0]!.ok) await client.query(`CREATE SCHEMA qmaint`);
      await client.query(`CREATE TABLE IF NOT EXISTS qmaint.schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      const before = await plan(client, loaded, true);
      for (const file of before.pending) {
        await runFile(client, `migration ${file.file}`, file.sql);
        await client.query('INSERT INTO qmaint.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [file.version, file.name, file.checksum]);
      }
      // The ledger may have been created just now (0008), so read it again.
      const after = before.pending.length > 0 ? await plan(client, loaded, true) : before;
      for (const file of after.functions) {
        await runFile(client, `function file ${file.file}`, file.sql);
        await client.query(
          `INSERT INTO qmaint.schema_functions (file, checksum) VALUES ($1, $2)
           ON CONFLICT (file) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`,
          [file.file, file.checksum],
        );
      }
      const retired = after.status.retiredFunctionFiles;
      if (retired.length > 0) await client.query('DELETE FROM qmaint.schema_functions WHERE file = ANY ($1::text[])', [retired]);
      // After `qmaint roles install`: whatever was just created goes to
      // qmaint_admin and gets its grants before anyone can see it.
      if (before.pending.length > 0 || after.functions.length > 0) await reapplyRoleGrants(client);
      return { applied: before.pending, functions: after.functions, retiredFunctionFiles: retired, alreadyApplied: before.alreadyApplied, dryRun: false };
    }),
  );
}

async function runFile(client: Queryable, label: string, sql: string): Promise<void> {
  try {
    await client.query(sql);
  } catch (err) {
    throw new QmaintError('unexpected', `${label} failed: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Fail with a clear line when the schema or its functions are missing or behind this code.
 *
 * Applications may call it at startup; every CLI command does.
 *
 * @param db - the database
 * @throws {@link QmaintError} `config` when migrations are pending or function files are older than this version (run `migrate`)
 */
export async function requireMigrated(db: Db): Promise<void> {
  const status = await migrationStatus(db);
  const pending = status.migrations.filter((s) => s.state === 'pending');
  const functions = status.functions.filter((s) => s.state !== 'applied');
  if (pending.length > 0) {
    throw new QmaintError(
      'config',
      `the qmaint schema is ${pending.length === status.migrations.length ? 'not installed' : `missing ${pending.length} migration(s)`} in ${db.target.database}; run qmaint migrate`,
    );
  }
  if (functions.length > 0) {
    throw new QmaintError(
      'config',
      `the qmaint functions in ${db.target.database} are older than this qmaint (${functions.map((f) => f.file).join(', ')}); run qmaint migrate`,
    );
  }
}
