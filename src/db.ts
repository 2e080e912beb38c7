import pg from 'pg';
import { connectionTarget, redactUrl, resolveConnection, type ConnectionSource, type TargetSessionAttrs } from './config.js';
import { badInput, QmaintError, toQmaintError } from './errors.js';
import { clientOptions, FailoverClient, type FailoverClientConfig } from './failover.js';

/** A node-pg client: one checked out of a pool, or a standalone one. */
export type PgClient = pg.PoolClient | pg.Client;
/** A value bound to a statement parameter ($n) by this library's queries. */
export type SqlValue = string | number | boolean | Date | null;

/**
 * Anything that runs a parameterised query: a {@link Db}, a pg.Pool, a
 * pg.Client or a pool client. Functions that take a Queryable work on an
 * application's own client too, inside its transaction.
 */
export interface Queryable {
  /** Run `text` with `values` bound to $1, $2, ... */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** Connection URL; when absent, DATABASE_URL, then the libpq PG* variables. */
  databaseUrl?: string;
  /**
   * With no URL and no DATABASE_URL or PG* variables: start (or reuse) the
   * embedded PostgreSQL. Default false: connect() then fails with a config
   * error instead, so an application whose DATABASE_URL went missing never
   * works an empty local database. The CLI passes true.
   */
  embedded?: boolean;
  /** Environment read for DATABASE_URL, the PG* variables and QMAINT_HOME (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** application_name reported in pg_stat_activity (default 'qmaint'). */
  applicationName?: string;
  /** Pool size (default 10). */
  max?: number;
  /** Home of the embedded server's data (default QMAINT_HOME or ./.qmaint). */
  embeddedHome?: string;
  /** Called with progress lines while the embedded server starts for the first time. */
  onEmbeddedLog?: (line: string) => void;
  /**
   * How long making one connection may take, TCP and login together, before
   * it fails as a `connection` error. Default 10000 ms (setting connectTimeoutMs).
   */
  connectTimeoutMs?: number;
  /**
   * target_session_attrs for a string naming several hosts without one
   * (default read-write: the node that takes writes). A read-only connection
   * (qmaint's --read-url) passes 'any'.
   */
  targetSessionAttrs?: TargetSessionAttrs;
}

/** Default of ConnectOptions.connectTimeoutMs and of the connectTimeoutMs setting. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** A client checked out of a Db's pool (see {@link Db.checkout}). */
export interface CheckedOut {
  client: pg.PoolClient;
  /** The connection's error, once it dropped (the client is then unusable). */
  readonly lost: Error | null;
  /** Back to the pool; destroyed instead when it broke or destroy is true. Idempotent. */
  release(destroy?: boolean): void;
}

/**
 * A connection pool plus what is known about where it points: what every
 * qmaint function that needs connections of its own (a consumer, migrate,
 * maintenance under the session lock) takes.
 *
 * Two ways to get one: {@link connect} (qmaint makes and owns the pool), or
 * {@link Db.fromPool} (your own pg.Pool; {@link Db.close} leaves it open).
 * Your own pg.Client (or a client checked out of your pool) needs no Db:
 * pass it directly to the functions that take a {@link Queryable} or an
 * {@link EnqueueTarget} (enqueue, enqueueMany, queueStatus, listJobs,
 * retryJobs, cancelJobs, rescueExpired, listPartitions, vacuumStatus,
 * runTask, ...), which then run on it, inside its transaction if one is open.
 */
export class Db {
  readonly pool: pg.Pool;
  readonly source: ConnectionSource;
  /** Connection URL with the password masked. */
  readonly display: string;
  readonly target: { host: string; port: string; database: string };
  readonly url: string | undefined;

  /** Whether close() ends the pool: not when it is the application's own (fromPool). */
  private readonly ownsPool: boolean;

