import { inTransaction, parseQualifiedName, quoteIdent, validateIdentifier, withMaintenanceLock, type Db, type LockHolder, type PgClient } from '../db.js';
import { badInput, QmaintError, toQmaintError } from '../errors.js';
import { executeSteps, type PlanStep, type StepEvent, type StepResult } from '../plan.js';
import { inspectTable, type Problem } from './inspect.js';

export type { Problem, TableFacts } from './inspect.js';

/**
 * `qmaint adopt`: put an existing, unpartitioned table behind time-range
 * partitions while producers and consumers keep using it.
 *
 * 1. Checks (inspect.ts): nothing changes while there is a problem; each comes
 *    with the SQL that fixes it where there is one.
 * 2. `check`: CHECK (time IS NOT NULL AND time < bound) NOT VALID (a catalog
 *    change under a short ACCESS EXCLUSIVE), then `validate`: VALIDATE
 *    CONSTRAINT, which scans under SHARE UPDATE EXCLUSIVE while reads and
 *    writes go on.
 * 3. `swap`: one transaction under lock_timeout: the table and its indexes
 *    move aside (renamed), the partitioned parent is made under the original
 *    name with the same columns, defaults, constraints, indexes, foreign keys,
 *    sequence ownership, owner and grants, the old table is ATTACHed as its
 *    first partition (the valid CHECK proves the bound, so no scan), the
 *    runway partitions are made, views are re-pointed, and the policy is
 *    recorded. Producers and consumers name the table, so they carry on.
 *
 * Steps run through the one TypeScript executor (executeSteps): lock_timeout,
 * retries with jitter, blockers named on giving up.
 */
export interface AdoptOptions {
  /** schema.table */
  table: string;
  /** The time column (the partition key). */
  column: string;
  /** Partition width, PostgreSQL interval text (1 minute ... 1 month). */
  interval: string;
  /** Default: status. */
  statusColumn?: string;
  /** Values of the status column that mean live; the first is the waiting state. Default: queued, running. */
  liveValues?: string[];
  /** Columns identifying a row besides the time column. Default: the primary key's. */
  keyColumns?: string[];
  /** Set to now() on a moved row; default updated_at when the table has it, else none. */
  touchColumn?: string | null;
  /** Default: 7 days. */
  retention?: string;
  /** Partitions made ahead; default 3. */
  premake?: number;
  /** lock_timeout of every statement, also the policy's lockTimeout. Default 2s. */
  lockTimeout?: string;
  retries?: number;
  now?: Date;
  dryRun?: boolean;
  /** Called as each step starts, retries, waits on a blocker and ends (progress output). */
  onEvent?: (event: StepEvent) => void;
}

/** What an adoption would run: the checks passed, what is carried over, and the steps with their lock levels. */
export interface AdoptPlan {
  table: string;
  /** Where the old table goes: the first partition. */
  legacy: string;
  /** Upper bound of the legacy partition (ISO). */
  bound: string;
  /** What is carried over to the partitioned parent. */
  carried: {
    keyConstraints: string[];
    indexes: string[];
    foreignKeys: string[];
    sequences: string[];
    grants: number;
    views: string[];
    allTablesPublications: string[];
  };
  runway: string[];
  policy: Record<string, unknown>;
  steps: PlanStep[];
}

/** An adoption's outcome: the plan of a dry run, the steps run, or `ran: false` when another maintenance run held the lock. */
export type AdoptResult =
  | ({ dryRun: true } & AdoptPlan)
  | ({ dryRun: false; ran: true; results: StepResult[]; ms: number } & AdoptPlan)
  | { dryRun: false; ran: false; holder: LockHolder | null; message: string };

const q = quoteIdent;

