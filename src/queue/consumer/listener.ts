/**
 * The listener: LISTEN for its queues' NOTIFY (and for cancels of running
 * jobs, channel qmaint_cancel) on a dedicated connection
 * (reconnecting with backoff when it drops), and the idle sleep it cuts
 * short. A counter of wake-ups lets a claim loop read it before a claim and
 * pass it to sleep(): a wake-up that came in between returns at once, so no
 * notification is lost between an empty claim and the sleep.
 */
import pg from 'pg';
import type { Db } from '../../db.js';
import { newClientFor } from '../../failover.js';
import { NOTIFY_CHANNEL } from '../enqueue.js';
import { CANCEL_CHANNEL } from '../statements.js';
import type { WakeReason } from './options.js';

/** Where a Listener reports. */
export interface ListenerHooks {
  /** The LISTEN connection is up (true), or could not be set up (false; retried with backoff). */
  listening(ok: boolean): void;
  /** Setting up the LISTEN connection failed. */
  error(err: Error): void;
  /** A running job was cancelled: the fence key (`id.attempt`) of its attempt, whoever holds it. */
  cancel(fence: string): void;
}

const jitter = (ms: number) => ms / 2 + (Math.random() * ms) / 2;

/**
 * Wakes idle claim loops: on a NOTIFY for one of its queues, on wake() (a rescue
 * put jobs back, a LISTEN reconnect), and for good on stop().
 */
export class Listener {
  private wakes = 0;
  private lastWake: WakeReason = 'poll';
  private readonly sleepers = new Set<(reason: WakeReason) => void>();
  private client: pg.Client | null = null;
  private stopping = false;
  private closed = false;
  /** A LISTEN connection was up before: a new one may have missed notifications. */
  private wasConnected = false;

  /**
   * @param db - the consumer's database (its connection settings serve `listen: true`).
   * @param queues - whose notifications wake the sleepers.
   * @param listen - true: LISTEN on the same server; false: poll only; a URL: LISTEN there (e.g. around PgBouncer).
   * @param hooks - where connection outcomes are reported.
   */
  constructor(
    private readonly db: Db,
    private readonly queues: ReadonlySet<string>,
    private readonly listen: boolean | string,
    private readonly hooks: ListenerHooks,
  ) {}

  /** Wake-ups so far: read it before a claim, pass it to sleep() after. */
  get wakeCount(): number {
    return this.wakes;
  }

  /** True while a LISTEN connection is up. */
  get connected(): boolean {
    return this.client !== null;
  }

  /**
   * Connect and LISTEN. Resolves once connected or given up on for now
   * (then reported, and retried with backoff in the background); never throws.
   */
  async start(): Promise<void> {
    await this.connect(0);
  }

  /**
   * Sleep until `ms` passes ('poll'), a wake-up comes ('notify', 'poll') or
   * stop() ('stop'). With `wakesBefore` (wakeCount read before the claim that
   * came up empty), a wake-up that arrived since returns at once.
   */
  sleep(ms: number, wakesBefore?: number): Promise<WakeReason> {
    if (this.stopping) return Promise.resolve('stop');
    if (wakesBefore !== undefined && wakesBefore !== this.wakes) return Promise.resolve(this.lastWake);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done('poll'), ms);
      const done = (reason: WakeReason) => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve(reason);
      };
      this.sleepers.add(done);
    });
  }

  /** Count a wake-up and end every sleep now. */
  wake(reason: WakeReason): void {
    this.wakes++;
    this.lastWake = reason;
    for (const sleeper of [...this.sleepers]) sleeper(reason);
  }

  /** Wake everyone for good ('stop'): sleeps return at once from now on, and no reconnect is scheduled. */
  stop(): void {
    this.stopping = true;
    this.wake('stop');
  }

  /** Stop, and end the LISTEN connection. */
  async close(): Promise<void> {
    this.stopping = true;
    this.closed = true;
    await this.client?.end().catch(() => undefined);
  }

  private async connect(attempt: number): Promise<void> {
    if (this.listen === false || this.closed) return;
    const client =
      typeof this.listen === 'string'
        ? // Same connect timeout as the pool: a listen URL that never answers must not hold start() up.
          newClientFor(this.listen, 'the listen URL', {
            application_name: 'qmaint-listen',
            connectionTimeoutMillis: this.db.clientConfig().connectionTimeoutMillis,
          })
        : this.db.newClient();
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}; LISTEN ${CANCEL_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      this.hooks.error(err as Error);
      this.hooks.listening(false);
      this.retry(attempt + 1);
      return;
    }
    if (this.closed) {
      // close() came while this connection was being set up.
      await client.end().catch(() => undefined);
      return;
    }
    client.on('notification', (msg) => {
      if (msg.channel === NOTIFY_CHANNEL && msg.payload !== undefined && this.queues.has(msg.payload)) this.wake('notify');
      else if (msg.channel === CANCEL_CHANNEL && msg.payload) this.hooks.cancel(msg.payload);
    });
    client.on('end', () => {
      if (this.client === client) this.client = null;
      if (!this.closed) this.retry(0);
    });
    this.client = client;
    this.hooks.listening(true);
    // Anything announced while we were not listening (a failed first try, or a dropped connection): look now.
    if (attempt > 0 || this.wasConnected) this.wake('poll');
    this.wasConnected = true;
  }

  private retry(attempt: number): void {
    if (this.closed || this.stopping) return;
    const timer = setTimeout(() => void this.connect(attempt), jitter(Math.min(30_000, 200 * 2 ** attempt)));
    timer.unref();
  }
}
