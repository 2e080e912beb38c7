import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Db, Queryable, SqlValue } from '../db.js';
import { inTransaction } from '../db.js';
import { badInput, QmaintError } from '../errors.js';
import { packageRoot } from '../package-root.js';
import { validateVacuumProfiles } from '../vacuum/profile.js';

/**
 * Partition policies: one JSON file per managed parent table (partitions/*.json),
 * validated here and by PostgreSQL (interval text, the table), then written into
 * qmaint.partition_policy, which server-side maintenance reads.
 */
export interface PolicyDocument {
  table: string;
  interval: string;
  premake: number | 'auto';
  retention: string;
  retentionMode: 'drop' | 'detach' | 'archive';
  stragglers: 'move' | 'wait';
  defaultPartition: boolean;
  lockTimeout: string;
  vacuum: Record<string, Record<string, unknown>>;
  columns?: PolicyColumns;
}

/**
 * The job columns maintenance reads (qmaint.partition_policy since migration
 * 0015). Left out, each means qmaint's own: time = the partition key, status
 * `status`, live `queued, running` (the first is the waiting state a
 * straggler move carries forward), key `id`, touch `updated_at` (null: the
 * table has no such column).
 */
export interface PolicyColumns {
  time?: string;
  status?: string;
  live?: string[];
  key?: string[];
  touch?: string | null;
}

export interface PolicyFile {
  file: string;
  policy: PolicyDocument;
}

