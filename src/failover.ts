import pg from 'pg';
import { parseConnectionString, type ConnectionPlan, type TargetSessionAttrs } from './config.js';

/**
 * Several hosts in one connection string, as libpq takes them: node-pg
 * connects to one host only, so a FailoverClient tries the hosts in the order
 * given and keeps the first whose role matches target_session_attrs. Each new
 * connection chooses again, so after a failover the pool's new connections,
 * the consumer's LISTEN connection and the daemon's leader session all land on
 * whichever node is primary now.
 */
export interface FailoverSpec {
  /** One single-host URL per host, in the order given. */
  urls: string[];
  /** host:port of each, for messages. */
  hosts: string[];
  /** Which node a connection keeps. */
  attrs: TargetSessionAttrs;
}

/** What a connection string asks for; `defaultAttrs` applies when it names several hosts and no target_session_attrs. */
export function failoverSpec(plan: ConnectionPlan, defaultAttrs: TargetSessionAttrs): FailoverSpec | undefined {
  const attrs = plan.targetSessionAttrs ?? (plan.urls.length > 1 ? defaultAttrs : 'any');
  if (plan.urls.length === 1 && attrs === 'any') return undefined;
  return { urls: plan.urls, hosts: plan.hosts, attrs };
}

/** One query tells both facts apart: a standby is in recovery; a primary may still be read-only by default_transaction_read_only. */
const ROLE_SQL = `SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') = 'on' AS read_only`;

interface Role {
  recovery: boolean;
  read_only: boolean;
}

function matches(role: Role, attrs: TargetSessionAttrs, pass: number): boolean {
  switch (attrs) {
    case 'any':
      return true;
    case 'read-write':
      return !role.read_only;
    case 'read-only':
      return role.read_only;
    case 'primary':
      return !role.recovery;
    case 'standby':
      return role.recovery;
    case 'prefer-standby':
      return pass > 0 || role.recovery;
  }
}

async function roleOf(client: pg.Client): Promise<Role> {
  const { rows } = await client.query<Role>(ROLE_SQL);
  return rows[0]!;
}

/** Error for "no host matched", classified as a connection error (SQLSTATE 08001, exit 3). */
class NoMatchingHost extends Error {
  readonly code = '08001';
}

export type FailoverClientConfig = pg.ClientConfig & { qmaintFailover: FailoverSpec };

/** A pg.Client that picks its host (see FailoverSpec); give it to a pg.Pool as `Client`. */
export class FailoverClient extends pg.Client {
  private readonly spec: FailoverSpec;
  private readonly base: pg.ClientConfig;

  constructor(config: FailoverClientConfig) {
    const { qmaintFailover, ...rest } = config;
    super({ ...rest, connectionString: qmaintFailover.urls[0] });
    this.spec = qmaintFailover;
    this.base = rest;
  }

  override connect(): Promise<pg.Client>;
  override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
  override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
    const done = this.open();
    if (!callback) return done;
    done.then(
      (c) => (callback as (err: null, c: pg.Client) => void)(null, c),
      (err: Error) => (callback as (err: Error) => void)(err),
    );
  }

  private async open(): Promise<pg.Client> {
    // Until connect() returns, nobody listens for 'error' (pg-pool adds its listener
    // after); a connection that drops during the role check would otherwise be
    // an unhandled 'error' event. The pending query rejects instead.
    const swallow = () => undefined;
    this.on('error', swallow);
    try {
      return await this.openListened();
    } finally {
      this.off('error', swallow);
    }
  }

  private async openListened(): Promise<pg.Client> {
    const index = this.spec.urls.length > 1 ? await this.pick() : 0;
    const url = this.spec.urls[index]!;
    // Where that URL points, as node-pg reads it (no connection is made).
    const target = new pg.Client({ connectionString: url });
    const params = (this as unknown as { connectionParameters: { host: string; port: number } }).connectionParameters;
    this.host = params.host = target.host;
    this.port = params.port = target.port;
    await super.connect();
    if (this.spec.attrs !== 'any') {
      // The role may have changed since the probe (or there was none): check the connection itself.
      const role = await roleOf(this).catch(async (err: unknown) => {
        await this.end().catch(() => undefined);
        throw err;
      });
      if (!matches(role, this.spec.attrs, 1)) {
        await this.end().catch(() => undefined);
        throw new NoMatchingHost(`the server at ${this.spec.hosts[index]} is not ${this.spec.attrs} (target_session_attrs)`);
      }
    }
    return this;
  }

  /** Probe the hosts in order with short-lived connections; the index of the first that matches. */
  private async pick(): Promise<number> {
    const seen: string[] = [];
    const passes = this.spec.attrs === 'prefer-standby' ? 2 : 1;
    for (let pass = 0; pass < passes; pass++) {
      for (let i = 0; i < this.spec.urls.length; i++) {
        const probe = new pg.Client({
          connectionString: this.spec.urls[i],
          connectionTimeoutMillis: this.base.connectionTimeoutMillis,
          application_name: 'qmaint-probe',
        });
        probe.on('error', () => undefined);
        try {
          await probe.connect();
          const role = await roleOf(probe);
          if (matches(role, this.spec.attrs, pass)) return i;
          if (pass === 0) seen.push(`${this.spec.hosts[i]}: ${role.recovery ? 'standby' : role.read_only ? 'read-only' : 'read-write'}`);
        } catch (err) {
          if (pass === 0) seen.push(`${this.spec.hosts[i]}: ${(err as Error).message || (err as { code?: string }).code || 'unreachable'}`);
        } finally {
          await probe.end().catch(() => undefined);
        }
      }
    }
    throw new NoMatchingHost(`no server is ${this.spec.attrs} (target_session_attrs) among ${seen.join('; ')}`);
  }
}

/**
 * pg.Pool / pg.Client options for a connection string: a client that picks its
 * host when the string names several hosts or a target_session_attrs, else a
 * plain one. Give the result to `new pg.Pool(...)` and that pool to
 * {@link Db.fromPool}, and your own pool follows the primary as qmaint's do.
 *
 * @param url - a postgres:// URL (one host or several) or a libpq keyword=value string
 * @param where - what the string is, for error messages (e.g. 'DATABASE_URL')
 * @param defaultAttrs - target_session_attrs when several hosts are named and none is given (default read-write)
 * @throws {@link QmaintError} `config` when the string is malformed (the message never repeats it)
 */
export function clientOptions(url: string, where: string, defaultAttrs: TargetSessionAttrs = 'read-write'): pg.PoolConfig & { qmaintFailover?: FailoverSpec } {
  const plan = parseConnectionString(url, where);
  const spec = failoverSpec(plan, defaultAttrs);
  // urls[0] is the string itself for one URL, and the URL a keyword=value string becomes.
  if (!spec) return { connectionString: plan.urls[0]! };
  // pg-pool constructs its Client with the pool's options (which carry qmaintFailover); its typings say no arguments.
  return { connectionString: spec.urls[0]!, Client: FailoverClient as unknown as new () => pg.ClientBase, qmaintFailover: spec };
}

/** A new, unconnected client for a connection string (single host: a plain pg.Client). */
export function newClientFor(url: string, where: string, extra: pg.ClientConfig = {}, defaultAttrs: TargetSessionAttrs = 'read-write'): pg.Client {
  const { qmaintFailover, connectionString } = clientOptions(url, where, defaultAttrs);
  return qmaintFailover ? new FailoverClient({ ...extra, connectionString, qmaintFailover }) : new pg.Client({ ...extra, connectionString });
}
