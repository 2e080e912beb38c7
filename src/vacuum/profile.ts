/**
 * Vacuum profiles: the autovacuum storage parameters a partition carries at
 * each age (hot, warm, cold), their defaults, and validation against
 * PostgreSQL's own limits, so a bad policy is refused before any DDL runs.
 */
import type { Queryable } from '../db.js';

/** The three vacuum profiles a partition moves through. */
export const PROFILE_NAMES = ['hot', 'warm', 'cold'] as const;
/** A vacuum profile: hot (the partition taking inserts), warm, or cold (drained). */
export type ProfileName = (typeof PROFILE_NAMES)[number];

/** "auto": the threshold is derived from measured churn (see docs/vacuum.md). */
export const AUTO = 'auto';
/** A storage parameter's value in a profile. */
export type ProfileValue = number | boolean | typeof AUTO;
/** Storage parameters (autovacuum_*, fillfactor, ...) of one profile. */
export type VacuumProfile = Record<string, ProfileValue>;
/** The hot, warm and cold profiles of a policy. */
export type VacuumProfiles = Record<ProfileName, VacuumProfile>;

interface ParamSpec {
  type: 'integer' | 'real' | 'boolean';
  min?: number;
  max?: number;
  /** May be "auto" in the hot profile. */
  auto?: boolean;
}

const INT_MAX = 2_147_483_647;

/**
 * The table storage parameters qmaint manages, with the bounds PostgreSQL 15+
 * enforces for them as reloptions (src/backend/access/common/reloptions.c).
 * Note the reloption bounds differ from the GUCs': cost_limit 1..10000 and
 * cost_delay 0..100 ms (-1 is only the "unset" default, not a value you can set).
 * autovacuum_vacuum_max_threshold is left out: PostgreSQL 15-17 reject it, and
 * with scale factor 0 it has nothing to cap.
 */
export const STORAGE_PARAMETERS: Readonly<Record<string, ParamSpec>> = {
  autovacuum_enabled: { type: 'boolean' },
  autovacuum_vacuum_threshold: { type: 'integer', min: 0, max: INT_MAX, auto: true },
  autovacuum_vacuum_scale_factor: { type: 'real', min: 0, max: 100 },
  autovacuum_vacuum_insert_threshold: { type: 'integer', min: -1, max: INT_MAX },
  autovacuum_vacuum_insert_scale_factor: { type: 'real', min: 0, max: 100 },
  autovacuum_analyze_threshold: { type: 'integer', min: 0, max: INT_MAX, auto: true },
  autovacuum_analyze_scale_factor: { type: 'real', min: 0, max: 100 },
  autovacuum_vacuum_cost_limit: { type: 'integer', min: 1, max: 10_000 },
  autovacuum_vacuum_cost_delay: { type: 'real', min: 0, max: 100 },
  autovacuum_freeze_min_age: { type: 'integer', min: 0, max: 1_000_000_000 },
  autovacuum_freeze_max_age: { type: 'integer', min: 100_000, max: 2_000_000_000 },
  autovacuum_freeze_table_age: { type: 'integer', min: 0, max: 2_000_000_000 },
  autovacuum_multixact_freeze_min_age: { type: 'integer', min: 0, max: 1_000_000_000 },
  autovacuum_multixact_freeze_max_age: { type: 'integer', min: 10_000, max: 2_000_000_000 },
  autovacuum_multixact_freeze_table_age: { type: 'integer', min: 0, max: 2_000_000_000 },
  fillfactor: { type: 'integer', min: 10, max: 100 },
};

/**
 * The default profiles, read from the one place they are defined:
 * qmaint.vacuum_default_profiles() (sql/functions/04_vacuum.sql, documented in
 * docs/vacuum.md). A policy's profile is laid over them key by key.
 *
 * @param db - a Db, a pool or a client of your own
 */
export async function defaultVacuumProfiles(db: Queryable): Promise<VacuumProfiles> {
  const { rows } = await db.query<{ d: VacuumProfiles }>('SELECT qmaint.vacuum_default_profiles() AS d');
  return rows[0]!.d;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  // No object is left (TypeScript still calls it `{}`): a primitive or a function, which String() writes as itself.
  const rest = value as number | boolean | bigint | symbol | undefined | ((...args: never[]) => unknown);
  return String(rest);
}

/** Every problem with one parameter value, as a readable line (empty when fine). */
export function checkParameter(profile: string, key: string, value: unknown): string[] {
  const where = `vacuum.${profile}.${key}`;
  const spec = STORAGE_PARAMETERS[key];
  if (!spec) {
    return [`${where}: unknown storage parameter; use one of ${Object.keys(STORAGE_PARAMETERS).join(', ')}`];
  }
  if (value === AUTO) {
    if (spec.auto && profile === 'hot') return [];
    return [`${where}: "auto" is only allowed for autovacuum_vacuum_threshold and autovacuum_analyze_threshold in the hot profile`];
  }
  if (spec.type === 'boolean') {
    return typeof value === 'boolean' ? [] : [`${where}: must be true or false, got ${describe(value)}`];
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return [`${where}: must be a number${spec.auto ? ' or "auto"' : ''}, got ${describe(value)}`];
  }
  if (spec.type === 'integer' && !Number.isInteger(value)) {
    return [`${where}: must be a whole number, got ${value}`];
  }
  if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) {
    return [`${where}: ${value} is outside PostgreSQL's limits ${spec.min}..${spec.max}`];
  }
  return [];
}

/**
 * Every problem with a `vacuum` policy section: not an object, unknown profile
 * names, unknown storage parameters, values of the wrong type or outside
 * PostgreSQL's limits. An empty list means it is valid. Profiles may be left
 * out (the defaults apply, see defaultVacuumProfiles).
 */
export function validateVacuumProfiles(value: unknown): string[] {
  if (value === undefined) return [];
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return [`vacuum: must be an object with hot, warm and/or cold profiles, got ${describe(value)}`];
  }
  const problems: string[] = [];
  for (const [name, profile] of Object.entries(value as Record<string, unknown>)) {
    if (!(PROFILE_NAMES as readonly string[]).includes(name)) {
      problems.push(`vacuum.${name}: unknown profile; use hot, warm or cold`);
      continue;
    }
    if (profile === null || typeof profile !== 'object' || Array.isArray(profile)) {
      problems.push(`vacuum.${name}: must be an object of storage parameters, got ${describe(profile)}`);
      continue;
    }
    for (const [key, v] of Object.entries(profile as Record<string, unknown>)) {
      problems.push(...checkParameter(name, key, v));
    }
  }
  return problems;
}
