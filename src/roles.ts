/**
 * Least privilege: four NOLOGIN group roles and exactly what each needs.
 *
 * - qmaint_admin owns the qmaint schema and everything in it (tables, every
 *   partition, sequences, types, functions). Maintenance alters, detaches and
 *   drops partitions, sets their storage parameters and VACUUMs them, and only
 *   an owner may; a group role as owner lets every member do it, and new
 *   partitions are handed to the parent's owner by the create step itself.
 * - qmaint_producer: INSERT of the columns a new job may set, the id sequence,
 *   and four functions (enqueue, and the SECURITY DEFINER enqueue_keyed,
 *   ensure_jobs_partition and lower_low_water). Partitions need no grant: rows reach them through
 *   the parent, whose privileges are the ones checked.
 * - qmaint_worker: SELECT on jobs, UPDATE of the columns a claim, result or
 *   rescue changes, the low-water mark (two columns of the policy), and the
 *   functions rescue and retries call.
 * - qmaint_readonly: SELECT on every table of the schema (not on partitions:
 *   reads go through the parent), EXECUTE on every function that cannot
 *   write (STABLE or IMMUTABLE, not SECURITY DEFINER), on explain_claim,
 *   which plans the claim for it (planning an UPDATE needs UPDATE privilege),
 *   and on jobs_column_stats, the partitions' statistics status estimates from
 *   (pg_stats hides them from a role that reads through the parent).
 *
 * PUBLIC keeps nothing in the schema. The grants are re-applied by
 * `qmaint migrate` whenever it applied something to a database whose schema
 * qmaint_admin owns, in the same transaction, so a function added later is
 * never executable by PUBLIC, not even for a moment.
 */
import type pg from 'pg';
import type { Db, Queryable } from './db.js';
import { quoteIdent, SCHEMA_LOCK, validateIdentifier } from './db.js';
import { badOption, QmaintError, sqlState } from './errors.js';

/** The kinds of group role `installRoles` creates. */
export const ROLE_KINDS = ['admin', 'producer', 'worker', 'readonly'] as const;
/** A kind of group role: admin, producer, worker or readonly. */
export type RoleKind = (typeof ROLE_KINDS)[number];

/** The group role of each kind (`qmaint_admin`, `qmaint_producer`, `qmaint_worker`, `qmaint_readonly`). */
export const ROLE_NAMES: Record<RoleKind, string> = {
  admin: 'qmaint_admin',
  producer: 'qmaint_producer',
  worker: 'qmaint_worker',
  readonly: 'qmaint_readonly',
};

export const ROLE_PURPOSE: Record<RoleKind, string> = {
  admin: 'owns the qmaint schema: migrate, rotate, vacuum, compact, detach/drop, schedule, jobs retry/cancel',
  producer: 'enqueue only: qmaint.enqueue(), qmaint.enqueue_keyed() and COPY into qmaint.jobs',
  worker: 'claim, complete, fail, heartbeat, release, rescue; LISTEN; the low-water mark',
  readonly: 'status, health, explain dequeue (plan only), jobs list, partitions list: reads, never writes',
};

/** Columns a producer may set on a new job; the rest take their defaults (status queued, no lease). */
export const PRODUCER_INSERT_COLUMNS = ['id', 'queue', 'payload', 'run_at', 'priority', 'max_retries', 'created_at', 'updated_at', 'timeout_ms'] as const;
/** Columns the claim, complete, fail, heartbeat, release and rescue statements change. */
export const WORKER_UPDATE_COLUMNS = ['status', 'retry_count', 'run_at', 'last_error', 'locked_by', 'locked_until', 'updated_at', 'attempt'] as const;
export const PRODUCER_FUNCTIONS = ['enqueue', 'enqueue_keyed', 'ensure_jobs_partition', 'lower_low_water'] as const;
export const WORKER_FUNCTIONS = ['retry_delay', 'next_try', 'queue_backoff', 'rescue_expired', 'rescue_lock_key', 'live_below', 'lower_low_water'] as const;
/** Beside every function that cannot write: the SECURITY DEFINER plan of the claim (explain dequeue without ANALYZE) and partition statistics (status). */
export const READONLY_FUNCTIONS = ['explain_claim', 'jobs_column_stats'] as const;
/** The migration ledgers: every command checks them before it runs. */
const LEDGERS = ['schema_migrations', 'schema_functions'] as const;

