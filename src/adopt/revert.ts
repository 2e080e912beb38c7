import { inTransaction, parseQualifiedName, quoteIdent, withMaintenanceLock, type Db, type PgClient } from '../db.js';
import { badInput } from '../errors.js';
import { executeSteps, type PlanStep, type StepEvent, type StepResult } from '../plan.js';
import type { AdoptResult } from './index.js';

/**
 * Undo an adoption while the first (legacy) partition still exists: one
 * transaction under lock_timeout, with the same executor as the adoption.
 * The legacy partition is detached and gets back its name, its index names
 * and the rows written since the adoption (copied in that transaction, so
 * writers wait for as long as the copy takes: the plan says how many rows);
 * the partitioned table and its other partitions are dropped; sequences and
 * views go back to the plain table; the policy is removed.
 */
export interface RevertOptions {
  table: string;
  /** lock_timeout of the statement; default: the policy's. */
  lockTimeout?: string;
  retries?: number;
  dryRun?: boolean;
  /** Called as each step starts, retries, waits on a blocker and ends (progress output). */
  onEvent?: (event: StepEvent) => void;
}

/** What undoing an adoption would run: the old table back under its name, with the rows written since. */
export interface RevertPlan {
  table: string;
  legacy: string;
  /** Rows outside the legacy partition: written since the adoption, merged back. */
  rowsToMerge: number;
  /** Partitions dropped with the partitioned table. */
  dropped: string[];
  views: string[];
  /** lock_timeout the step runs under. */
  lockTimeout: string;
  steps: PlanStep[];
}

/** A revert's outcome: the plan of a dry run, the steps run, or `ran: false` when another maintenance run held the lock. */
export type RevertResult =
  ({ dryRun: true } & RevertPlan) | ({ dryRun: false; ran: true; results: StepResult[]; ms: number } & RevertPlan) | Extract<AdoptResult, { ran: false }>;

const q = quoteIdent;

/**
 * What `revertAdoption` would run for an adopted table, checked against the
 * database now (the legacy partition must still exist).
 *
 * @param client - a client of your own or one checked out of a Db
 * @param options - the adopted table and the lock settings
 * @throws {@link QmaintError} `bad_input` when the table was not adopted or its legacy partition is gone
 */
