import type { Queryable } from '../db.js';
import { badOption, sqlState } from '../errors.js';
import { policyTables } from '../partitions/policy.js';

/** How bloat was measured: pgstattuple_approx, or an estimate from statistics. */
export type BloatMethod = 'pgstattuple_approx' | 'estimate';

/** The free space of a partition, as {@link BloatMethod} measured it. */
export interface Bloat {
  method: BloatMethod;
  /** Dead tuples plus free space beyond what the live rows need (null: no statistics yet). */
  bytes: number | null;
  percent: number | null;
  deadTupleBytes: number | null;
  freeBytes: number | null;
}

/** One partition in a {@link VacuumStatus}. */
export interface PartitionVacuumStatus {
  parentTable: string;
  partition: string;
  state: string;
  profile: string;
  liveTuples: number;
  deadTuples: number;
  /** dead / (live + dead), 0 when both are 0. */
  deadRatio: number;
  lastVacuum: string | null;
  lastAutovacuum: string | null;
  lastAnalyze: string | null;
  lastAutoanalyze: string | null;
  vacuumCount: number;
  autovacuumCount: number;
  analyzeCount: number;
  autoanalyzeCount: number;
  tableBytes: number;
  indexBytes: number;
  relfrozenxidAge: number;
  bloat: Bloat;
  /** The partition's storage parameters as set (autovacuum_*, fillfactor, ...). */
  reloptions: Record<string, number | boolean | string>;
}

/** What holds the xmin horizon back: a transaction, an idle-in-transaction session, a standby, a replication slot or a prepared transaction. */
export type XminHolderKind = 'transaction' | 'idle_in_transaction' | 'standby' | 'replication_slot' | 'prepared_transaction';

/** Something that keeps VACUUM from removing rows that died after its xmin. */
export interface XminHolder {
  kind: XminHolderKind;
  /** Backend pid (sessions, active slots). */
  pid: number | null;
  /** Slot name or prepared transaction gid. */
  name: string | null;
  database: string | null;
  user: string | null;
  applicationName: string | null;
  state: string | null;
  xmin: string | null;
  /** Transactions since its xmin. */
  xminAge: number | null;
  /** Seconds since its transaction began (or it was prepared); null for slots. */
  ageSeconds: number | null;
  since: string | null;
  query: string | null;
}

/** What {@link vacuumStatus} returns. */
export interface VacuumStatus {
  now: string;
  bloatMethod: BloatMethod;
  /** Why pgstattuple was not used, when it was not. */
  bloatNote: string | null;
  partitions: PartitionVacuumStatus[];
  horizon: { oldestXminAge: number | null; holders: XminHolder[] };
  databaseFrozenXidAge: number;
  /** Replication slots (an inactive one keeps WAL and holds the xmin horizon back) and the standbys streaming from this server. */
  replication: ReplicationStatus;
}

/** Replication as this server sees it: whether it is a standby, its replication slots (an inactive one holds WAL and the xmin horizon back) and its standbys. */
export interface ReplicationStatus {
  inRecovery: boolean;
  slots: { name: string; type: string; active: boolean; retainedWalBytes: number | null; xminAge: number | null }[];
  standbys: { name: string; state: string; syncState: string; replayLagMs: number | null; replayLagBytes: number | null }[];
}