/** One statement of a roles plan, with the lock it takes and why it runs. */
export interface RoleStep {
  seq: number;
  action: 'create role' | 'grant membership' | 'owner' | 'revoke' | 'grant';
  statement: string;
  lockLevel: string;
  reason: string;
}

/** What {@link planRoles} finds to do. */
export interface RolesPlan {
  /** Roles that do not exist yet (created by the install). */
  createRoles: string[];
  /** Objects whose owner becomes qmaint_admin. */
  ownerChanges: string[];
  /** Login roles added to a group role. */
  members: { role: string; member: string; present: boolean }[];
  steps: RoleStep[];
}

/** Make the login role `login` a member of the group role of `kind`. */
export interface MemberRequest {
  /** Which group role: admin, producer, worker or readonly. */
  kind: RoleKind;
  /** An existing login role of your own. */
  login: string;
}

interface Facts {
  user: string;
  superuser: boolean;
  createrole: boolean;
  existing: Set<string>;
  /** current_user is already a member of qmaint_admin (directly or not). */
  userInAdmin: boolean;
}

interface ObjectRow {
  kind: 'schema' | 'table' | 'sequence' | 'type' | 'routine';
  name: string;
  owner: string;
}

interface RoutineRow {
  signature: string;
  name: string;
  volatile: boolean;
  secdef: boolean;
}

interface TableRow {
  name: string;
  partition: boolean;
}