export async function planRevert(client: PgClient, options: RevertOptions): Promise<RevertPlan> {
  const target = parseQualifiedName(options.table, 'table');
  const policy = (
    await client.query<{ lock: string }>(
      `SELECT (extract(epoch FROM lock_timeout) * 1000)::bigint || 'ms' AS lock FROM qmaint.partition_policy WHERE parent_table = $1`,
      [target.text],
    )
  ).rows[0];
  if (!policy) throw badInput(`${target.text} has no partition policy; there is no adoption to undo`);
  return inTransaction(client, async (c) => {
    await c.query(`SET LOCAL search_path = pg_catalog`);
    const parent = (
      await c.query<{ oid: number; kind: string }>(
        `SELECT cl.oid::int AS oid, cl.relkind::text AS kind FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE n.nspname = $1 AND cl.relname = $2`,
        [target.schema, target.name],
      )
    ).rows[0];
    if (!parent || parent.kind !== 'p') throw badInput(`${target.text} is not a partitioned table; there is no adoption to undo`);
    // The legacy partition: the one adopt attached FROM (MINVALUE).
    const parts = (
      await c.query<{ oid: number; name: string; relname: string; bound: string }>(
        `SELECT i.inhrelid::int AS oid, i.inhrelid::regclass::text AS name, cl.relname, pg_get_expr(cl.relpartbound, cl.oid) AS bound
           FROM pg_inherits i JOIN pg_class cl ON cl.oid = i.inhrelid WHERE i.inhparent = $1 ORDER BY 2`,
        [parent.oid],
      )
    ).rows;
    const legacy = parts.find((p) => p.bound.startsWith('FOR VALUES FROM (MINVALUE)'));
    if (!legacy) {
      throw badInput(
        `${target.text} has no partition starting at MINVALUE (the table adopt attached): it was retired already, so the adoption cannot be undone`,
      );
    }
    const incoming = (
      await c.query<{ name: string }>(
        `SELECT conname || ' of ' || conrelid::regclass::text AS name FROM pg_constraint WHERE confrelid = $1 AND contype = 'f'`,
        [parent.oid],
      )
    ).rows;
    if (incoming.length > 0) throw badInput(`foreign keys reference ${target.text} (${incoming.map((i) => i.name).join(', ')}); drop them first`);
    const rowsToMerge = Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${target.quoted} WHERE tableoid <> $1::oid`, [legacy.oid])).rows[0]!.n);
    // Index names: each legacy index is attached to the parent index that carries its original name.
    const indexes = (
      await c.query<{ legacy: string; original: string }>(
        `SELECT li.relname AS legacy, pi.relname AS original FROM pg_index x JOIN pg_class li ON li.oid = x.indexrelid
           JOIN pg_inherits h ON h.inhrelid = x.indexrelid JOIN pg_class pi ON pi.oid = h.inhparent
          WHERE x.indrelid = $1 AND li.relname <> pi.relname ORDER BY 1`,
        [legacy.oid],
      )
    ).rows;
    const sequences = (
      await c.query<{ sequence: string; column: string }>(
        `SELECT s.oid::regclass::text AS sequence, a.attname AS column FROM pg_depend d
           JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
           JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.deptype = 'a' ORDER BY 2`,
        [parent.oid],
      )
    ).rows;
    const views = (
      await c.query<{ name: string; def: string; options: string[] | null }>(
        `SELECT DISTINCT v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS def, v.reloptions AS options
           FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND v.oid <> $1 AND v.relkind = 'v' ORDER BY 1`,
        [parent.oid],
      )
    ).rows;
    const cols = (await c.query<{ cols: string }>(`SELECT qmaint.column_list($1::oid::regclass) AS cols`, [legacy.oid])).rows[0]!.cols;
    const legacyQuoted = `${q(target.schema)}.${q(legacy.relname)}`;
    const aside = `${target.name.slice(0, 50)}_qmaint_revert`;
    const checkName = `${target.name.slice(0, 48)}_qmaint_adopt`;
    const statements = [
      `LOCK TABLE ${target.quoted} IN ACCESS EXCLUSIVE MODE`,
      `ALTER TABLE ${target.quoted} DETACH PARTITION ${legacyQuoted}`,
      `ALTER TABLE ${legacyQuoted} DROP CONSTRAINT IF EXISTS ${q(checkName)}`,
      `INSERT INTO ${legacyQuoted} (${cols}) SELECT ${cols} FROM ${target.quoted}`,
      ...sequences.map((s) => `ALTER SEQUENCE ${s.sequence} OWNED BY ${legacyQuoted}.${q(s.column)}`),
      `ALTER TABLE ${target.quoted} RENAME TO ${q(aside)}`,
      `ALTER TABLE ${legacyQuoted} RENAME TO ${q(target.name)}`,
      ...views.map((v) => `CREATE OR REPLACE VIEW ${v.name}${v.options ? ` WITH (${v.options.join(', ')})` : ''} AS ${v.def.trim().replace(/;$/, '')}`),
      `DROP TABLE ${q(target.schema)}.${q(aside)}`,
      ...indexes.map((i) => `ALTER INDEX ${q(target.schema)}.${q(i.legacy)} RENAME TO ${q(i.original)}`),
      `DELETE FROM qmaint.partition_policy WHERE parent_table = '${target.text.replace(/'/g, "''")}'`,
    ];
    const dropped = parts.filter((p) => p.oid !== legacy.oid).map((p) => p.name);
    return {
      table: target.text,
      legacy: legacy.name,
      rowsToMerge,
      dropped,
      views: views.map((v) => v.name),
      steps: [
        {
          seq: 1,
          action: 'revert',
          target: target.text,
          statement: statements.join(';\n'),
          lockLevel: `ACCESS EXCLUSIVE on ${target.text} and its partitions until the commit (held while ${rowsToMerge} row(s) written since the adoption are copied back)`,
          reason: `in one transaction: ${legacy.name} is detached, takes back the ${rowsToMerge} newer row(s) and the name ${target.text}; the partitioned table and ${dropped.length} other partition(s) are dropped; sequences and views return to the plain table; the policy is removed`,
          transactional: true,
          locks: [target.text, legacy.name],
        },
      ],
      lockTimeout: options.lockTimeout ?? policy.lock,
    };
  });
}

/** Plan and (unless dry run) run the revert under the maintenance lock. */
export async function revertAdoption(db: Db, options: RevertOptions): Promise<RevertResult> {
  return db.withClient(async (client) => {
    if (options.dryRun) return { dryRun: true as const, ...(await planRevert(client, options)) };
    const locked = await withMaintenanceLock(client, async () => {
      const plan = await planRevert(client, options);
      const started = Date.now();
      const results = await executeSteps(client, plan.steps, { lockTimeout: plan.lockTimeout, retries: options.retries, onEvent: options.onEvent });
      return { ...plan, results, ms: Date.now() - started };
    });
    if (!locked.ran)
      return { dryRun: false as const, ran: false as const, holder: locked.holder, message: 'another maintenance run holds the lock; nothing done' };
    return { dryRun: false as const, ran: true as const, ...locked.result };
  });
}
