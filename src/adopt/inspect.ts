import { quoteIdent, type Queryable } from '../db.js';

/**
 * What `adopt` needs to know about an existing, unpartitioned table before it
 * puts it behind time-range partitions: every problem that stops it (each with
 * the SQL that fixes it where there is one), and everything it carries over to
 * the partitioned parent. Read from the catalog with search_path pinned to
 * pg_catalog, so every name in a deparsed definition comes schema-qualified.
 */
export interface TableFacts {
  oid: number;
  schema: string;
  name: string;
  /** "schema"."table" */
  quoted: string;
  owner: string;
  /** Problems that stop the adoption (nothing is changed while there is one). */
  problems: Problem[];
  /** Primary key and unique constraints, as ALTER TABLE ... ADD CONSTRAINT text. */
  keyConstraints: { name: string; definition: string }[];
  /** Indexes that back no constraint, as CREATE INDEX text naming the original table. */
  indexes: { name: string; definition: string }[];
  /** Names of every index of the table (they move aside with the table). */
  allIndexes: string[];
  /** Foreign keys from this table to others (made on the parent before the attach, which then adopts the existing ones). */
  foreignKeys: { name: string; definition: string }[];
  /** Sequences owned by a column of the table (their ownership moves to the parent's column). */
  sequences: { sequence: string; column: string }[];
  /** Table privileges as GRANT statements for the parent (the owner's own are implicit). */
  grants: string[];
  /** Views reading the table: re-pointed at the parent (CREATE OR REPLACE VIEW) in the swap. */
  views: { name: string; definition: string; options: string | null }[];
  /** Publications listing all tables (the partitions' changes are published; nothing to change). */
  allTablesPublications: string[];
  comment: string | null;
  /** Primary key columns, in order. */
  primaryKey: string[];
  columns: Set<string>;
}

export interface Problem {
  /** What is wrong and why adopt cannot go on. */
  message: string;
  /** SQL that fixes it, when there is a mechanical fix. */
  fix?: string;
}

/** The subset of the adoption request the checks need. */
export interface InspectRequest {
  schema: string;
  name: string;
  column: string;
  statusColumn: string;
  keyColumns?: string[];
  touchColumn?: string | null;
  /** Name of adopt's own CHECK constraint (a leftover from an interrupted run is replaced, not a problem). */
  checkName: string;
}

const q = quoteIdent;