/** Slots and standbys as this server sees them (a standby has no WAL position of its own to measure slots against). */
export async function replicationStatus(db: Queryable): Promise<ReplicationStatus> {
  const { rows: rec } = await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
  const { rows: slots } = await db.query<{ slot_name: string; slot_type: string; active: boolean; retained: string | null; xmin_age: number | null }>(
    `SELECT slot_name, slot_type, active,
            CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained,
            greatest(age(xmin), age(catalog_xmin)) AS xmin_age
       FROM pg_replication_slots ORDER BY slot_name`,
  );
  const { rows: standbys } = await db.query<{ name: string; state: string; sync_state: string; lag_ms: number | null; lag_bytes: string | null }>(
    `SELECT coalesce(nullif(application_name, ''), host(client_addr), 'pid ' || pid) AS name, state, sync_state,
            (extract(epoch FROM replay_lag) * 1000)::float8 AS lag_ms, pg_wal_lsn_diff(sent_lsn, replay_lsn)::bigint AS lag_bytes
       FROM pg_stat_replication ORDER BY 1`,
  );
  return {
    inRecovery: rec[0]!.r,
    slots: slots.map((s) => ({ name: s.slot_name, type: s.slot_type, active: s.active, retainedWalBytes: numOrNull(s.retained), xminAge: s.xmin_age })),
    standbys: standbys.map((s) => ({ name: s.name, state: s.state, syncState: s.sync_state, replayLagMs: s.lag_ms, replayLagBytes: numOrNull(s.lag_bytes) })),
  };
}

