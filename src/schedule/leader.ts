import type pg from 'pg';
import type { Queryable } from '../db.js';

/**
 * Key of the session advisory lock whose holder is the daemons' leader (one per
 * database: advisory locks are scoped to the database). Not the maintenance
 * lock: the leader holds this for as long as it lives. The SQL side names the
 * same number qmaint.daemon_leader_lock_key().
 */
export const LEADER_LOCK_KEY = 7_170_514_283_207n;

export interface LeaderOptions {
  /** A new, unconnected client on the queue database (a direct session: not through a transaction pooler). */
  newClient: () => pg.Client;
  /** How often a standby tries to take over and the leader checks it still leads. */
  intervalMs: number;
  key?: bigint;
  onChange: (leader: boolean, reason: string) => void;
  onError: (message: string) => void;
}

/**
 * Leader election over one session advisory lock held on a dedicated
 * connection. When the leader's process dies its connection closes and the
 * server releases the lock, so a standby takes over within intervalMs. A
 * leader whose process stalls loses its session to idle_session_timeout
 * (PostgreSQL 14+), which bounds takeover when a host vanishes or hangs.
 */
export class LeaderElection {
  private client: pg.Client | null = null;
  private leading = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private readonly key: string;

  constructor(private readonly options: LeaderOptions) {
    this.key = (options.key ?? LEADER_LOCK_KEY).toString();
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stop campaigning; a leader releases the lock at once so a standby need not wait. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.loop;
    const client = this.client;
    this.client = null;
    if (client) {
      if (this.leading) await client.query('SELECT pg_advisory_unlock($1::bigint)', [this.key]).catch(() => undefined);
      await client.end().catch(() => undefined);
    }
    this.setLeading(false, 'stopped');
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.loop = this.step().finally(() => this.schedule(this.options.intervalMs));
    }, delayMs);
  }

  private async step(): Promise<void> {
    try {
      const client = this.client ?? (await this.connect());
      if (this.stopped) return;
      if (this.leading) {
        const { rows } = await client.query<{ held: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                            AND classid = (($1::bigint >> 32) & 4294967295)::oid AND objid = ($1::bigint & 4294967295)::oid
                            AND objsubid = 1) AS held`,
          [this.key],
        );
        if (!rows[0]?.held) this.setLeading(false, 'the leader lock is no longer held by this session');
      } else {
        const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [this.key]);
        if (rows[0]?.ok) this.setLeading(true, 'took the leader lock');
      }
    } catch (err) {
      this.options.onError(`leader connection: ${(err as Error).message}`);
      this.drop('lost the leader connection');
    }
  }

  private async connect(): Promise<pg.Client> {
    const client = this.options.newClient();
    client.on('error', (err) => {
      this.options.onError(`leader connection: ${err.message}`);
      if (this.client === client) this.drop('lost the leader connection');
    });
    client.on('end', () => {
      if (this.client === client && !this.stopped) this.drop('the leader connection closed');
    });
    await client.connect();
    const { rows } = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
    const idleLimitMs = Math.max(this.options.intervalMs * 5, 5000);
    const settings = [`SET tcp_keepalives_idle = 10`, `SET tcp_keepalives_interval = 5`, `SET tcp_keepalives_count = 3`];
    if (Number(rows[0]?.v) >= 140000) settings.push(`SET idle_session_timeout = ${idleLimitMs}`);
    for (const sql of settings) await client.query(sql);
    this.client = client;
    return client;
  }

  private drop(reason: string): void {
    const client = this.client;
    this.client = null;
    client?.end().catch(() => undefined);
    this.setLeading(false, reason);
  }

  private setLeading(leading: boolean, reason: string): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.options.onChange(leading, reason);
  }
}

export interface LeaderInfo {
  pid: number;
  applicationName: string | null;
  clientAddress: string | null;
  since: string | null;
}

/** The session that leads the daemons of this database, if any. */
export async function currentLeader(db: Queryable, key: bigint = LEADER_LOCK_KEY): Promise<LeaderInfo | null> {
  // Advisory locks belong to one database: filter on it, or another database's leader shows up.
  const { rows } = await db.query<{ pid: number; application_name: string | null; client_addr: string | null; since: Date | null }>(
    `SELECT l.pid, a.application_name, host(a.client_addr) AS client_addr, a.backend_start AS since
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
        AND l.objid = ($1::bigint & 4294967295)::oid
      LIMIT 1`,
    [key.toString()],
  );
  const row = rows[0];
  return row
    ? { pid: row.pid, applicationName: row.application_name, clientAddress: row.client_addr, since: row.since ? row.since.toISOString() : null }
    : null;
}