/** Catalog facts and every problem of one table; does not change anything. */
export async function inspectTable(db: Queryable, req: InspectRequest): Promise<TableFacts | { missing: true }> {
  const rel = (
    await db.query<{
      oid: number;
      relkind: string;
      relispartition: boolean;
      relpersistence: string;
      owner: string;
      rls: boolean;
      inherits: boolean;
      comment: string | null;
    }>(
      `SELECT c.oid::int AS oid, c.relkind::text AS relkind, c.relispartition, c.relpersistence::text AS relpersistence, pg_get_userbyid(c.relowner) AS owner,
              c.relrowsecurity AS rls, EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid) AS inherits,
              obj_description(c.oid, 'pg_class') AS comment
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
      [req.schema, req.name],
    )
  ).rows[0];
  if (!rel) return { missing: true };
  const table = `${q(req.schema)}.${q(req.name)}`;
  const problems: Problem[] = [];
  const facts: TableFacts = {
    oid: rel.oid,
    schema: req.schema,
    name: req.name,
    quoted: table,
    owner: rel.owner,
    problems,
    keyConstraints: [],
    indexes: [],
    allIndexes: [],
    foreignKeys: [],
    sequences: [],
    grants: [],
    views: [],
    allTablesPublications: [],
    comment: rel.comment,
    primaryKey: [],
    columns: new Set(),
  };
  if (rel.relkind === 'p') {
    problems.push({ message: `${req.schema}.${req.name} is already partitioned; write a policy for it instead (qmaint partitions apply)` });
    return facts;
  }
  if (rel.relkind !== 'r') {
    problems.push({ message: `${req.schema}.${req.name} is not a table (relkind ${rel.relkind})` });
    return facts;
  }
  if (rel.relispartition || rel.inherits)
    problems.push({ message: `${req.schema}.${req.name} takes part in inheritance or partitioning already; only a plain table can be adopted` });
  if (rel.relpersistence !== 'p') problems.push({ message: `${req.schema}.${req.name} is unlogged or temporary; only a permanent table can be adopted` });

  const cols = (
    await db.query<{ name: string; type: string; identity: string; tz: boolean; ts: boolean }>(
      `SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attidentity::text AS identity,
              atttypid = 'timestamptz'::regtype AS tz, atttypid = 'timestamp'::regtype AS ts
         FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
      [rel.oid],
    )
  ).rows;
  facts.columns = new Set(cols.map((c) => c.name));
  const time = cols.find((c) => c.name === req.column);
  if (!time) problems.push({ message: `${req.schema}.${req.name} has no column ${req.column} (the time column)` });
  else if (time.ts) {
    problems.push({
      message: `the time column ${req.column} is timestamp without time zone; partitions are bounded in UTC on timestamptz, so convert it first (this rewrites the table under ACCESS EXCLUSIVE: plan a window, or add a timestamptz column and backfill it); the values are taken as UTC here, name your zone instead if they are local times`,
      fix: `ALTER TABLE ${table} ALTER COLUMN ${q(req.column)} TYPE timestamptz USING ${q(req.column)} AT TIME ZONE 'UTC';`,
    });
  } else if (!time.tz) problems.push({ message: `the time column ${req.column} is ${time.type}; it must be timestamptz` });
  for (const c of cols.filter((c) => c.identity !== '')) {
    problems.push({
      message: `column ${c.name} is an identity column; PostgreSQL before 17 cannot carry an identity across ATTACH PARTITION. Give it a sequence default instead (keeps its values; run while writers are paused, or it races with inserts)`,
      fix: [
        `BEGIN;`,
        `LOCK TABLE ${table} IN SHARE ROW EXCLUSIVE MODE;`,
        `CREATE SEQUENCE ${q(req.schema)}.${q(`${req.name}_${c.name}_seq2`.slice(0, 63))} OWNED BY ${table}.${q(c.name)};`,
        `SELECT setval('${q(req.schema)}.${q(`${req.name}_${c.name}_seq2`.slice(0, 63))}', coalesce(max(${q(c.name)}), 0) + 1, false) FROM ${table};`,
        `ALTER TABLE ${table} ALTER COLUMN ${q(c.name)} DROP IDENTITY, ALTER COLUMN ${q(c.name)} SET DEFAULT nextval('${q(req.schema)}.${q(`${req.name}_${c.name}_seq2`.slice(0, 63))}');`,
        `COMMIT;`,
      ].join(' '),
    });
  }
  for (const [what, col] of [
    ['status column', req.statusColumn],
    ...(req.keyColumns ?? []).map((k) => ['key column', k] as const),
    ...(req.touchColumn ? [['touch column', req.touchColumn] as const] : []),
  ] as const) {
    if (!facts.columns.has(col)) problems.push({ message: `${req.schema}.${req.name} has no ${what} ${col}` });
  }

  // Constraints.
  const cons = (
    await db.query<{ name: string; type: string; def: string; cols: string[]; validated: boolean; index: string | null }>(
      `SELECT c.conname AS name, c.contype::text AS type, pg_get_constraintdef(c.oid) AS def, c.convalidated AS validated,
              ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) AS cols,
              c.conindid::regclass::text AS index
         FROM pg_constraint c WHERE c.conrelid = $1 ORDER BY c.conname`,
      [rel.oid],
    )
  ).rows;
  for (const c of cons) {
    if (c.type === 'p' || c.type === 'u') {
      if (c.type === 'p') facts.primaryKey = c.cols;
      if (!c.cols.includes(req.column)) {
        const newIndex = `${c.name.slice(0, 55)}_with_t`;
        const kind = c.type === 'p' ? 'PRIMARY KEY' : 'UNIQUE';
        problems.push({
          message: `${kind} ${c.name} (${c.cols.join(', ')}) does not include the time column ${req.column}: a unique constraint of a partitioned table must contain the partition key, because each partition enforces it only within itself. Widen it (build the index online, then swap the constraint in a short lock; foreign keys that reference it must be dropped first and re-created after)`,
          fix: [
            `CREATE UNIQUE INDEX CONCURRENTLY ${q(newIndex)} ON ${table} (${[...c.cols, req.column].map(q).join(', ')});`,
            `ALTER TABLE ${table} DROP CONSTRAINT ${q(c.name)}, ADD CONSTRAINT ${q(c.name)} ${kind} USING INDEX ${q(newIndex)};`,
          ].join(' '),
        });
      }
      facts.keyConstraints.push({ name: c.name, definition: c.def });
    } else if (c.type === 'f') {
      if (!c.validated)
        problems.push({ message: `foreign key ${c.name} is NOT VALID; validate it first`, fix: `ALTER TABLE ${table} VALIDATE CONSTRAINT ${q(c.name)};` });
      facts.foreignKeys.push({ name: c.name, definition: c.def });
    } else if (c.type === 'x') {
      problems.push({ message: `exclusion constraint ${c.name} cannot be carried to a partitioned table; drop it or keep the table unpartitioned` });
    } else if (c.type === 'c' && !c.validated && c.name !== req.checkName) {
      problems.push({ message: `CHECK constraint ${c.name} is NOT VALID; validate it first`, fix: `ALTER TABLE ${table} VALIDATE CONSTRAINT ${q(c.name)};` });
    }
  }
  const incoming = (
    await db.query<{ name: string; rel: string }>(
      `SELECT conname AS name, conrelid::regclass::text AS rel FROM pg_constraint WHERE confrelid = $1 AND contype = 'f' ORDER BY 2, 1`,
      [rel.oid],
    )
  ).rows;
  for (const f of incoming) {
    problems.push({
      message: `foreign key ${f.name} of ${f.rel} references this table; adopt does not re-point references. Drop it for the conversion and add it back afterwards (ADD ... NOT VALID, then VALIDATE CONSTRAINT)`,
      fix: `ALTER TABLE ${f.rel} DROP CONSTRAINT ${q(f.name)};`,
    });
  }

  // Indexes.
  const idx = (
    await db.query<{ name: string; def: string; unique: boolean; valid: boolean; constraint: boolean; cols: string[] }>(
      `SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS def, i.indisunique AS unique, i.indisvalid AND i.indisready AS valid,
              EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) AS constraint,
              ARRAY(SELECT a.attname::text FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k) AS cols
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = $1 ORDER BY ic.relname`,
      [rel.oid],
    )
  ).rows;
  for (const i of idx) {
    facts.allIndexes.push(i.name);
    if (!i.valid) {
      problems.push({
        message: `index ${i.name} is invalid (an interrupted CREATE INDEX CONCURRENTLY?); drop or rebuild it first`,
        fix: `REINDEX INDEX CONCURRENTLY ${q(req.schema)}.${q(i.name)};`,
      });
      continue;
    }
    if (i.constraint) continue;
    if (i.unique && !i.cols.includes(req.column)) {
      problems.push({
        message: `unique index ${i.name} does not include the time column ${req.column}: a partitioned table enforces uniqueness only within each partition, so it must contain the partition key. Widen it`,
        fix: `CREATE UNIQUE INDEX CONCURRENTLY ${q(`${i.name.slice(0, 55)}_with_t`)} ON ${table} (${[...i.cols, req.column].map(q).join(', ')}); DROP INDEX CONCURRENTLY ${q(req.schema)}.${q(i.name)};`,
      });
    }
    facts.indexes.push({ name: i.name, definition: i.def });
  }

  // Triggers, rules, row security, publications.
  const triggers = (await db.query<{ name: string }>(`SELECT tgname AS name FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal ORDER BY 1`, [rel.oid]))
    .rows;
  for (const t of triggers) {
    problems.push({
      message: `trigger ${t.name} is not carried over (its copy on each partition would clash with it on the attach); drop it for the conversion and create it on the table again afterwards (a row trigger on the partitioned table fires for every partition)`,
      fix: `DROP TRIGGER ${q(t.name)} ON ${table};`,
    });
  }
  const rules = (
    await db.query<{ name: string }>(`SELECT rulename AS name FROM pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN' ORDER BY 1`, [rel.oid])
  ).rows;
  for (const r of rules) problems.push({ message: `rule ${r.name} is not carried over; drop it first and re-create it afterwards` });
  const policies = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_policy WHERE polrelid = $1`, [rel.oid])).rows[0]!.n;
  if (rel.rls || policies > 0) problems.push({ message: `row-level security is not carried over; adopt refuses a table with RLS enabled or policies on it` });
  const pubs = (
    await db.query<{ name: string; all: boolean }>(
      `SELECT p.pubname AS name, p.puballtables AS all FROM pg_publication p
        WHERE p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = $1) ORDER BY 1`,
      [rel.oid],
    )
  ).rows;
  for (const p of pubs) {
    if (p.all) facts.allTablesPublications.push(p.name);
    else
      problems.push({
        message: `publication ${p.name} lists this table; remove it for the conversion and add the partitioned table afterwards (consider publish_via_partition_root)`,
        fix: `ALTER PUBLICATION ${q(p.name)} DROP TABLE ${table};`,
      });
  }

  // Sequences owned by its columns.
  facts.sequences = (
    await db.query<{ sequence: string; column: string }>(
      `SELECT s.oid::regclass::text AS sequence, a.attname AS column FROM pg_depend d
         JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.deptype = 'a' ORDER BY 2`,
      [rel.oid],
    )
  ).rows;

  // Privileges, table-level and column-level (the owner's are implicit).
  const acl = (
    await db.query<{ grantee: string | null; privilege: string; grantable: boolean; column: string | null }>(
      `SELECT CASE WHEN x.grantee = 0 THEN NULL ELSE pg_get_userbyid(x.grantee) END AS grantee, x.privilege_type AS privilege, x.is_grantable AS grantable, NULL::text AS column
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) x WHERE c.oid = $1 AND x.grantee <> c.relowner
       UNION ALL
       SELECT CASE WHEN x.grantee = 0 THEN NULL ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable, a.attname::text
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid CROSS JOIN LATERAL aclexplode(a.attacl) x
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND x.grantee <> c.relowner
       ORDER BY 4 NULLS FIRST, 1, 2`,
      [rel.oid],
    )
  ).rows;
  facts.grants = acl.map(
    (g) =>
      `GRANT ${g.privilege}${g.column ? ` (${q(g.column)})` : ''} ON ${table} TO ${g.grantee === null ? 'PUBLIC' : q(g.grantee)}${g.grantable ? ' WITH GRANT OPTION' : ''}`,
  );

  // Views that read it (directly); materialized views are refused.
  const views = (
    await db.query<{ name: string; kind: string; def: string; options: string[] | null }>(
      `SELECT DISTINCT v.oid::regclass::text AS name, v.relkind::text AS kind, pg_get_viewdef(v.oid) AS def, v.reloptions AS options
         FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND v.oid <> $1 ORDER BY 1`,
      [rel.oid],
    )
  ).rows;
  for (const v of views) {
    if (v.kind === 'v') facts.views.push({ name: v.name, definition: v.def.trim().replace(/;$/, ''), options: v.options?.join(', ') ?? null });
    else problems.push({ message: `materialized view ${v.name} reads this table; drop it for the conversion and create it again afterwards` });
  }
  return facts;
}