/** Options of {@link vacuumStatus}. */
export interface StatusOptions {
  /** The time partition states are judged at. */
  now: Date;
  /** auto: pgstattuple_approx when the extension exists or can be created, else the estimate. */
  bloat?: 'auto' | 'approx' | 'estimate';
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const iso = (v: Date | null): string | null => (v ? v.toISOString() : null);

/**
 * The schema pgstattuple lives in, creating the extension when allowed.
 * Returns a reason instead when it cannot be used.
 */
async function pgstattupleSchema(db: Queryable): Promise<{ schema: string } | { reason: string }> {
  const find = async () =>
    (await db.query<{ nspname: string }>(`SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'`))
      .rows[0]?.nspname;
  const existing = await find();
  if (existing) return { schema: existing };
  try {
    await db.query('CREATE EXTENSION IF NOT EXISTS pgstattuple');
  } catch (err) {
    // A concurrent CREATE EXTENSION can win the race (unique violation): look again.
    const again = sqlState(err) === '23505' ? await find() : undefined;
    if (again) return { schema: again };
    return { reason: `pgstattuple is not available (${err instanceof Error ? err.message : String(err)}); bloat is a statistics-based estimate` };
  }
  const created = await find();
  return created ? { schema: created } : { reason: 'pgstattuple could not be found after CREATE EXTENSION; bloat is a statistics-based estimate' };
}

const PARTITIONS_SQL = `
SELECT $2::text AS parent_table, format('%I.%I', n.nspname, c.relname) AS partition, c.oid::bigint AS relid, st.state, st.profile,
       s.n_live_tup, s.n_dead_tup, s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
       pg_table_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes,
       age(c.relfrozenxid) AS relfrozenxid_age, qmaint.reloptions_json(c.reloptions) AS reloptions,
       -- inputs of the statistics-based bloat estimate
       pg_relation_size(c.oid) AS main_bytes, c.reltuples,
       (SELECT sum(ps.avg_width) FROM pg_stats ps WHERE ps.schemaname = n.nspname AND ps.tablename = c.relname) AS data_width,
       current_setting('block_size')::integer AS block_size,
       coalesce((SELECT substr(o, 12)::integer FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS fillfactor
  FROM qmaint.partition_states(to_regclass($2), $1::timestamptz) st
  JOIN pg_class c ON c.oid = st.partition::oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 ORDER BY st.lower_bound, partition`;

interface PartitionRow {
  parent_table: string;
  partition: string;
  relid: string;
  state: string;
  profile: string;
  n_live_tup: string | null;
  n_dead_tup: string | null;
  last_vacuum: Date | null;
  last_autovacuum: Date | null;
  last_analyze: Date | null;
  last_autoanalyze: Date | null;
  vacuum_count: string | null;
  autovacuum_count: string | null;
  analyze_count: string | null;
  autoanalyze_count: string | null;
  table_bytes: string;
  index_bytes: string;
  relfrozenxid_age: number;
  reloptions: Record<string, number | boolean | string>;
  main_bytes: string;
  reltuples: number;
  data_width: string | null;
  block_size: number;
  fillfactor: number;
}

/**
 * Bloat from statistics: the pages the live rows would need (row header 24
 * bytes + the average column widths, 8-byte aligned, + a 4-byte line pointer,
 * packed to the fillfactor) against the pages the heap has. Null until the
 * partition has been analyzed.
 */
export function estimateBloat(row: Pick<PartitionRow, 'main_bytes' | 'reltuples' | 'data_width' | 'block_size' | 'fillfactor'>): Bloat {
  const mainBytes = Number(row.main_bytes);
  if (row.data_width === null || row.reltuples < 0) return { method: 'estimate', bytes: null, percent: null, deadTupleBytes: null, freeBytes: null };
  const tupleBytes = Math.ceil((24 + Number(row.data_width)) / 8) * 8 + 4;
  const usable = (row.block_size - 24) * (row.fillfactor / 100);
  const neededPages = Math.ceil((row.reltuples * tupleBytes) / usable);
  const bytes = Math.max(0, mainBytes - neededPages * row.block_size);
  return { method: 'estimate', bytes, percent: mainBytes > 0 ? round2((100 * bytes) / mainBytes) : 0, deadTupleBytes: null, freeBytes: null };
}

const round2 = (x: number) => Math.round(x * 100) / 100;

async function approxBloat(db: Queryable, schema: string, relid: string): Promise<Bloat> {
  const fn = `"${schema.replace(/"/g, '""')}".pgstattuple_approx`;
  const { rows } = await db.query<{ dead_tuple_len: string; approx_free_space: string; dead_tuple_percent: number; approx_free_percent: number }>(
    `SELECT dead_tuple_len, approx_free_space, dead_tuple_percent, approx_free_percent FROM ${fn}($1::oid::regclass)`,
    [relid],
  );
  const r = rows[0]!;
  const dead = Number(r.dead_tuple_len);
  const free = Number(r.approx_free_space);
  return {
    method: 'pgstattuple_approx',
    bytes: dead + free,
    percent: round2(Number(r.dead_tuple_percent) + Number(r.approx_free_percent)),
    deadTupleBytes: dead,
    freeBytes: free,
  };
}

/**
 * Per-partition vacuum state of every managed parent, and what holds the xmin horizon back.
 *
 * Read-only; it creates the pgstattuple extension when it may.
 *
 * @param db - a Db, a pool or a client of your own
 * @param options - see {@link VacuumStatusOptions}; bloat method `auto` by default
 * @throws {@link QmaintError} `bad_input` when `bloat` is `approx` and pgstattuple cannot be used (`options: ['bloat']`)
 */
export async function vacuumStatus(db: Queryable, options: StatusOptions): Promise<VacuumStatus> {
  const mode = options.bloat ?? 'auto';
  let schema: string | null = null;
  let bloatNote: string | null = null;
  if (mode !== 'estimate') {
    const found = await pgstattupleSchema(db);
    if ('schema' in found) schema = found.schema;
    else if (mode === 'approx') throw badOption('bloat', `${found.reason.replace(/; bloat is.*$/, '')}; install postgresql-contrib or use bloat 'estimate'`);
    else bloatNote = found.reason;
  } else {
    bloatNote = 'statistics-based estimate requested';
  }
  // One statement per managed table: joined to the policy table, the planner
  // took 180 rows for it (never analysed) times a thousand partitions each,
  // and a server built with LLVM JIT-compiled the statement (1.9 s of a
  // 2.7 s call at 1,000 partitions on PostgreSQL 15).
  const rows: PartitionRow[] = [];
  for (const parent of await policyTables(db)) rows.push(...(await db.query<PartitionRow>(PARTITIONS_SQL, [options.now.toISOString(), parent])).rows);
  const partitions: PartitionVacuumStatus[] = [];
  for (const r of rows) {
    const live = num(r.n_live_tup);
    const dead = num(r.n_dead_tup);
    partitions.push({
      parentTable: r.parent_table,
      partition: r.partition,
      state: r.state,
      profile: r.profile,
      liveTuples: live,
      deadTuples: dead,
      deadRatio: live + dead > 0 ? Math.round((dead / (live + dead)) * 10_000) / 10_000 : 0,
      lastVacuum: iso(r.last_vacuum),
      lastAutovacuum: iso(r.last_autovacuum),
      lastAnalyze: iso(r.last_analyze),
      lastAutoanalyze: iso(r.last_autoanalyze),
      vacuumCount: num(r.vacuum_count),
      autovacuumCount: num(r.autovacuum_count),
      analyzeCount: num(r.analyze_count),
      autoanalyzeCount: num(r.autoanalyze_count),
      tableBytes: Number(r.table_bytes),
      indexBytes: Number(r.index_bytes),
      relfrozenxidAge: r.relfrozenxid_age,
      bloat: schema ? await approxBloat(db, schema, r.relid) : estimateBloat(r),
      reloptions: r.reloptions,
    });
  }
  const holders = await xminHolders(db);
  const { rows: dbRows } = await db.query<{ age: number }>('SELECT age(datfrozenxid) AS age FROM pg_database WHERE datname = current_database()');
  return {
    now: options.now.toISOString(),
    bloatMethod: schema ? 'pgstattuple_approx' : 'estimate',
    bloatNote,
    partitions,
    horizon: { oldestXminAge: holders.reduce<number | null>((m, h) => (h.xminAge !== null && (m === null || h.xminAge > m) ? h.xminAge : m), null), holders },
    databaseFrozenXidAge: dbRows[0]?.age ?? 0,
    replication: await replicationStatus(db),
  };
}

// Ages of live sessions are measured on the server's clock (now()), not --now:
// they describe the running system, not a planned moment.
const HOLDERS_SQL = `
SELECT CASE WHEN a.backend_type = 'walsender' THEN 'standby'
            WHEN a.state LIKE 'idle in transaction%' THEN 'idle_in_transaction'
            ELSE 'transaction' END AS kind,
       a.pid, NULL::text AS name, a.datname AS database, a.usename AS "user", a.application_name, a.state,
       coalesce(a.backend_xmin, a.backend_xid)::text AS xmin,
       greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age,
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::double precision AS age_seconds,
       coalesce(a.xact_start, a.backend_start) AS since, left(a.query, 200) AS query
  FROM pg_stat_activity a
 WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
   AND a.pid <> pg_backend_pid()
   AND a.backend_type <> 'autovacuum worker'
UNION ALL
SELECT 'replication_slot', r.active_pid, r.slot_name::text, r.database::text, NULL, NULL, CASE WHEN r.active THEN 'active' ELSE 'inactive' END,
       coalesce(r.xmin, r.catalog_xmin)::text, greatest(age(r.xmin), age(r.catalog_xmin)), NULL, NULL, NULL
  FROM pg_replication_slots r
 WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
UNION ALL
SELECT 'prepared_transaction', NULL, p.gid, p.database::text, p.owner::text, NULL, 'prepared',
       p.transaction::text, age(p.transaction), extract(epoch FROM now() - p.prepared)::double precision, p.prepared, NULL
  FROM pg_prepared_xacts p
 ORDER BY xmin_age DESC NULLS LAST`;

/** Sessions, slots and prepared transactions holding the xmin horizon back, oldest first. */
export async function xminHolders(db: Queryable): Promise<XminHolder[]> {
  const { rows } = await db.query<{
    kind: XminHolderKind;
    pid: number | null;
    name: string | null;
    database: string | null;
    user: string | null;
    application_name: string | null;
    state: string | null;
    xmin: string | null;
    xmin_age: number | null;
    age_seconds: number | null;
    since: Date | null;
    query: string | null;
  }>(HOLDERS_SQL);
  return rows.map((r) => ({
    kind: r.kind,
    pid: r.pid,
    name: r.name,
    database: r.database,
    user: r.user,
    applicationName: r.application_name,
    state: r.state,
    xmin: r.xmin,
    xminAge: numOrNull(r.xmin_age),
    ageSeconds: r.age_seconds === null ? null : Math.round(r.age_seconds * 10) / 10,
    since: iso(r.since),
    query: r.query,
  }));
}