  /**
   * Prefer {@link connect} or {@link Db.fromPool}; this is what both use.
   *
   * @param pool - the pool every query runs on
   * @param source - where the connection came from (`pool`: the application's own; close() then leaves it open)
   * @param url - the connection URL, when there is one
   * @param env - environment for the libpq PG* defaults of host, port and database
   */
  constructor(pool: pg.Pool, source: ConnectionSource, url: string | undefined, env: NodeJS.ProcessEnv) {
    this.pool = pool;
    this.source = source;
    this.url = url;
    this.ownsPool = source !== 'pool';
    this.target = connectionTarget(url, env);
    if (source === 'pool') {
      const o = pool.options;
      this.target = { host: o.host ?? this.target.host, port: String(o.port ?? this.target.port), database: o.database ?? this.target.database };
    }
    this.display = url ? redactUrl(url) : `postgres://${this.target.host}:${this.target.port}/${this.target.database}`;
  }

  /**
   * Use an application's own pg.Pool: every qmaint function that takes a Db
   * then runs on it. qmaint checks clients out and returns them as usual, and
   * close() leaves the pool open (it is the application's to end). Errors the
   * pool emits for idle clients are the application's to handle, as before.
   *
   * @param pool - the application's pool; its connection settings (or the libpq PG* variables) say where it points
   * @param env - environment for the libpq defaults when the pool's options leave host, port or database out (default process.env)
   * @returns a Db on that pool; nothing is connected until the first query
   */
  static fromPool(pool: pg.Pool, env: NodeJS.ProcessEnv = process.env): Db {
    return new Db(pool, 'pool', pool.options.connectionString, env);
  }

  /**
   * Run one parameterised statement on a pool connection.
   *
   * @param text - SQL with $1, $2, ... placeholders
   * @param values - the parameters (never spliced into the text)
   * @throws {@link QmaintError} `connection` when the server cannot be reached or the connection dropped, `permission` when refused, `unexpected` otherwise
   */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (err) {
      throw toQmaintError(err, this.target);
    }
  }

  /**
   * Check a client out of the pool, with an 'error' listener for as long as
   * it is out: node-pg emits 'error' on a checked-out client whose connection
   * drops, and an EventEmitter with no listener for 'error' kills the process.
   * The pending (or next) query rejects instead; give the client back with
   * `release()`, which destroys it when it broke or when asked to.
   */
  async checkout(): Promise<CheckedOut> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw toQmaintError(err, this.target);
    }
    let lost: Error | null = null;
    const onError = (err: Error) => {
      lost ??= err;
    };
    client.on('error', onError);
    let released = false;
    return {
      client,
      get lost() {
        return lost;
      },
      release(destroy = false) {
        if (released) return;
        released = true;
        client.off('error', onError);
        client.release(lost ?? (destroy ? true : undefined));
      },
    };
  }

  /** Run fn with a dedicated client; the client is released (or destroyed after an error) afterwards. */
  async withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const out = await this.checkout();
    let broken = false;
    try {
      return await fn(out.client);
    } catch (err) {
      broken = true;
      // A connection that dropped under fn is a connection error (exit 3), whatever fn made of it.
      if (out.lost && !(err instanceof QmaintError && err.code === 'connection')) throw toQmaintError(out.lost, this.target);
      throw err;
    } finally {
      out.release(broken);
    }
  }

  /** Run fn inside BEGIN/COMMIT, rolling back when it throws. */
  async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.withClient((client) => inTransaction(client, fn));
  }

  /**
   * A fresh, unpooled client on the same server (for LISTEN, long sessions,
   * tests). With several hosts it picks its host as the pool's connections do
   * (a FailoverClient), so it follows the primary too.
   */
  newClient(extra: Partial<pg.ClientConfig> = {}): pg.Client {
    const config = { ...this.clientConfig(), ...extra };
    const client = config.qmaintFailover ? new FailoverClient(config as FailoverClientConfig) : new pg.Client(config);
    client.on('error', () => undefined);
    return client;
  }

  /** The connection settings of this Db's pool (URL, application_name, connect timeout), to open further connections to the same server. */
  clientConfig(): pg.ClientConfig & { qmaintFailover?: FailoverClientConfig['qmaintFailover'] } {
    const opts = (this.pool as unknown as { options: pg.PoolConfig & { qmaintFailover?: FailoverClientConfig['qmaintFailover'] } }).options;
    return {
      connectionString: opts.connectionString,
      application_name: opts.application_name,
      connectionTimeoutMillis: opts.connectionTimeoutMillis,
      ...(opts.qmaintFailover ? { qmaintFailover: opts.qmaintFailover } : {}),
    };
  }

  /** End the pool this Db made (a pool given to fromPool stays open). */
  async close(): Promise<void> {
    if (this.ownsPool) await this.pool.end();
  }
}

