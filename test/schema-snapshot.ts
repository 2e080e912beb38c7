import type { Queryable } from '../src/db.js';

/**
 * A normalised, ordered text dump of the qmaint schema's catalog: tables and
 * their columns, constraints and indexes, sequences, types, functions (with a
 * hash of each body) and triggers. Partitions of a managed table are left out
 * (their names carry dates); everything else an install or an upgrade
 * creates is in it, so a schema change shows up as a diff in review.
 */
export async function schemaSnapshot(db: Queryable): Promise<string> {
  // Names come out schema-qualified because qmaint is not on the connection's search_path.
  const { rows } = await db.query<{ line: string }>(SNAPSHOT_SQL);
  return rows.map((r) => r.line).join('\n') + '\n';
}

const SNAPSHOT_SQL = `
WITH rels AS (
  SELECT c.oid, c.relname, c.relkind
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'qmaint' AND NOT c.relispartition AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
), lines AS (
  SELECT 'relation ' || r.relname || ' 0' AS sort, 'relation qmaint.' || r.relname || ' (' || r.relkind::text || ')' ||
         coalesce(' PARTITION BY ' || pg_catalog.pg_get_partkeydef(r.oid), '') ||
         coalesce(' WITH (' || array_to_string(cl.reloptions, ', ') || ')', '') AS line
    FROM rels r JOIN pg_catalog.pg_class cl ON cl.oid = r.oid
  UNION ALL
  SELECT 'relation ' || r.relname || ' 1 ' || lpad(a.attnum::text, 4, '0'),
         '  column ' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod) ||
         CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END ||
         CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END ||
         coalesce(' DEFAULT ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
    FROM rels r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE r.relkind <> 'S'
  UNION ALL
  SELECT 'relation ' || r.relname || ' 2 ' || co.conname,
         '  constraint ' || co.conname || ' ' || pg_catalog.pg_get_constraintdef(co.oid)
    FROM rels r JOIN pg_catalog.pg_constraint co ON co.conrelid = r.oid
   WHERE co.contype IN ('p', 'u', 'f', 'c', 'x')
  UNION ALL
  SELECT 'relation ' || r.relname || ' 3 ' || i.relname,
         '  index ' || pg_catalog.pg_get_indexdef(x.indexrelid)
    FROM rels r JOIN pg_catalog.pg_index x ON x.indrelid = r.oid JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
  UNION ALL
  SELECT 'relation ' || r.relname || ' 4 ' || t.tgname,
         '  trigger ' || pg_catalog.pg_get_triggerdef(t.oid)
    FROM rels r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
  UNION ALL
  SELECT 'relation ' || r.relname || ' 5',
         '  sequence ' || pg_catalog.format_type(s.seqtypid, NULL) || ' owned by ' ||
         coalesce((SELECT oc.relname || '.' || oa.attname FROM pg_catalog.pg_depend dep
                     JOIN pg_catalog.pg_class oc ON oc.oid = dep.refobjid
                     JOIN pg_catalog.pg_attribute oa ON oa.attrelid = dep.refobjid AND oa.attnum = dep.refobjsubid
                    WHERE dep.objid = r.oid AND dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.deptype IN ('a', 'i')), 'none')
    FROM rels r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
  UNION ALL
  SELECT 'type ' || t.typname,
         'type qmaint.' || t.typname || ' ' ||
         CASE t.typtype
           WHEN 'e' THEN 'ENUM (' || (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) || ')'
           WHEN 'c' THEN 'AS (' || (SELECT string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                     FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) || ')'
           ELSE t.typtype::text END
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname = 'qmaint' AND (t.typtype = 'e' OR (t.typtype = 'c' AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c'))
  UNION ALL
  SELECT 'z function ' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
         'function qmaint.' || p.proname || '(' || pg_catalog.pg_get_function_arguments(p.oid) || ') RETURNS ' ||
         pg_catalog.pg_get_function_result(p.oid) || ' ' || l.lanname || ' ' ||
         CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END ||
         CASE WHEN p.prosecdef THEN ' SECURITY DEFINER' ELSE '' END ||
         coalesce(' SET ' || array_to_string(p.proconfig, ' SET '), '') ||
         ' body ' || left(md5(p.prosrc), 12)
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_language l ON l.oid = p.prolang
   WHERE n.nspname = 'qmaint'
)
SELECT line FROM lines ORDER BY sort COLLATE "C", line COLLATE "C"`;