/** Quote a name read from the catalog (the connected role): it is what it is, so it is quoted, not validated. */
const quoteCatalogName = (name: string) => '"' + name.replace(/"/g, '""') + '"';

const CATALOG_ONLY = 'no table lock (catalog rows only)';
const CLUSTER_CATALOG = 'no table lock (cluster-wide role catalog)';

/** Parse a member request written KIND=LOGIN (e.g. worker=app_worker); bad input otherwise. */
export function parseMember(text: string): MemberRequest {
  const m = /^([a-z]+)=(.*)$/.exec(text);
  const kind = m?.[1] as RoleKind | undefined;
  if (!m || !kind || !ROLE_KINDS.includes(kind)) {
    throw badOption('member', `member ${JSON.stringify(text)} must be KIND=LOGIN with KIND one of ${ROLE_KINDS.join(', ')} (e.g. worker=app_worker)`);
  }
  return { kind, login: validateIdentifier(m[2]!, 'member login') };
}

async function facts(q: Queryable): Promise<Facts> {
  const { rows } = await q.query<{ usr: string; superuser: boolean; createrole: boolean; existing: string[]; in_admin: boolean }>(
    `SELECT current_user::text AS usr, r.rolsuper AS superuser, r.rolcreaterole AS createrole,
            ARRAY(SELECT rolname::text FROM pg_roles WHERE rolname = ANY ($1::text[])) AS existing,
            coalesce(pg_has_role(current_user, to_regrole($2)::oid, 'USAGE'), false) AS in_admin
       FROM pg_roles r WHERE r.rolname = current_user`,
    [Object.values(ROLE_NAMES), ROLE_NAMES.admin],
  );
  const r = rows[0]!;
  return { user: r.usr, superuser: r.superuser, createrole: r.createrole, existing: new Set(r.existing), userInAdmin: r.in_admin };
}

/** Everything in the qmaint schema that has an owner of its own (indexes, row types and owned sequences follow their table). */
async function ownedObjects(q: Queryable): Promise<ObjectRow[]> {
  const { rows } = await q.query<ObjectRow>(
    `SELECT kind, name, owner FROM (
     SELECT 'schema' AS kind, quote_ident(nspname) AS name, pg_get_userbyid(nspowner)::text AS owner
       FROM pg_namespace WHERE nspname = 'qmaint'
     UNION ALL
     SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, c.oid::regclass::text, pg_get_userbyid(c.relowner)::text
       FROM pg_class c
      WHERE c.relnamespace = 'qmaint'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
     UNION ALL
     SELECT 'type', t.oid::regtype::text, pg_get_userbyid(t.typowner)::text
       FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
      WHERE t.typnamespace = 'qmaint'::regnamespace AND t.typelem = 0 AND (t.typrelid = 0 OR c.relkind = 'c')
     UNION ALL
     SELECT 'routine', p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text
       FROM pg_proc p WHERE p.pronamespace = 'qmaint'::regnamespace) o
     ORDER BY kind <> 'schema', kind, name`,
  );
  return rows;
}

async function routines(q: Queryable): Promise<RoutineRow[]> {
  const { rows } = await q.query<RoutineRow>(
    `SELECT p.oid::regprocedure::text AS signature, p.proname::text AS name, p.provolatile = 'v' AS volatile, p.prosecdef AS secdef
       FROM pg_proc p WHERE p.pronamespace = 'qmaint'::regnamespace AND p.prokind IN ('f', 'p') ORDER BY 1`,
  );
  return rows;
}

async function tables(q: Queryable): Promise<TableRow[]> {
  const { rows } = await q.query<TableRow>(
    `SELECT c.oid::regclass::text AS name, c.relispartition AS partition
       FROM pg_class c WHERE c.relnamespace = 'qmaint'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1`,
  );
  return rows;
}

const ALTER_KIND: Record<ObjectRow['kind'], string> = { schema: 'SCHEMA', table: 'TABLE', sequence: 'SEQUENCE', type: 'TYPE', routine: 'ROUTINE' };

function ownerSteps(objects: ObjectRow[]): { steps: Omit<RoleStep, 'seq'>[]; names: string[] } {
  const admin = quoteIdent(ROLE_NAMES.admin);
  const moving = objects.filter((o) => o.owner !== ROLE_NAMES.admin);
  return {
    names: moving.map((o) => `${o.kind} ${o.name}`),
    steps: moving.map((o) => ({
      action: 'owner',
      statement: `ALTER ${ALTER_KIND[o.kind]} ${o.name} OWNER TO ${admin}`,
      lockLevel: o.kind === 'table' ? `ACCESS EXCLUSIVE on ${o.name}` : CATALOG_ONLY,
      reason: `${o.kind} owned by ${o.owner}: qmaint_admin owns every qmaint object`,
    })),
  };
}

function signaturesOf(all: RoutineRow[], names: readonly string[]): string[] {
  const found = all.filter((r) => names.includes(r.name));
  const missing = names.filter((n) => !found.some((r) => r.name === n));
  if (missing.length > 0) throw new QmaintError('config', `the qmaint schema lacks ${missing.map((n) => `qmaint.${n}`).join(', ')}; run qmaint migrate`);
  return found.map((r) => r.signature);
}

/** The REVOKE and GRANT statements that give each role exactly its share (what migrate re-applies). */
function grantSteps(all: RoutineRow[], tbls: TableRow[]): Omit<RoleStep, 'seq'>[] {
  const [producer, worker, readonly] = [ROLE_NAMES.producer, ROLE_NAMES.worker, ROLE_NAMES.readonly].map((r) => quoteIdent(r));
  const grantees = `PUBLIC, ${producer}, ${worker}, ${readonly}`;
  const cols = (list: readonly string[]) => list.map((c) => quoteIdent(c)).join(', ');
  const ledgers = LEDGERS.map((t) => `qmaint.${t}`).join(', ');
  const readable = tbls.filter((t) => !t.partition).map((t) => t.name);
  const readFunctions = [...all.filter((r) => !r.volatile && !r.secdef).map((r) => r.signature), ...signaturesOf(all, READONLY_FUNCTIONS)];
  const steps: Omit<RoleStep, 'seq'>[] = [
    {
      action: 'revoke',
      statement: `REVOKE ALL ON SCHEMA qmaint FROM ${grantees}`,
      lockLevel: CATALOG_ONLY,
      reason: 'start from nothing: only what follows is granted',
    },
    {
      action: 'revoke',
      statement: `REVOKE ALL ON ALL TABLES IN SCHEMA qmaint FROM ${grantees}`,
      lockLevel: CATALOG_ONLY,
      reason: 'tables, partitions and their columns',
    },
    { action: 'revoke', statement: `REVOKE ALL ON ALL SEQUENCES IN SCHEMA qmaint FROM ${grantees}`, lockLevel: CATALOG_ONLY, reason: 'sequences' },
    {
      action: 'revoke',
      statement: `REVOKE ALL ON ALL ROUTINES IN SCHEMA qmaint FROM ${grantees}`,
      lockLevel: CATALOG_ONLY,
      reason: 'every function and procedure: PUBLIC executes none of them',
    },
    {
      action: 'grant',
      statement: `GRANT USAGE ON SCHEMA qmaint TO ${producer}, ${worker}, ${readonly}`,
      lockLevel: CATALOG_ONLY,
      reason: 'look up qmaint objects',
    },
    {
      action: 'grant',
      statement: `GRANT SELECT ON ${ledgers} TO ${producer}, ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'every command checks the migration ledgers first',
    },
    {
      action: 'grant',
      statement: `GRANT INSERT (${cols(PRODUCER_INSERT_COLUMNS)}) ON qmaint.jobs TO ${producer}`,
      lockLevel: CATALOG_ONLY,
      reason: 'producer: new jobs through enqueue() or COPY; status, retries and leases take their defaults',
    },
    { action: 'grant', statement: `GRANT USAGE ON SEQUENCE qmaint.jobs_id_seq TO ${producer}`, lockLevel: CATALOG_ONLY, reason: 'producer: job ids (nextval)' },
    {
      action: 'grant',
      statement: `GRANT EXECUTE ON FUNCTION ${signaturesOf(all, PRODUCER_FUNCTIONS).join(', ')} TO ${producer}`,
      lockLevel: CATALOG_ONLY,
      reason:
        'producer: enqueue, keyed enqueue (SECURITY DEFINER: keys and replacing a queued holder), and the two SECURITY DEFINER helpers enqueue and COPY use (missing partition, low-water mark)',
    },
    {
      action: 'grant',
      statement: `GRANT SELECT ON qmaint.jobs TO ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'worker: the claim reads the queue, results read the batch',
    },
    {
      action: 'grant',
      statement: `GRANT SELECT, INSERT (queue, backoff_base, backoff_cap), UPDATE (backoff_base, backoff_cap, updated_at) ON qmaint.queues TO ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'worker: a consumer records its retry backoff for its queue, rescue reads it',
    },
    {
      action: 'grant',
      statement: `GRANT UPDATE (${cols(WORKER_UPDATE_COLUMNS)}) ON qmaint.jobs TO ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'worker: claim, complete, fail, heartbeat, release, rescue; never queue, payload, priority or keys',
    },
    {
      action: 'grant',
      statement: `GRANT SELECT (${cols(['parent_table', 'low_water'])}) ON qmaint.partition_policy TO ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'worker: the low-water mark the claim carries',
    },
    {
      action: 'grant',
      statement: `GRANT EXECUTE ON FUNCTION ${signaturesOf(all, WORKER_FUNCTIONS).join(', ')} TO ${worker}`,
      lockLevel: CATALOG_ONLY,
      reason: 'worker: backoff, rescue of expired leases',
    },
  ];
  if (readable.length > 0) {
    steps.push({
      action: 'grant',
      statement: `GRANT SELECT ON ${readable.join(', ')} TO ${readonly}`,
      lockLevel: CATALOG_ONLY,
      reason: 'readonly: every table (partitions are read through their parent)',
    });
  }
  if (readFunctions.length > 0) {
    steps.push({
      action: 'grant',
      statement: `GRANT EXECUTE ON FUNCTION ${readFunctions.join(', ')} TO ${readonly}`,
      lockLevel: CATALOG_ONLY,
      reason:
        'readonly: the functions that cannot write (STABLE or IMMUTABLE, not SECURITY DEFINER), explain_claim (the plan of the claim, not run) and jobs_column_stats (the statistics status estimates from)',
    });
  }
  return steps;
}

function numbered(steps: Omit<RoleStep, 'seq'>[]): RoleStep[] {
  return steps.map((s, i) => ({ seq: i + 1, ...s }));
}

async function existingMembers(q: Queryable, wanted: MemberRequest[]): Promise<{ role: string; member: string; present: boolean }[]> {
  const out: { role: string; member: string; present: boolean }[] = [];
  for (const m of wanted) {
    const role = ROLE_NAMES[m.kind];
    const { rows } = await q.query<{ login: boolean | null; present: boolean }>(
      `SELECT (SELECT rolcanlogin FROM pg_roles WHERE rolname = $1) AS login,
              EXISTS (SELECT 1 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
                       WHERE g.rolname = $2 AND m.rolname = $1) AS present`,
      [m.login, role],
    );
    if (rows[0]?.login === null || rows[0]?.login === undefined)
      throw badOption('member', `member ${m.kind}=${m.login}: there is no role ${m.login}; create it first (CREATE ROLE ${m.login} LOGIN ...)`);
    if (Object.values(ROLE_NAMES).includes(m.login))
      throw badOption('member', `member ${m.kind}=${m.login}: it must be a login role of your own, not a qmaint group role`);
    out.push({ role, member: m.login, present: rows[0].present });
  }
  return out;
}

/** Options of {@link installRoles}. */
export interface InstallRolesOptions {
  /** Change nothing: return the plan (default false). */
  dryRun?: boolean;
  /** Login roles to make members of the group roles (default none). */
  members?: MemberRequest[];
  /** lock_timeout for the ownership and grant transaction (default '2s'). */
  lockTimeout?: string;
}

/**
 * What `qmaint roles install` would run here, in order. Reads the catalog only.
 *
 * @param q - a Db, a pool or a client of your own
 * @param options - `members` to add (default none)
 * @throws {@link QmaintError} `bad_input` when a member is not an existing login role of your own (`options: ['member']`)
 */
export async function planRoles(q: Queryable, options: { members?: MemberRequest[] } = {}): Promise<RolesPlan> {
  const f = await facts(q);
  const members = await existingMembers(q, options.members ?? []);
  const createRoles = Object.values(ROLE_NAMES).filter((r) => !f.existing.has(r));
  const steps: Omit<RoleStep, 'seq'>[] = createRoles.map((r) => ({
    action: 'create role',
    statement: `CREATE ROLE ${quoteIdent(r)} NOLOGIN`,
    lockLevel: CLUSTER_CATALOG,
    reason: `group role ${r} (${ROLE_PURPOSE[ROLE_KINDS.find((k) => ROLE_NAMES[k] === r)!]}); members log in, it does not`,
  }));
  if (!f.superuser && !f.userInAdmin) {
    steps.push({
      action: 'grant membership',
      statement: `GRANT ${quoteIdent(ROLE_NAMES.admin)} TO ${quoteCatalogName(f.user)}`,
      lockLevel: CLUSTER_CATALOG,
      reason: `${f.user} hands its qmaint objects to qmaint_admin and must still migrate them: it becomes a member`,
    });
  }
  const owners = ownerSteps(await ownedObjects(q));
  steps.push(...owners.steps, ...grantSteps(await routines(q), await tables(q)));
  for (const m of members.filter((x) => !x.present)) {
    steps.push({
      action: 'grant membership',
      statement: `GRANT ${quoteIdent(m.role)} TO ${quoteIdent(m.member)}`,
      lockLevel: CLUSTER_CATALOG,
      reason: `member asked for: ${m.member} acts as ${m.role}`,
    });
  }
  return { createRoles, ownerChanges: owners.names, members, steps: numbered(steps) };
}

/** What {@link installRoles} did (or, with dryRun, would do). */
export interface RolesResult extends RolesPlan {
  dryRun: boolean;
}

/** Duplicate role or membership: another install (maybe in another database of this server) got there first. */
const ALREADY = new Set(['42710', '23505']);

/** Steps on cluster-wide objects: roles and memberships. */
const clusterWide = (step: RoleStep) => step.action === 'create role' || step.action === 'grant membership';

/**
 * Run a role or membership step; false when an install in another database
 * of the server made the same role or membership first (the state we want).
 */
async function runClusterStep(client: pg.ClientBase, step: RoleStep, installer: string): Promise<boolean> {
  await client.query('SAVEPOINT qmaint_role');
  try {
    await client.query(step.statement);
    await client.query('RELEASE SAVEPOINT qmaint_role');
    return true;
  } catch (err) {
    if (step.action === 'grant membership' && sqlState(err) === '42501') {
      // PostgreSQL 16+: CREATEROLE grants only roles held WITH ADMIN OPTION (a role's creator has it).
      const group = /^GRANT (\S+) TO /.exec(step.statement)![1]!;
      throw new QmaintError(
        'permission',
        `${(err as Error).message}: on PostgreSQL 16 and later a CREATEROLE role may grant only roles it created or holds WITH ADMIN OPTION; run qmaint roles install as a superuser, or have one run GRANT ${group} TO ${quoteCatalogName(installer)} WITH ADMIN OPTION first`,
        { cause: err },
      );
    }
    if (!ALREADY.has(sqlState(err) ?? '')) throw err;
    await client.query('ROLLBACK TO SAVEPOINT qmaint_role');
    return false;
  }
}

/**
 * Create the four roles (idempotent, safe against concurrent installs in
 * other databases of the server), hand every qmaint object to qmaint_admin
 * and grant each role its share. Roles and memberships are committed first,
 * in a short transaction of their own (so that a concurrent install in another
 * database waits for that, not for all of this one); then, in one transaction
 * under the lock `qmaint migrate` takes and under lock_timeout, the ownership
 * and the grants, planned again under that lock. A non-superuser without
 * CREATEROLE is refused (`permission`) before anything runs.
 *
 * @param db - the database
 * @param options - see {@link InstallRolesOptions}
 * @throws {@link QmaintError} `permission` when the role may not create roles; `bad_input` as for {@link planRoles}; `lock_timeout` when the grants gave up waiting for a lock
 */
export async function installRoles(db: Db, options: InstallRolesOptions = {}): Promise<RolesResult> {
  if (options.dryRun) return { ...(await planRoles(db, options)), dryRun: true };
  const installer = await assertMayInstallRoles(db);
  const first = await planRoles(db, options);
  const ran = await db.transaction(async (client) => {
    const done: RoleStep[] = [];
    for (const step of first.steps.filter(clusterWide)) if (await runClusterStep(client, step, installer)) done.push(step);
    return done;
  });
  const rest = await db.transaction(async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [...SCHEMA_LOCK]);
    await client.query(`SELECT set_config('lock_timeout', $1, true)`, [options.lockTimeout ?? '2s']);
    const plan = await planRoles(client, options);
    const steps = plan.steps.filter((s) => !clusterWide(s));
    for (const step of steps) await client.query(step.statement);
    return { ownerChanges: plan.ownerChanges, steps };
  });
  const created = new Set(ran.map((s) => s.statement));
  return {
    createRoles: first.createRoles.filter((r) => created.has(`CREATE ROLE ${quoteIdent(r)} NOLOGIN`)),
    ownerChanges: rest.ownerChanges,
    members: first.members,
    steps: [...ran, ...rest.steps].map((step, i) => ({ ...step, seq: i + 1 })),
    dryRun: false,
  };
}

/**
 * Refuse (exit 3) a role that is neither superuser nor CREATEROLE (it could not
 * create or grant the roles), or that could not hand the qmaint objects over.
 * Reads the catalog only, so it answers before anything else is tried.
 * Returns the installer's name.
 */
export async function assertMayInstallRoles(q: Queryable): Promise<string> {
  const f = await facts(q);
  if (!f.superuser && !f.createrole) {
    throw new QmaintError(
      'permission',
      `role ${f.user} may not create roles: run qmaint roles install as a superuser, or as the owner of the qmaint schema with CREATEROLE`,
    );
  }
  if (!f.superuser) await assertMayHandOver(q, f.user);
  return f.user;
}

/** A non-superuser installer must own every qmaint object not yet qmaint_admin's (directly or through a role it belongs to). */
async function assertMayHandOver(q: Queryable, installer: string): Promise<void> {
  const foreign = (await ownedObjects(q)).filter((o) => o.owner !== ROLE_NAMES.admin && o.owner !== installer);
  for (const o of foreign) {
    const { rows } = await q.query<{ ok: boolean }>(`SELECT pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = $1), 'USAGE') AS ok`, [
      o.owner,
    ]);
    if (!rows[0]?.ok) {
      throw new QmaintError(
        'permission',
        `role ${installer} may not hand ${o.kind} ${o.name} (owned by ${o.owner}) to qmaint_admin: run qmaint roles install as a superuser or as the owner of the qmaint schema`,
      );
    }
  }
}

/** True when `qmaint roles install` ran in this database (qmaint_admin owns the schema). */
export async function rolesInstalled(q: Queryable): Promise<boolean> {
  const { rows } = await q.query<{ installed: boolean }>(
    `SELECT coalesce((SELECT nspowner = to_regrole($1)::oid FROM pg_namespace WHERE nspname = 'qmaint'), false) AS installed`,
    [ROLE_NAMES.admin],
  );
  return rows[0]?.installed === true;
}

/**
 * Called by migrate inside its transaction after it applied something: when
 * roles are installed here, new objects go to qmaint_admin and the grants are
 * applied again, so nothing new is left executable by PUBLIC.
 */
export async function reapplyRoleGrants(client: Queryable): Promise<boolean> {
  if (!(await rolesInstalled(client))) return false;
  const owners = ownerSteps(await ownedObjects(client));
  for (const step of [...owners.steps, ...grantSteps(await routines(client), await tables(client))]) await client.query(step.statement);
  return true;
}