/** Keys a policy file may carry; `$schema` lets editors find policy.schema.json. */
const KEYS = ['table', 'interval', 'premake', 'retention', 'retentionMode', 'stragglers', 'defaultPartition', 'lockTimeout', 'vacuum', 'columns'] as const;
const REQUIRED = ['table', 'interval', 'premake', 'retention'] as const;
const DEFAULTS = { retentionMode: 'drop', stragglers: 'move', defaultPartition: false, lockTimeout: '2s', vacuum: {} } as const;
const COLUMN_KEYS = ['time', 'status', 'live', 'key', 'touch'] as const;
const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
const QUALIFIED = /^[A-Za-z_][A-Za-z0-9_$]{0,62}\.[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/** The folder of the policies shipped with qmaint. */
export const PACKAGED_POLICIES = path.join(packageRoot(), 'partitions');

/**
 * Every problem of one parsed policy document that needs no database (empty when fine).
 *
 * @param doc - a parsed policy document
 * @returns one line per problem
 */
export function checkPolicyShape(doc: unknown): string[] {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return ['the file must hold one JSON object'];
  const obj = doc as Record<string, unknown>;
  const problems: string[] = [];
  for (const key of Object.keys(obj)) {
    if (key !== '$schema' && !(KEYS as readonly string[]).includes(key)) problems.push(`unknown key ${JSON.stringify(key)} (known: ${KEYS.join(', ')})`);
  }
  for (const key of REQUIRED) if (!(key in obj)) problems.push(`${key} is missing`);
  const str = (key: string) => {
    if (key in obj && (typeof obj[key] !== 'string' || obj[key] === '')) problems.push(`${key} must be a non-empty string`);
  };
  str('interval');
  str('retention');
  str('lockTimeout');
  if ('table' in obj && (typeof obj.table !== 'string' || !QUALIFIED.test(obj.table))) {
    problems.push(`table must be "schema.table", got ${JSON.stringify(obj.table)}`);
  }
  if ('premake' in obj && obj.premake !== 'auto' && !(Number.isInteger(obj.premake) && (obj.premake as number) >= 0 && (obj.premake as number) <= 1000)) {
    problems.push(`premake must be "auto" or a whole number from 0 to 1000, got ${JSON.stringify(obj.premake)}`);
  }
  const oneOf = (key: string, allowed: readonly unknown[]) => {
    if (key in obj && !allowed.includes(obj[key]))
      problems.push(`${key} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(obj[key])}`);
  };
  oneOf('retentionMode', ['drop', 'detach', 'archive']);
  oneOf('stragglers', ['move', 'wait']);
  oneOf('defaultPartition', [true, false]);
  if ('columns' in obj) problems.push(...checkColumnsShape(obj.columns).map((p) => `columns: ${p}`));
  if ('vacuum' in obj) problems.push(...validateVacuumProfiles(obj.vacuum).map((p) => `vacuum: ${p}`));
  return problems;
}

/** Problems of a policy's `columns` object (empty when fine). */
export function checkColumnsShape(cols: unknown): string[] {
  if (!cols || typeof cols !== 'object' || Array.isArray(cols)) return ['must be an object with time, status, live, key, touch'];
  const obj = cols as Record<string, unknown>;
  const problems: string[] = [];
  for (const key of Object.keys(obj)) {
    if (!(COLUMN_KEYS as readonly string[]).includes(key)) problems.push(`unknown key ${JSON.stringify(key)} (known: ${COLUMN_KEYS.join(', ')})`);
  }
  for (const key of ['time', 'status'] as const) {
    if (key in obj && (typeof obj[key] !== 'string' || !IDENT.test(obj[key]))) problems.push(`${key} must be a column name, got ${JSON.stringify(obj[key])}`);
  }
  if ('touch' in obj && obj.touch !== null && (typeof obj.touch !== 'string' || !IDENT.test(obj.touch))) {
    problems.push(`touch must be a column name or null, got ${JSON.stringify(obj.touch)}`);
  }
  const list = (key: string, max: number, valid: (v: unknown) => boolean, what: string) => {
    if (!(key in obj)) return;
    const v = obj[key];
    if (!Array.isArray(v) || v.length === 0 || v.length > max || !v.every(valid) || new Set(v).size !== v.length) {
      problems.push(`${key} must be a list of 1 to ${max} distinct ${what}, got ${JSON.stringify(v)}`);
    }
  };
  list('live', 16, (v) => typeof v === 'string' && v !== '' && v.length <= 200, 'non-empty strings');
  list('key', 8, (v) => typeof v === 'string' && IDENT.test(v), 'column names');
  return problems;
}

function withDefaults(obj: Record<string, unknown>): PolicyDocument {
  const rest = { ...obj };
  delete rest.$schema;
  return { ...DEFAULTS, ...rest } as unknown as PolicyDocument;
}

/** The files to apply: the ones named, else ./partitions/*.json, else the shipped ones. */
export function policyPaths(files: string[], cwd: string = process.cwd()): string[] {
  if (files.length > 0) return files.map((f) => path.resolve(cwd, f));
  for (const dir of [path.join(cwd, 'partitions'), PACKAGED_POLICIES]) {
    if (existsSync(dir)) {
      const found = readdirSync(dir)
        .filter((f) => f.endsWith('.json') && !f.endsWith('.schema.json'))
        .sort();
      if (found.length > 0) return found.map((f) => path.join(dir, f));
    }
  }
  throw badInput('no policy file found; name one (qmaint partitions apply partitions/jobs.json) or create partitions/<table>.json');
}

/**
 * Read and check policy files: shape here, intervals and tables in PostgreSQL.
 * Throws one bad_input error listing every problem of every file.
 */
export async function loadPolicies(db: Queryable, paths: string[]): Promise<PolicyFile[]> {
  const problems: string[] = [];
  const loaded: PolicyFile[] = [];
  const tables = new Map<string, string>();
  for (const file of paths) {
    const name = path.basename(file);
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(`${name}: ${code === 'ENOENT' ? 'no such file' : `not valid JSON (${(err as Error).message})`}`);
      continue;
    }
    const local = checkPolicyShape(doc);
    const { rows } = await db.query<{ problems: string[] }>('SELECT qmaint.check_policy($1::jsonb) AS problems', [JSON.stringify(doc)]);
    const all = [...local, ...(rows[0]?.problems ?? [])];
    const table = (doc as { table?: unknown } | null)?.table;
    if (typeof table === 'string') {
      if (tables.has(table)) all.push(`table ${table} already has a policy in ${tables.get(table)}`);
      tables.set(table, name);
    }
    if (all.length > 0) problems.push(...all.map((p) => `${name}: ${p}`));
    else loaded.push({ file, policy: withDefaults(doc as Record<string, unknown>) });
  }
  if (problems.length > 0) {
    throw badInput(`bad partition policy, nothing applied: ${problems.join('; ')}`, { problems });
  }
  return loaded;
}