/** Where an adoption stands: the problems (each with its fix), or the plan. */
export async function planAdopt(client: PgClient, options: AdoptOptions): Promise<AdoptPlan> {
  const target = parseQualifiedName(options.table, 'table');
  validateIdentifier(options.column, 'time column');
  const statusColumn = validateIdentifier(options.statusColumn ?? 'status', 'status column');
  const liveValues = options.liveValues ?? ['queued', 'running'];
  if (liveValues.length === 0 || liveValues.length > 16 || liveValues.some((v) => v === '') || new Set(liveValues).size !== liveValues.length) {
    throw badInput(`live values must be 1 to 16 distinct, non-empty values, got ${JSON.stringify(liveValues)}`);
  }
  for (const k of options.keyColumns ?? []) validateIdentifier(k, 'key column');
  if (options.touchColumn) validateIdentifier(options.touchColumn, 'touch column');
  const premake = options.premake ?? 3;
  if (!Number.isInteger(premake) || premake < 1 || premake > 100) throw badInput(`premake must be a whole number from 1 to 100, got ${premake}`);
  const checkName = `${target.name.slice(0, 48)}_qmaint_adopt`;
  const legacyName = `${target.name.slice(0, 56)}_legacy`;
  const now = options.now ?? new Date();

  // Intervals and bounds are PostgreSQL's arithmetic (the same as rotate's).
  const { rows: ivRows } = await client.query<{ problem: string | null; retention_short: boolean }>(
    `SELECT qmaint.check_partition_interval($1::interval) AS problem, $2::interval < $1::interval AS retention_short`,
    [options.interval, options.retention ?? '7 days'],
  );
  if (ivRows[0]!.problem) throw badInput(`interval ${options.interval}: ${ivRows[0]!.problem}`);
  if (ivRows[0]!.retention_short)
    throw badInput(`retention ${options.retention} is shorter than the interval ${options.interval}; keep at least one whole partition`);

  const facts = await inTransaction(client, async (c) => {
    await c.query(`SET LOCAL search_path = pg_catalog`);
    return inspectTable(c, {
      schema: target.schema,
      name: target.name,
      column: options.column,
      statusColumn,
      keyColumns: options.keyColumns,
      touchColumn: options.touchColumn,
      checkName,
    });
  });
  if ('missing' in facts) throw badInput(`table ${target.text} does not exist`);
  const keyColumns = options.keyColumns ?? facts.primaryKey.filter((k) => k !== options.column);
  if (keyColumns.length === 0)
    facts.problems.push({ message: `${target.text} has no primary key besides the time column; name the columns that identify a row (key columns)` });
  const policyRow = await client.query(`SELECT 1 FROM qmaint.partition_policy WHERE parent_table = $1`, [target.text]);
  if (policyRow.rows.length > 0) facts.problems.push({ message: `${target.text} already has a partition policy` });
  if (await exists(client, target.schema, legacyName))
    facts.problems.push({ message: `${target.schema}.${legacyName} exists already; adopt puts the old table there` });
  for (const i of facts.allIndexes) {
    if (await exists(client, target.schema, legacyIndexName(i)))
      facts.problems.push({ message: `${target.schema}.${legacyIndexName(i)} exists already; adopt renames index ${i} to it` });
  }
  if (facts.problems.length > 0) throw refusal(target.text, facts.problems);
  const touchColumn = options.touchColumn !== undefined ? options.touchColumn : facts.columns.has('updated_at') ? 'updated_at' : null;

  // The legacy partition ends at the next slot boundary, one slot later when
  // that is under 10 minutes away (the swap must commit before rows reach it).
  const { rows: b } = await client.query<{ bound: Date; bound_literal: string; slots: { from: string; to: string; name: string }[] }>(
    `WITH b AS (SELECT CASE WHEN f + iv - $1::timestamptz < least(iv, interval '10 minutes') THEN f + 2 * iv ELSE f + iv END AS bound, iv
                  FROM (SELECT qmaint.partition_floor($1::timestamptz, $2::interval) AS f, $2::interval AS iv) x)
     SELECT b.bound, quote_literal(b.bound::text) AS bound_literal,
            (SELECT json_agg(json_build_object('from', quote_literal(lo::text), 'to', quote_literal(hi::text), 'name', qmaint.partition_name($3, lo, hi)) ORDER BY lo)
               FROM (SELECT b.bound + b.iv * i AS lo, b.bound + b.iv * (i + 1) AS hi FROM generate_series(0, $4 - 1) i) s) AS slots
       FROM b`,
    [now, options.interval, target.name, premake],
  );
  const { bound, bound_literal: boundLiteral, slots } = b[0]!;
  const { rows: late } = await client.query<{ n: number; newest: Date }>(
    `SELECT count(*)::int AS n, max(${q(options.column)}) AS newest FROM ${target.quoted} WHERE ${q(options.column)} >= $1`,
    [bound],
  );
  if (late[0]!.n > 0) {
    throw refusal(target.text, [
      {
        message: `${late[0]!.n} row(s) have ${options.column} at or after ${bound.toISOString()} (the newest ${late[0]!.newest.toISOString()}): the old table becomes the partition of everything before that bound, so future-dated rows must be moved back or wait until the bound passes them`,
      },
    ]);
  }

  const lockTimeout = options.lockTimeout ?? '2s';
  const policy = {
    table: target.text,
    interval: options.interval,
    premake,
    retention: options.retention ?? '7 days',
    lockTimeout,
    columns: { time: options.column, status: statusColumn, live: liveValues, key: keyColumns, touch: touchColumn },
  };
  const { rows: ins } = await client.query<{ sql: string }>(
    `SELECT format('INSERT INTO qmaint.partition_policy (parent_table, partition_interval, premake, retention, lock_timeout, time_column, status_column, live_values, key_columns, touch_column, source) '
                   'VALUES (%L, %L::interval, %s, %L::interval, %L::interval, %L, %L, %L::text[], %L::text[], %L, %L::jsonb)',
                   $1::text, $2::text, $3::integer, $4::text, $5::text, $6::text, $7::text, $8::text[], $9::text[], $10::text, $11::text) AS sql`,
    [
      target.text,
      options.interval,
      premake,
      policy.retention,
      lockTimeout,
      options.column,
      statusColumn,
      liveValues,
      keyColumns,
      touchColumn,
      JSON.stringify(policy),
    ],
  );

  const table = target.quoted;
  const legacy = `${q(target.schema)}.${q(legacyName)}`;
  const col = q(options.column);
  const owner = (await client.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
  const runway = slots.map((s) => `${target.schema}.${s.name}`);
  const swap = [
    `LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`,
    `ALTER TABLE ${table} RENAME TO ${q(legacyName)}`,
    ...facts.allIndexes.map((i) => `ALTER INDEX ${q(target.schema)}.${q(i)} RENAME TO ${q(legacyIndexName(i))}`),
    `CREATE TABLE ${table} (LIKE ${legacy} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS INCLUDING COMPRESSION) PARTITION BY RANGE (${col})`,
    `ALTER TABLE ${table} DROP CONSTRAINT ${q(checkName)}`,
    ...facts.keyConstraints.map((k) => `ALTER TABLE ${table} ADD CONSTRAINT ${q(k.name)} ${k.definition}`),
    ...facts.indexes.map((i) => i.definition),
    ...facts.foreignKeys.map((f) => `ALTER TABLE ${table} ADD CONSTRAINT ${q(f.name)} ${f.definition}`),
    `ALTER TABLE ${table} ATTACH PARTITION ${legacy} FOR VALUES FROM (MINVALUE) TO (${boundLiteral})`,
    ...slots.map((s) => `CREATE TABLE ${q(target.schema)}.${q(s.name)} PARTITION OF ${table} FOR VALUES FROM (${s.from}) TO (${s.to})`),
    ...facts.sequences.map((s) => `ALTER SEQUENCE ${s.sequence} OWNED BY ${table}.${q(s.column)}`),
    ...(facts.owner !== owner
      ? [table, ...slots.map((s) => `${q(target.schema)}.${q(s.name)}`)].map((t) => `ALTER TABLE ${t} OWNER TO ${q(facts.owner)}`)
      : []),
    ...facts.grants,
    ...(facts.comment !== null ? [`COMMENT ON TABLE ${table} IS ${literal(facts.comment)}`] : []),
    ...facts.views.map((v) => `CREATE OR REPLACE VIEW ${v.name}${v.options ? ` WITH (${v.options})` : ''} AS ${v.definition}`),
    ins[0]!.sql,
  ];
  const steps: PlanStep[] = [
    {
      seq: 1,
      action: 'check',
      target: target.text,
      statement: `ALTER TABLE ${table} DROP CONSTRAINT IF EXISTS ${q(checkName)}, ADD CONSTRAINT ${q(checkName)} CHECK (${col} IS NOT NULL AND ${col} < ${boundLiteral}) NOT VALID`,
      lockLevel: `ACCESS EXCLUSIVE on ${target.text} (a catalog change, no scan; held for milliseconds)`,
      reason: `every row now and from here on is older than ${bound.toISOString()}: the bound of the first partition`,
      transactional: true,
      locks: [target.text],
    },
    {
      seq: 2,
      action: 'validate',
      target: target.text,
      statement: `ALTER TABLE ${table} VALIDATE CONSTRAINT ${q(checkName)}`,
      lockLevel: `SHARE UPDATE EXCLUSIVE on ${target.text} (scans the table; inserts, updates and claims go on)`,
      reason: 'prove the bound online, so the attach below needs no scan',
      transactional: true,
      locks: [target.text],
    },
    {
      seq: 3,
      action: 'swap',
      target: target.text,
      statement: swap.join(';\n'),
      lockLevel: `ACCESS EXCLUSIVE on ${target.text} until the commit (catalog changes only; the attach is proven by the CHECK)${facts.foreignKeys.length > 0 ? '; SHARE ROW EXCLUSIVE on the tables its foreign keys reference' : ''}`,
      reason: `in one transaction: ${target.text} becomes ${target.schema}.${legacyName}, the first partition [-infinity, ${bound.toISOString()}); a partitioned ${target.text} with the same columns, defaults, keys, indexes, foreign keys, sequences, owner and grants takes its name, with ${premake} partitions ahead; views re-pointed; the policy recorded`,
      transactional: true,
      locks: [target.text],
    },
  ];
  return {
    table: target.text,
    legacy: `${target.schema}.${legacyName}`,
    bound: bound.toISOString(),
    carried: {
      keyConstraints: facts.keyConstraints.map((k) => `${k.name} ${k.definition}`),
      indexes: facts.indexes.map((i) => i.name),
      foreignKeys: facts.foreignKeys.map((f) => `${f.name} ${f.definition}`),
      sequences: facts.sequences.map((s) => `${s.sequence} (${s.column})`),
      grants: facts.grants.length,
      views: facts.views.map((v) => v.name),
      allTablesPublications: facts.allTablesPublications,
    },
    runway,
    policy,
    steps,
  };
}

/** Check, plan and (unless dry run) run an adoption under the maintenance lock. */
export async function adopt(db: Db, options: AdoptOptions): Promise<AdoptResult> {
  return db.withClient(async (client) => {
    if (options.dryRun) return { dryRun: true as const, ...(await planAdopt(client, options)) };
    const locked = await withMaintenanceLock(client, async () => {
      const plan = await planAdopt(client, options);
      const started = Date.now();
      const lockTimeout = plan.policy.lockTimeout as string;
      try {
        const results = await executeSteps(client, plan.steps, { lockTimeout, retries: options.retries, onEvent: options.onEvent });
        return { ...plan, results, ms: Date.now() - started };
      } catch (err) {
        throw await withoutCheck(client, plan, lockTimeout, err);
      }
    });
    if (!locked.ran) {
      return { dryRun: false as const, ran: false as const, holder: locked.holder, message: 'another maintenance run holds the lock; nothing done' };
    }
    return { dryRun: false as const, ran: true as const, ...locked.result };
  });
}

/**
 * The swap did not happen: take the CHECK off again, or it would refuse rows
 * from the bound on. Returns the error to throw, saying whether that worked.
 */
async function withoutCheck(client: PgClient, plan: AdoptPlan, lockTimeout: string, cause: unknown): Promise<QmaintError> {
  const check = plan.steps[0]!;
  const drop = check.statement.replace(/, ADD CONSTRAINT .*$/s, '');
  const err = toQmaintError(cause);
  try {
    await executeSteps(client, [{ ...check, seq: 1, action: 'uncheck', statement: drop, reason: 'the swap did not happen: lift the bound' }], { lockTimeout });
    return new QmaintError(err.code, `${err.message}; nothing changed (the CHECK constraint was taken off again)`, { cause: err, details: err.details });
  } catch {
    return new QmaintError(
      err.code,
      `${err.message}; the CHECK constraint is still on ${plan.table} and refuses rows from ${plan.bound} on: run the adoption again, or ${drop}`,
      {
        cause: err,
        details: err.details,
      },
    );
  }
}

function legacyIndexName(index: string): string {
  return `${index.slice(0, 56)}_legacy`;
}

async function exists(client: PgClient, schema: string, name: string): Promise<boolean> {
  const { rows } = await client.query(`SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, [
    schema,
    name,
  ]);
  return rows.length > 0;
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** The bad_input error listing every problem, fixes included (in the message and in details). */
function refusal(table: string, problems: Problem[]): QmaintError {
  const fixes = problems.filter((p) => p.fix).map((p) => p.fix!);
  return badInput(
    `cannot adopt ${table}, nothing changed: ${problems.map((p) => p.message).join('; ')}${fixes.length > 0 ? `. Fix: ${fixes.join(' ')}` : ''}`,
    { problems },
  );
}