export async function inTransaction<T>(client: PgClient, fn: (client: PgClient & pg.PoolClient) => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn(client as PgClient & pg.PoolClient);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Open a pool on the configured database and check that it answers. The
 * embedded PostgreSQL is started (or reused) only with `embedded: true`.
 *
 * Where it connects, first match wins: `databaseUrl`, then `DATABASE_URL`, then the libpq `PG*` variables of `env`; with none of them, the embedded PostgreSQL when `embedded: true`. It runs `SELECT 1` before it returns, so an unreachable server fails here.
 *
 * @param options - see {@link ConnectOptions}; all optional (pool of 10, application_name `qmaint`, connect timeout 10000 ms, embedded false)
 * @returns a {@link Db} owning its pool; end it with {@link Db.close}
 * @throws {@link QmaintError} `config` when nothing is configured and `embedded` is not true, or the URL (or PGPORT) is malformed (its `options` names `databaseUrl` when the URL came from there); `connection` when the server cannot be reached in time; `permission` when the login is refused
 */
export async function connect(options: ConnectOptions = {}): Promise<Db> {
  const env = options.env ?? process.env;
  const resolved = resolveConnection(options.databaseUrl, env);
  let url = resolved.url;
  if (resolved.source === 'embedded') {
    if (!options.embedded) {
      throw new QmaintError(
        'config',
        'no database is configured (no URL given, no DATABASE_URL, no PG* variables); give one, or ask for the embedded PostgreSQL with embedded: true',
      );
    }
    const { ensureEmbedded } = await import('./embedded.js');
    const server = await ensureEmbedded({ home: options.embeddedHome, env, onLog: options.onEmbeddedLog });
    url = server.url;
  }
  const pool = new pg.Pool({
    // Several hosts (or target_session_attrs): every connection picks the node, read-write unless the string says otherwise.
    ...(url !== undefined ? clientOptions(url, resolved.source === 'flag' ? 'the database URL' : resolved.source, options.targetSessionAttrs) : {}),
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'qmaint',
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  });
  pool.on('error', () => undefined);
  const db = new Db(pool, resolved.source, url, env);
  // Fail fast, with the documented exit code, when the server cannot be reached.
  await db.query('SELECT 1');
  return db;
}

// ---------------------------------------------------------------------------
// Identifiers: validated first, then quoted. Values always travel as parameters.

const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/** Validate a plain identifier (no quoting tricks) and return it. */
export function validateIdentifier(name: string, what = 'identifier'): string {
  if (!IDENT.test(name)) {
    throw badInput(
      `${what} ${JSON.stringify(name)} is not a valid name; use letters, digits and underscores (at most 63), starting with a letter or underscore`,
    );
  }
  return name;
}

/** Quote a validated identifier. */
export function quoteIdent(name: string): string {
  return '"' + validateIdentifier(name).replace(/"/g, '""') + '"';
}

/** Split and validate "schema.table" (schema defaults to public); returns both parts and the quoted form. */
export function parseQualifiedName(name: string, what = 'table'): { schema: string; name: string; quoted: string; text: string } {
  const parts = name.split('.');
  if (parts.length > 2 || parts.some((p) => p === '')) throw badInput(`${what} ${JSON.stringify(name)} must be "table" or "schema.table"`);
  const [schema, table] = parts.length === 2 ? [parts[0]!, parts[1]!] : ['public', parts[0]!];
  validateIdentifier(schema, `${what} schema`);
  validateIdentifier(table, what);
  return { schema, name: table, quoted: `${quoteIdent(schema)}.${quoteIdent(table)}`, text: `${schema}.${table}` };
}

// ---------------------------------------------------------------------------
// Advisory locks. One key guards all maintenance, whoever runs it (CLI, daemon, pg_cron):
// the SQL side uses qmaint.maintenance_lock_key(), which returns the same number.

export const MAINTENANCE_LOCK_KEY = 7_170_514_283_201n;

/**
 * Transaction-scoped advisory lock (two int4 halves: 'qm' and 'mi') taken by
 * `qmaint migrate` and `qmaint roles install`: schema changes and the grants
 * on them never interleave.
 */
export const SCHEMA_LOCK = [29037, 28009] as const;

/** The session holding an advisory lock, as pg_stat_activity shows it. */
export interface LockHolder {
  pid: number;
  applicationName: string | null;
  since: string | null;
}

/** Who holds the session or transaction advisory lock with this key in this database (advisory locks are per database). */
export async function advisoryLockHolder(db: Queryable, key: bigint = MAINTENANCE_LOCK_KEY): Promise<LockHolder | null> {
  const { rows } = await db.query<{ pid: number; application_name: string | null; since: Date | null }>(
    `SELECT l.pid, a.application_name, a.backend_start AS since
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
        AND l.objid = ($1::bigint & 4294967295)::oid
        AND l.objsubid = 1
      LIMIT 1`,
    [key.toString()],
  );
  const row = rows[0];
  return row ? { pid: row.pid, applicationName: row.application_name, since: row.since ? row.since.toISOString() : null } : null;
}

/**
 * True when the server does not see this client's own socket: the backend's
 * peer port differs from our local port, so something (PgBouncer, another
 * pooler) sits in between and session state cannot be trusted to stay.
 */
export async function isPooled(client: PgClient): Promise<boolean> {
  const socket = (client as unknown as { connection?: { stream?: { localPort?: number; remotePort?: number } } }).connection?.stream;
  const { rows } = await client.query<{ port: number | null }>('SELECT inet_client_port() AS port');
  const seen = rows[0]?.port ?? null;
  if (socket?.localPort === undefined) return seen !== null; // we came over a Unix socket: a TCP peer means a proxy
  return seen !== socket.localPort;
}

/**
 * Run fn while holding the session-level maintenance lock on one client. Returns
 * { ran: false, holder } without waiting when another run holds it. Refuses a
 * connection through a transaction pooler, where the lock could stay behind on
 * a pooled server connection (or be released by someone else's transaction).
 */
export async function withMaintenanceLock<T>(
  client: PgClient,
  fn: () => Promise<T>,
  key: bigint = MAINTENANCE_LOCK_KEY,
): Promise<{ ran: true; result: T } | { ran: false; holder: LockHolder | null }> {
  if (await isPooled(client)) {
    throw new QmaintError(
      'config',
      'this connection goes through a transaction pooler (e.g. PgBouncer), where a session advisory lock cannot be held; use a direct connection for client-side maintenance, or the server-side form (see docs/cli.md)',
    );
  }
  const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key.toString()]);
  if (!rows[0]?.ok) return { ran: false, holder: await advisoryLockHolder(client, key) };
  try {
    return { ran: true, result: await fn() };
  } finally {
    await client.query('SELECT pg_advisory_unlock($1::bigint)', [key.toString()]).catch(() => undefined);
  }
}

export function assertNever(value: never, what: string): never {
  throw new QmaintError('unexpected', `unhandled ${what}: ${String(value)}`);
}