const UPSERT = `INSERT INTO qmaint.partition_policy AS p
    (parent_table, partition_interval, premake, retention, retention_mode, stragglers, default_partition, lock_timeout, vacuum, source,
     time_column, status_column, live_values, key_columns, touch_column, updated_at)
  VALUES ($1, $2::interval, $3, $4::interval, $5, $6, $7, $8::interval, $9::jsonb, $10::jsonb,
     $11, coalesce($12, 'status'), coalesce($13::text[], '{queued,running}'), coalesce($14::text[], '{id}'), CASE WHEN $15::boolean THEN $16 ELSE 'updated_at' END, now())
  ON CONFLICT (parent_table) DO UPDATE SET
    partition_interval = EXCLUDED.partition_interval, premake = EXCLUDED.premake, retention = EXCLUDED.retention,
    retention_mode = EXCLUDED.retention_mode, stragglers = EXCLUDED.stragglers, default_partition = EXCLUDED.default_partition,
    lock_timeout = EXCLUDED.lock_timeout, vacuum = EXCLUDED.vacuum, source = EXCLUDED.source,
    time_column = EXCLUDED.time_column, status_column = EXCLUDED.status_column, live_values = EXCLUDED.live_values,
    key_columns = EXCLUDED.key_columns, touch_column = EXCLUDED.touch_column, updated_at = now()`;

/** A text[] literal (for the --dry-run rendering too, so values stay text). */
function pgArray(values: string[]): string {
  return `{${values.map((v) => `"${v.replace(/["\\]/g, (ch) => `\\${ch}`)}"`).join(',')}}`;
}

function upsertValues(p: PolicyDocument): SqlValue[] {
  const c = p.columns ?? {};
  return [
    p.table,
    p.interval,
    p.premake === 'auto' ? null : p.premake,
    p.retention,
    p.retentionMode,
    p.stragglers,
    p.defaultPartition,
    p.lockTimeout,
    JSON.stringify(p.vacuum ?? {}),
    JSON.stringify(p),
    c.time ?? null,
    c.status ?? null,
    c.live ? pgArray(c.live) : null,
    c.key ? pgArray(c.key) : null,
    'touch' in c,
    c.touch ?? null,
  ];
}

/** What {@link applyPolicies} stored (or, with dryRun, would store). */
export interface ApplyResult {
  dryRun: boolean;
  applied: { file: string; table: string; created: boolean }[];
  /** --dry-run: the statement per policy with its values rendered as literals. */
  statements: { statement: string; lockLevel: string; reason: string }[];
}

/**
 * Validate every file, then write all policies in one transaction (or, dry run, show the SQL).
 *
 * @param db - the database
 * @param paths - policy files (JSON, see partitions/schema.json)
 * @param options - `dryRun` (default false): return the SQL and store nothing
 * @throws {@link QmaintError} `bad_input` listing every problem of every file (nothing is stored then)
 */
export async function applyPolicies(db: Db, paths: string[], options: { dryRun?: boolean } = {}): Promise<ApplyResult> {
  const policies = await loadPolicies(db, paths);
  const existing = new Set((await db.query<{ t: string }>('SELECT parent_table AS t FROM qmaint.partition_policy')).rows.map((r) => r.t));
  const applied = policies.map((p) => ({ file: p.file, table: p.policy.table, created: !existing.has(p.policy.table) }));
  const statements = [];
  for (const p of policies) {
    // For people to read: the statement with its values quoted by PostgreSQL; the real write binds them.
    const values = upsertValues(p.policy);
    const { rows } = await db.query<{ q: string[] }>('SELECT array_agg(quote_nullable(v) ORDER BY n) AS q FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n)', [
      values.map((v) => (v === null ? null : String(v))),
    ]);
    const statement = UPSERT.replace(/\$(\d+)/g, (_m, n: string) => rows[0]!.q[Number(n) - 1]!).replace(/\s+/g, ' ');
    statements.push({ statement, lockLevel: 'ROW EXCLUSIVE on qmaint.partition_policy', reason: `policy of ${p.policy.table} from ${path.basename(p.file)}` });
  }
  if (!options.dryRun) {
    await db.withClient((client) =>
      inTransaction(client, async () => {
        for (const p of policies) await client.query(UPSERT, upsertValues(p.policy));
      }),
    );
  }
  return { dryRun: !!options.dryRun, applied, statements };
}

/** Table names with a policy, checked the same way the CLI checks a --table flag. */
export async function policyTables(db: Queryable, table?: string): Promise<string[]> {
  const { rows } = await db.query<{ t: string }>('SELECT parent_table AS t FROM qmaint.partition_policy ORDER BY 1');
  const all = rows.map((r) => r.t);
  if (table === undefined) return all;
  if (!all.includes(table)) {
    throw new QmaintError(
      'bad_input',
      `no partition policy for ${table}; policies exist for ${all.join(', ') || 'no table'} (qmaint partitions apply writes them)`,
    );
  }
  return [table];
}
