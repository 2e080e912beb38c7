import type pg from 'pg';
import type { Queryable } from '../../src/db.js';
import type { ProfileName, VacuumProfiles } from '../../src/vacuum/profile.js';

/** pg_class.reloptions of a relation as an object (numbers and booleans typed). */
export async function reloptions(db: Queryable, relation: string): Promise<Record<string, number | boolean | string>> {
  const { rows } = await db.query<{ reloptions: string[] | null }>('SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)', [relation]);
  if (rows.length === 0) throw new Error(`no relation ${relation}`);
  const out: Record<string, number | boolean | string> = {};
  for (const o of rows[0]!.reloptions ?? []) {
    const [k, v] = [o.slice(0, o.indexOf('=')), o.slice(o.indexOf('=') + 1)];
    out[k] = v === 'true' ? true : v === 'false' ? false : Number.isNaN(Number(v)) ? v : Number(v);
  }
  return out;
}

/**
 * The default profiles as docs/vacuum.md documents them: what the tests hold
 * qmaint.vacuum_default_profiles() (the code's one definition) to.
 */
export const DOCUMENTED_DEFAULTS: VacuumProfiles = {
  hot: {
    autovacuum_vacuum_scale_factor: 0,
    autovacuum_vacuum_threshold: 'auto',
    autovacuum_vacuum_insert_scale_factor: 0,
    autovacuum_vacuum_insert_threshold: 10_000,
    autovacuum_analyze_scale_factor: 0,
    autovacuum_analyze_threshold: 'auto',
    autovacuum_vacuum_cost_limit: 2000,
    autovacuum_vacuum_cost_delay: 1,
    fillfactor: 70,
  },
  warm: {
    autovacuum_vacuum_scale_factor: 0.02,
    autovacuum_vacuum_threshold: 1000,
    autovacuum_analyze_scale_factor: 0.05,
    autovacuum_analyze_threshold: 1000,
    autovacuum_vacuum_cost_limit: 1000,
  },
  cold: {
    autovacuum_vacuum_scale_factor: 0.2,
    autovacuum_vacuum_threshold: 10_000,
    autovacuum_vacuum_insert_threshold: -1,
    autovacuum_analyze_scale_factor: 0.2,
    autovacuum_analyze_threshold: 10_000,
    autovacuum_freeze_min_age: 0,
    autovacuum_freeze_table_age: 0,
  },
};

/** A default profile with "auto" replaced by the given thresholds. */
export function profileWith(name: ProfileName, thresholds: { vacuum: number; analyze: number }): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  for (const [k, v] of Object.entries(DOCUMENTED_DEFAULTS[name])) {
    out[k] = v === 'auto' ? (k === 'autovacuum_vacuum_threshold' ? thresholds.vacuum : thresholds.analyze) : v;
  }
  return out;
}

/**
 * Make the changes just done on this client visible in pg_stat_user_tables:
 * ask the backend to flush its pending counters, then wait until the given
 * relation shows at least this many inserts + updates + deletes.
 */
export async function flushStats(client: pg.Client, relation: string, minChanges: number): Promise<void> {
  await client.query('SELECT pg_stat_force_next_flush()');
  for (let i = 0; i < 200; i++) {
    const { rows } = await client.query<{ n: string | null }>(
      'SELECT n_tup_ins + n_tup_upd + n_tup_del AS n FROM pg_stat_user_tables WHERE relid = to_regclass($1)',
      [relation],
    );
    if (Number(rows[0]?.n ?? 0) >= minChanges) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`statistics for ${relation} never showed ${minChanges} changes`);
}

export async function naptimeSeconds(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ s: number }>(`SELECT setting::integer AS s FROM pg_settings WHERE name = 'autovacuum_naptime'`);
  return rows[0]!.s;
}

/** Create the partition covering ts and return its name. */
export async function partitionFor(db: Queryable, ts: string): Promise<string> {
  const { rows } = await db.query<{ p: string }>(`SELECT qmaint.ensure_partition('qmaint.jobs', $1::timestamptz)::text AS p`, [ts]);
  return rows[0]!.p.includes('.') ? rows[0]!.p : `qmaint.${rows[0]!.p}`;
}
