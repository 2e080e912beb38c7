/**
 * The consumer: claims batches with the one claim statement, runs handlers up
 * to a concurrency limit, completes and fails in batches, keeps leases alive,
 * sleeps on LISTEN/NOTIFY with a capped exponential poll, and shuts down
 * gracefully (unstarted jobs go back to the queue).
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { CheckedOut, Db, Queryable } from '../db.js';
import { badInput, isConnectionError, sqlState } from '../errors.js';
import { newClientFor } from '../failover.js';
import { claimQuery, LOW_WATER_SQL, type ClaimCursor } from './claim.js';
import { checkQueueName, NOTIFY_CHANNEL } from './enqueue.js';
import { COMPLETE_SQL, FAIL_SQL, fenceKey, HEARTBEAT_SQL, READY_SQL, RECORD_BACKOFF_SQL, RELEASE_SQL, RESCUE_SQL } from './statements.js';

/** What a handler receives. */
export interface Job {
  id: string;
  queue: string;
  payload: unknown;
  priority: number;
  retryCount: number;
  maxRetries: number;
  createdAt: Date;
  runAt: Date;
  /** Which claim of the job this is (1 for the first); every result is fenced by it. */
  attempt: number;
  /** How long this attempt may run, in seconds (the job's own timeout, else the consumer's). */
  timeout: number;
  /** Aborted when the job's timeout or a shutdown deadline passes, or the lease was lost. */
  signal: AbortSignal;
  /**
   * Transaction mode only: the client whose transaction claimed the job and
   * will mark it completed. Work done through it commits with the job.
   */
  client?: pg.PoolClient;
}

export type Handler = (job: Job) => unknown;

export interface ConsumerOptions {
  queue: string;
  handler: Handler;
  /** Handlers running at once (default 10). */
  concurrency?: number;
  /** Jobs claimed per statement (default 100). Lease mode only. */
  batch?: number;
  /** Lease of a claimed job (default 60). */
  leaseSeconds?: number;
  /**
   * lease (default): claim, commit, run, complete in batches.
   * transaction: claim one job, run the handler and complete it in one
   * transaction (the handler may use job.client), one connection per slot.
   */
  mode?: 'lease' | 'transaction';
  /** Exit once no job of the queue is ready to run now. */
  drain?: boolean;
  /** LISTEN for NOTIFY: true (default, same server), false (poll only), or a direct URL (e.g. around PgBouncer). */
  listen?: boolean | string;
  /** First and longest idle poll interval (default 50 ms and 5000 ms). */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** Retry backoff: base and cap (default 1 s and 1 h), with jitter. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** How often to re-read the low-water mark while busy (default 5000 ms). */
  lowWaterRefreshMs?: number;
  /** How often to restart the claim from the head of the queue while busy (default 2000 ms). */
  rescanMs?: number;
  /** How often to run qmaint.rescue_expired() (default: half the lease, at most 30 s). */
  rescueEveryMs?: number;
  /**
   * Seconds a handler may run when its job carries no timeout of its own
   * (default 900). At the deadline its signal aborts and the attempt fails
   * with a JobTimeoutError, as if the handler had thrown it.
   */
  timeout?: number;
  /** Shown in locked_by (default host:pid:random). */
  workerId?: string;
}

/** Default of ConsumerOptions.timeout, in seconds. */
export const DEFAULT_JOB_TIMEOUT_SECONDS = 900;

/**
 * Longest error text stored in last_error, in characters; NUL characters
 * (which a PostgreSQL text value cannot hold) are removed first.
 */
export const ERROR_TEXT_MAX = 4000;

/** What a handler's signal is aborted with, and what its attempt fails with, when the job's timeout passes. */
export class JobTimeoutError extends Error {
  constructor(jobId: string, seconds: number) {
    super(`job ${jobId} timed out after ${seconds} s`);
    this.name = 'JobTimeoutError';
  }
}

export type WakeReason = 'notify' | 'poll' | 'stop';

export interface ConsumerEvents {
  claimed: [count: number];
  completed: [job: Job];
  failed: [job: Job, error: string, outcome: { status: 'queued' | 'failed'; retryCount: number; runAt: Date }];
  /** The job's timeout passed: its signal was aborted and the attempt fails. */
  timeout: [job: Job];
  idle: [sleepMs: number];
  wake: [reason: WakeReason];
  listening: [ok: boolean];
  rescued: [result: { requeued: number; failed: number }];
  /** This attempt no longer holds the job (its lease ran out): its signal is aborted and its result dropped. */
  'lease-lost': [job: Job];
  'db-error': [error: Error, during: string];
  drained: [];
}

export interface StopReport {
  /** Claimed but never started: put back in the queue. */
  returned: number;
  /** Still running at the deadline: their leases will run out and they will be rescued. */
  abandoned: number;
}

/** Counts of rows the statements really changed, not of results attempted. */
export interface ConsumerStats {
  claimed: number;
  completed: number;
  failed: number;
  returned: number;
  /** Results dropped because the attempt had lost the job (lease ran out, job rescued or claimed again). */
  lost: number;
  /** Attempts failed by their timeout. */
  timedOut: number;
}

interface Claimed {
  id: string;
  queue: string;
  payload: unknown;
  priority: number;
  retry_count: number;
  max_retries: number;
  created_at: Date;
  run_at: Date;
  attempt: number;
  timeout_ms: number | null;
}

/** Where the next claim starts (keyset position) and since when that chain of claims runs. */
interface Lane {
  cursor: ClaimCursor | null;
  since: number;
}

interface Held {
  row: Claimed;
  job: Job;
  abort: AbortController;
  lost: boolean;
}

interface Failure {
  held: Held;
  error: string;
}

/** Capped, jittered backoff between retries of a failing loop step. */
class Backoff {
  private ms = 100;
  next(): number {
    const wait = jitter(this.ms);
    this.ms = Math.min(this.ms * 2, 10_000);
    return wait;
  }
  reset(): void {
    this.ms = 100;
  }
}

/**
 * SQLSTATE classes that say "this row's data", not "the server or the
 * connection": a batch failing so is sent again row by row.
 */
const ROW_ERROR_CLASSES = ['22', '23', 'P0'];
const isRowError = (err: unknown) => !isConnectionError(err) && ROW_ERROR_CLASSES.some((c) => sqlState(err)?.startsWith(c));

/** Consecutive serialization failures (40001) of a claim retried at once, before backing off. */
const SERIAL_RETRIES = 5;

/**
 * Claims in flight at once in lease mode. One claim after another leaves the
 * server idle while each result travels back and is handed out; a second lane
 * overlaps that (about +7% drain throughput measured on 2 cores).
 */
const CLAIM_LANES = 2;

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());
const jitter = (ms: number) => ms / 2 + (Math.random() * ms) / 2;

export class Consumer extends EventEmitter<ConsumerEvents> {
  readonly workerId: string;
  readonly stats: ConsumerStats = { claimed: 0, completed: 0, failed: 0, returned: 0, lost: 0, timedOut: 0 };
  private readonly db: Db;
  private readonly o: Required<Omit<ConsumerOptions, 'workerId' | 'listen'>> & { listen: boolean | string };
  /** Wake-ups so far; a loop compares it before and after a claim, so a NOTIFY that came in between is never slept through. */
  private wakes = 0;
  private lastWake: WakeReason = 'poll';
  private readonly buffer: Held[] = [];
  private readonly running = new Set<Held>();
  private readonly toComplete: Held[] = [];
  private readonly toFail: Failure[] = [];
  private flushing = 0;
  /** Jobs asked for by claims in flight. */
  private claiming = 0;
  private stopping = false;
  private closed = false;
  private lowWater: Date | null = null;
  private lowWaterAt = 0;
  private readonly sleepers = new Set<(reason: WakeReason) => void>();
  private slotWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private listener: pg.Client | null = null;
  private timers: NodeJS.Timeout[] = [];
  private loops: Promise<void>[] = [];
  private finished!: (report: StopReport) => void;
  /** Resolves when the consumer has stopped: after stop(), or when a drain finds nothing left. */
  readonly done: Promise<StopReport>;

  constructor(db: Db, options: ConsumerOptions) {
    super();
    checkQueueName(options.queue);
    if (typeof options.handler !== 'function') throw badInput('handler must be a function');
    const lease = options.leaseSeconds ?? 60;
    this.o = {
      queue: options.queue,
      handler: options.handler,
      concurrency: positive(options.concurrency ?? 10, 'concurrency'),
      batch: positive(options.batch ?? 100, 'batch'),
      leaseSeconds: positive(lease, 'leaseSeconds'),
      mode: options.mode ?? 'lease',
      drain: options.drain ?? false,
      listen: options.listen ?? true,
      pollMinMs: options.pollMinMs ?? 50,
      pollMaxMs: options.pollMaxMs ?? 5000,
      backoffBaseMs: options.backoffBaseMs ?? 1000,
      backoffCapMs: options.backoffCapMs ?? 3_600_000,
      lowWaterRefreshMs: options.lowWaterRefreshMs ?? 5000,
      rescanMs: options.rescanMs ?? 2000,
      rescueEveryMs: options.rescueEveryMs ?? Math.min(30_000, Math.max(1000, (lease * 1000) / 2)),
      timeout: positiveSeconds(options.timeout ?? DEFAULT_JOB_TIMEOUT_SECONDS, 'timeout'),
    };
    this.workerId = options.workerId ?? `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.db = db;
    const poolMax = (db.pool as unknown as { options: { max?: number } }).options.max ?? 10;
    if (this.o.mode === 'transaction' && poolMax < this.o.concurrency + 1) {
      throw badInput(
        `transaction mode holds one connection per handler: the pool needs at least ${this.o.concurrency + 1} connections, it has ${poolMax}; connect with max >= concurrency + 1`,
      );
    }
    this.done = new Promise((resolve) => (this.finished = resolve));
  }

  /**
   * Start consuming; resolves once the LISTEN connection is up (or given up
   * on) and the first rescue ran (jobs a crashed consumer left behind go
   * back to the queue before this one looks for work).
   */
  async start(): Promise<void> {
    if (this.loops.length > 0) return;
    await this.startListener();
    await this.guarded('backoff', () => this.db.query(RECORD_BACKOFF_SQL, [this.o.queue, this.o.backoffBaseMs / 1000, this.o.backoffCapMs / 1000]));
    await this.guarded('rescue', () => this.rescue());
    const leaseMs = this.o.leaseSeconds * 1000;
    this.every(Math.max(200, leaseMs / 3), 'heartbeat', () => this.heartbeat());
    this.every(this.o.rescueEveryMs, 'rescue', () => this.rescue());
    if (this.o.mode === 'transaction') {
      for (let i = 0; i < this.o.concurrency; i++) this.loops.push(this.transactionLoop());
    } else {
      for (let i = 0; i < CLAIM_LANES; i++) this.loops.push(this.claimLoop());
    }
    void Promise.all(this.loops)
      .then(async () => {
        // A drain ended the loops: finish like a stop with nothing left to wait for.
        if (!this.stopping) this.finished(await this.stop());
      })
      .catch((err: unknown) => this.emit('db-error', asError(err), 'stop'));
  }

  /**
   * Stop claiming, put claimed-but-unstarted jobs back, let running handlers
   * finish up to the deadline (default 30 s), then abort the rest (their
   * leases will run out and the rescuer puts them back).
   */
  async stop(options: { deadlineMs?: number } = {}): Promise<StopReport> {
    if (this.stopping) return this.done;
    this.stopping = true;
    this.wake('stop');
    for (const w of this.slotWaiters.splice(0)) w();
    const deadline = delay(options.deadlineMs ?? 30_000);
    // Lease mode: the claim loop ends after at most one claim in flight.
    // Transaction mode: each loop ends when its handler does (or at the deadline).
    if (this.o.mode === 'lease') await Promise.all(this.loops);
    const unstarted = this.buffer.splice(0);
    const returned = await this.release(unstarted);
    await Promise.race([Promise.all([this.allIdle(), ...this.loops]), deadline]);
    const abandoned = [...this.running];
    for (const h of abandoned) h.abort.abort(new Error('consumer shutdown deadline passed'));
    await this.flushAll();
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.listener?.end().catch(() => undefined);
    const report = { returned, abandoned: abandoned.length };
    this.finished(report);
    return report;
  }

  // -------------------------------------------------------------------------
  // Lease mode

  /**
   * One claim lane: claims whenever fewer than `concurrency` jobs wait
   * locally, and never lets the consumer hold more than concurrency + 2 x
   * batch jobs (claims in flight included). Each lane starts its claims after
   * its own last key. Any failing step is reported (`db-error`) and retried
   * with backoff: the loop only ends on stop() or a finished drain.
   */
  private async claimLoop(): Promise<void> {
    const lane: Lane = { cursor: null, since: 0 };
    let idleMs = this.o.pollMinMs;
    const backoff = new Backoff();
    let serial = 0;
    while (!this.stopping) {
      const want = Math.min(this.o.batch, this.o.concurrency + CLAIM_LANES * this.o.batch - this.buffer.length - this.running.size - this.claiming);
      if (this.buffer.length >= this.o.concurrency || want <= 0) {
        await new Promise<void>((r) => this.slotWaiters.push(r));
        continue;
      }
      const fromCursor = lane.cursor !== null;
      const wakesBefore = this.wakes;
      let during = 'claim';
      try {
        let rows: Claimed[];
        this.claiming += want;
        try {
          rows = await this.claim(this.db, want, lane);
        } finally {
          this.claiming -= want;
        }
        serial = 0;
        if (rows.length > 0) {
          idleMs = this.o.pollMinMs;
          for (const row of rows) this.buffer.push(this.hold(row));
          this.pump();
          if (rows.length < want) lane.cursor = null;
          backoff.reset();
          continue;
        }
        lane.cursor = null;
        if (fromCursor) continue;
        during = 'low-water refresh';
        await this.refreshLowWater(true);
        if (this.o.drain) {
          during = 'drain check';
          if (await this.drainedNow()) {
            this.emit('drained');
            return;
          }
        }
        backoff.reset();
      } catch (err) {
        if (during === 'claim' && sqlState(err) === '40001' && ++serial <= SERIAL_RETRIES) continue;
        serial = 0;
        await this.failedStep(err, during, backoff);
        continue;
      }
      idleMs = await this.idle(idleMs, wakesBefore);
    }
  }

  /** Sleep after an empty claim (unless a wake-up came since wakesBefore); returns the next idle interval. */
  private async idle(idleMs: number, wakesBefore: number): Promise<number> {
    this.emit('idle', idleMs);
    const reason = await this.sleep(idleMs, wakesBefore);
    this.emit('wake', reason);
    return reason === 'notify' ? this.o.pollMinMs : Math.min(idleMs * 2, this.o.pollMaxMs);
  }

  /** A loop step failed: report it and wait (capped, jittered, growing) before the loop tries again. */
  private async failedStep(err: unknown, during: string, backoff: Backoff): Promise<void> {
    this.emit('db-error', asError(err), during);
    await this.sleep(backoff.next());
  }

  /** Run the claim statement; remembers the keyset position of the batch. */
  private async claim(q: Queryable, want: number, lane: Lane): Promise<Claimed[]> {
    await this.refreshLowWater(false, q);
    if (lane.cursor && Date.now() - lane.since > this.o.rescanMs) lane.cursor = null;
    const { text, values } = claimQuery({
      queue: this.o.queue,
      batch: want,
      leaseSeconds: this.o.leaseSeconds,
      workerId: this.workerId,
      lowWater: this.lowWater,
      after: lane.cursor,
    });
    const { rows } = await q.query<Claimed>(text, values);
    if (rows.length > 0) {
      this.stats.claimed += rows.length;
      this.emit('claimed', rows.length);
      if (!lane.cursor) lane.since = Date.now();
      lane.cursor = lastInClaimOrder(rows);
    }
    return rows;
  }

  private hold(row: Claimed): Held {
    const abort = new AbortController();
    const job: Job = {
      id: row.id,
      queue: row.queue,
      payload: row.payload,
      priority: row.priority,
      retryCount: row.retry_count,
      maxRetries: row.max_retries,
      createdAt: row.created_at,
      runAt: row.run_at,
      attempt: row.attempt,
      timeout: row.timeout_ms !== null ? row.timeout_ms / 1000 : this.o.timeout,
      signal: abort.signal,
    };
    return { row, job, abort, lost: false };
  }

  /** Start buffered jobs while slots are free. */
  private pump(): void {
    while (!this.stopping && this.running.size < this.o.concurrency && this.buffer.length > 0) {
      const held = this.buffer.shift()!;
      this.running.add(held);
      void this.runHandler(held).then((error) => {
        this.running.delete(held);
        // A lost job's result is dropped (counted when the loss was found).
        if (!held.lost) {
          if (error === null) this.toComplete.push(held);
          else this.toFail.push({ held, error });
          this.scheduleFlush();
        }
        this.pump();
        for (const w of this.slotWaiters.splice(0)) w();
        if (this.running.size === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  /**
   * Run the handler under the job's timeout; null on success, the (sanitised)
   * error text on failure. At the deadline the signal is aborted and the
   * attempt fails with a JobTimeoutError; a handler that ignores its signal
   * is left running, but its slot and its result no longer count.
   */
  private async runHandler(held: Held): Promise<string | null> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<string>((resolve) => {
      timer = setTimeout(
        () => {
          const err = new JobTimeoutError(held.job.id, held.job.timeout);
          held.abort.abort(err);
          this.stats.timedOut++;
          this.emit('timeout', held.job);
          resolve(errorText(err));
        },
        Math.min(held.job.timeout * 1000, 2_147_483_647),
      );
    });
    const ran = Promise.resolve()
      .then(() => this.o.handler(held.job))
      .then(
        () => null,
        (err: unknown) => errorText(err),
      );
    try {
      return await Promise.race([ran, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private flushScheduled = false;
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.flush();
    });
  }

  /**
   * Send completions and failures in batches; at most two flushes in flight.
   * Completions and failures are sent independently: trouble with one never
   * holds back or re-sends the other. Results that could not be sent (server
   * or connection trouble) are kept for the next flush; the lease protects
   * their jobs meanwhile.
   */
  private async flush(): Promise<void> {
    // After stop() the results of abandoned handlers are dropped: their leases decide.
    if (this.closed) return;
    while (this.flushing < 2 && (this.toComplete.length > 0 || this.toFail.length > 0)) {
      const done = this.toComplete.splice(0, this.o.batch);
      const failed = this.toFail.splice(0, this.o.batch);
      this.flushing++;
      try {
        const [c, f] = await Promise.allSettled([this.complete(done), this.recordFailures(failed)]);
        let trouble = false;
        if (c.status === 'rejected') {
          this.toComplete.unshift(...done);
          this.emit('db-error', asError(c.reason), 'complete');
          trouble = true;
        }
        if (f.status === 'rejected') {
          this.emit('db-error', asError(f.reason), 'fail');
          trouble = true;
        }
        if (trouble) await delay(jitter(500));
      } finally {
        this.flushing--;
      }
      if (this.closed) return;
    }
  }

  private async flushAll(): Promise<void> {
    for (let attempt = 0; attempt < 20 && (this.toComplete.length > 0 || this.toFail.length > 0 || this.flushing > 0); attempt++) {
      await this.flush();
      if (this.flushing > 0 || this.toComplete.length > 0 || this.toFail.length > 0) await delay(20);
    }
  }

  /**
   * Mark completed; what the statement did not change (the attempt lost the
   * job) is dropped and counted. `finish` (transaction mode: COMMIT, or
   * ROLLBACK when nothing changed) runs before anything is counted.
   */
  private async complete(done: Held[], q: Queryable = this.db, finish?: (changed: number) => Promise<void>): Promise<void> {
    if (done.length === 0) return;
    const { rows } = await q.query<{ id: string }>(COMPLETE_SQL, [done.map((h) => h.row.id), keys(done), fences(done), this.workerId, this.o.queue]);
    const changed = new Set(rows.map((r) => r.id));
    await finish?.(changed.size);
    for (const h of done) {
      if (!changed.has(h.row.id)) this.lose(h);
      else {
        this.stats.completed++;
        this.emit('completed', h.job);
      }
    }
  }

  /**
   * Record failures: one statement for the batch. When the batch is refused
   * for something in a row (a data error), each row is sent alone, and a row
   * refused again is recorded with a stand-in text naming the refusal, so one
   * bad row never holds back the rest. Rows not sent because of server or
   * connection trouble go back on the list and the error is thrown.
   */
  private async recordFailures(failed: Failure[]): Promise<void> {
    if (failed.length === 0) return;
    try {
      await this.fail(failed);
      return;
    } catch (err) {
      if (!isRowError(err)) {
        this.toFail.unshift(...failed);
        throw err;
      }
      if (failed.length > 1) this.emit('db-error', asError(err), 'fail (batch refused; recording row by row)');
    }
    for (let i = 0; i < failed.length; i++) {
      const f = failed[i]!;
      try {
        try {
          if (failed.length > 1) {
            await this.fail([f]);
            continue;
          }
          throw new RowRefused();
        } catch (err) {
          if (!isRowError(err) && !(err instanceof RowRefused)) throw err;
          const why = err instanceof RowRefused ? 'refused by the server' : asError(err).message;
          // Nothing of the refused text: whatever in it was refused would be refused again.
          await this.fail([{ held: f.held, error: sanitizeErrorText(`the handler's error could not be stored (${why})`) }]);
        }
      } catch (err) {
        if (!isRowError(err)) {
          this.toFail.unshift(...failed.slice(i));
          throw err;
        }
        // Refused even with the stand-in text: left to its lease, which puts it back (or fails it) later.
        this.emit('db-error', asError(err), `fail (job ${f.held.job.id} left to its lease)`);
      }
    }
  }

  /** Record failures in one statement; `finish` (transaction mode: COMMIT) runs before anything is counted. */
  private async fail(failed: Failure[], q: Queryable = this.db, finish?: () => Promise<void>): Promise<void> {
    if (failed.length === 0) return;
    const { rows } = await q.query<{ id: string; status: 'queued' | 'failed'; retry_count: number; run_at: Date }>(FAIL_SQL, [
      failed.map((f) => f.held.row.id),
      failed.map((f) => f.held.row.created_at),
      fences(failed.map((f) => f.held)),
      failed.map((f) => f.error),
      this.workerId,
      this.o.backoffBaseMs / 1000,
      this.o.backoffCapMs / 1000,
      this.o.queue,
    ]);
    await finish?.();
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const f of failed) {
      const r = byId.get(f.held.row.id);
      if (!r) {
        this.lose(f.held);
        continue;
      }
      this.stats.failed++;
      this.emit('failed', f.held.job, f.error, { status: r.status, retryCount: r.retry_count, runAt: r.run_at });
    }
  }

  /** recordFailures kept what it could not send: report, and let a flush send it again. */
  private retryLater(err: unknown): void {
    this.emit('db-error', asError(err), 'fail');
    this.scheduleFlush();
  }

  /** This attempt no longer holds the job: abort its handler, drop its result, count it once. */
  private lose(held: Held): void {
    if (held.lost) return;
    held.lost = true;
    held.abort.abort(new Error('lease lost'));
    this.stats.lost++;
    this.emit('lease-lost', held.job);
  }

  private async release(held: Held[]): Promise<number> {
    if (held.length === 0) return 0;
    try {
      const { rows } = await this.db.query<{ id: string }>(RELEASE_SQL, [held.map((h) => h.row.id), keys(held), fences(held), this.workerId, this.o.queue]);
      this.stats.returned += rows.length;
      if (rows.length > 0) await this.guarded('release', () => this.db.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, this.o.queue]));
      return rows.length;
    } catch (err) {
      // Their leases run out and the rescuer puts them back.
      this.emit('db-error', asError(err), 'release');
      return 0;
    }
  }

  /** Extend the lease of every job this consumer holds (both modes); drop the ones it lost. */
  private async heartbeat(): Promise<void> {
    const held = [...this.buffer, ...this.running].filter((h) => !h.lost);
    if (held.length === 0) return;
    const { rows } = await this.db.query<{ id: string }>(HEARTBEAT_SQL, [
      held.map((h) => h.row.id),
      keys(held),
      fences(held),
      this.workerId,
      this.o.leaseSeconds,
      this.o.queue,
    ]);
    const kept = new Set(rows.map((r) => r.id));
    for (const h of held) {
      if (kept.has(h.row.id)) continue;
      const i = this.buffer.indexOf(h);
      if (i >= 0) this.buffer.splice(i, 1);
      this.lose(h);
    }
  }

  private async rescue(): Promise<{ requeued: number; failed: number } | null> {
    const { rows } = await this.db.query<{ result: { requeued?: number; failed?: number; skipped?: boolean } }>(RESCUE_SQL);
    const r = rows[0]?.result;
    if (!r || r.skipped) return null;
    const result = { requeued: r.requeued ?? 0, failed: r.failed ?? 0 };
    if (result.requeued > 0 || result.failed > 0) {
      this.emit('rescued', result);
      this.wake('poll');
    }
    return result;
  }

  // -------------------------------------------------------------------------
  // Transaction mode: one job per transaction, one connection per slot.

  /**
   * One slot. The claim commits on its own (autocommit) before the handler
   * runs, so every attempt counts: a crash, a killed connection or an aborted
   * transaction leaves the job `running` under its lease (kept alive by the
   * heartbeat while the slot lives), and the rescuer puts it back with
   * retry_count + 1 or fails it. The handler then runs in a transaction on
   * the same connection, and the completion commits with its writes.
   */
  private async transactionLoop(): Promise<void> {
    let idleMs = this.o.pollMinMs;
    const backoff = new Backoff();
    let serial = 0;
    // The slot keeps its connection while there is work, and gives it back when idle.
    let slot: CheckedOut | null = null;
    try {
      while (!this.stopping) {
        const wakesBefore = this.wakes;
        let during = 'claim';
        try {
          slot ??= await this.db.checkout();
          const rows = await this.claim(slot.client, 1, { cursor: null, since: 0 });
          serial = 0;
          if (rows.length > 0) {
            during = 'job transaction';
            const held = this.hold(rows[0]!);
            if (!(await this.oneInTransaction(slot, held))) {
              slot.release(true);
              slot = null;
            }
            idleMs = this.o.pollMinMs;
            backoff.reset();
            continue;
          }
          slot.release();
          slot = null;
          during = 'low-water refresh';
          await this.refreshLowWater(true);
          if (this.o.drain) {
            during = 'drain check';
            if (await this.drainedNow()) return;
          }
          backoff.reset();
        } catch (err) {
          slot?.release(true);
          slot = null;
          if (during === 'claim' && sqlState(err) === '40001' && ++serial <= SERIAL_RETRIES) continue;
          serial = 0;
          await this.failedStep(err, during, backoff);
          continue;
        }
        idleMs = await this.idle(idleMs, wakesBefore);
      }
    } finally {
      slot?.release();
    }
  }

  /**
   * Run one claimed job in a transaction on the slot's connection and record
   * its result: completed in that transaction (the handler's writes commit
   * with it), or failed (the handler's writes undone). Returns false when the
   * connection can no longer be used (it broke, or was ended because the
   * handler outlived its timeout); the result is then recorded through the
   * pool. Never throws: what cannot be recorded is left to the lease.
   */
  private async oneInTransaction(slot: CheckedOut, held: Held): Promise<boolean> {
    const client = slot.client;
    this.running.add(held);
    try {
      await client.query('BEGIN');
      // A savepoint only when the handler touches the client, so a failed
      // handler's writes can be undone while the failure is still recorded.
      let savepoint: Promise<boolean> | null = null;
      Object.defineProperty(held.job, 'client', {
        enumerable: true,
        get: () => {
          savepoint ??= client.query('SAVEPOINT qmaint_job').then(
            () => true,
            () => false,
          );
          return client;
        },
      });
      const error = await this.runHandler(held);
      if (held.job.signal.aborted && held.job.signal.reason instanceof JobTimeoutError) {
        // The handler may still be inside a statement on this connection: end
        // the session (its transaction rolls back) and record through the pool.
        await this.db.query('SELECT pg_terminate_backend($1)', [(client as unknown as { processID: number }).processID]).catch(() => undefined);
        await this.recordFailures([{ held, error: error ?? errorText(held.job.signal.reason) }]).catch((e: unknown) => this.retryLater(e));
        return false;
      }
      if (error === null) {
        // Lost the job meanwhile: its writes must not commit with someone else's attempt.
        await this.complete([held], client, async (changed) => void (await client.query(changed > 0 ? 'COMMIT' : 'ROLLBACK')));
        return true;
      }
      const sp = await (savepoint as Promise<boolean> | null);
      if (
        sp === null ||
        (sp &&
          (await client.query('ROLLBACK TO SAVEPOINT qmaint_job').then(
            () => true,
            () => false,
          )))
      ) {
        await this.fail([{ held, error }], client, async () => void (await client.query('COMMIT')));
        return true;
      }
      // The savepoint is gone: undo everything, then record the failure on its own.
      await client.query('ROLLBACK');
      await this.fail([{ held, error }], client);
      return true;
    } catch (err) {
      this.emit('db-error', asError(err), 'job transaction');
      let usable = slot.lost === null && !isConnectionError(err);
      if (usable) await client.query('ROLLBACK').catch(() => (usable = false));
      // The handler's outcome is unknown to the database: record it as a failure
      // through the pool (fenced: if a COMMIT did land, this changes nothing).
      if (!held.lost) {
        await this.recordFailures([{ held, error: sanitizeErrorText(`the job's transaction failed: ${asError(err).message}`) }]).catch((e: unknown) =>
          this.retryLater(e),
        );
      }
      return usable;
    } finally {
      this.running.delete(held);
      if (this.running.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  // -------------------------------------------------------------------------
  // Shared plumbing

  /**
   * Nothing held locally, the rescuer ran (so jobs of a crashed consumer are
   * back in the queue first), and no job of the queue is ready now: the
   * drain is over. A rescue skipped because another one runs means "not sure
   * yet": the caller looks again after its idle sleep.
   */
  private async drainedNow(): Promise<boolean> {
    if (this.buffer.length > 0 || this.running.size > 0) {
      if (this.o.mode === 'lease') await this.allIdle();
      return false;
    }
    await this.flushAll();
    if ((await this.rescue()) === null) return false;
    const { rows } = await this.db.query<{ ready: boolean }>(READY_SQL, [this.o.queue]);
    return !rows[0]!.ready;
  }

  private async refreshLowWater(force: boolean, q: Queryable = this.db): Promise<void> {
    if (!force && Date.now() - this.lowWaterAt < this.o.lowWaterRefreshMs) return;
    const { rows } = await q.query<{ low_water: Date | string | null }>(LOW_WATER_SQL);
    const value = rows[0]?.low_water;
    this.lowWater = value instanceof Date && Number.isFinite(value.getTime()) ? value : null;
    this.lowWaterAt = Date.now();
  }

  private allIdle(): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * Sleep until the timeout, a NOTIFY for our queue, or stop(). With
   * `wakesBefore` (the wake count read before the claim that came up empty),
   * a wake-up that arrived since returns at once instead of being slept
   * through: no notification is lost between an empty claim and the sleep.
   */
  private sleep(ms: number, wakesBefore?: number): Promise<WakeReason> {
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

  private wake(reason: WakeReason): void {
    this.wakes++;
    this.lastWake = reason;
    for (const sleeper of [...this.sleepers]) sleeper(reason);
  }

  /** Run fn, reporting a failure as db-error instead of throwing. */
  private async guarded(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.emit('db-error', asError(err), what);
    }
  }

  private every(ms: number, what: string, fn: () => Promise<unknown>): void {
    let busy = false;
    const timer = setInterval(() => {
      if (busy || this.closed) return;
      busy = true;
      void this.guarded(what, fn).finally(() => (busy = false));
    }, ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** LISTEN on a dedicated connection; reconnects with backoff when it drops. */
  private async startListener(attempt = 0): Promise<void> {
    if (this.o.listen === false || this.closed) return;
    const client =
      typeof this.o.listen === 'string'
        ? // Same connect timeout as the pool: a listen URL that never answers must not hold start() up.
          newClientFor(this.o.listen, 'the listen URL', {
            application_name: 'qmaint-listen',
            connectionTimeoutMillis: this.db.clientConfig().connectionTimeoutMillis,
          })
        : this.db.newClient();
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      this.emit('db-error', err as Error, 'listen');
      this.emit('listening', false);
      this.retryListener(attempt + 1);
      return;
    }
    client.on('notification', (msg) => {
      if (msg.channel === NOTIFY_CHANNEL && msg.payload === this.o.queue) this.wake('notify');
    });
    client.on('end', () => {
      if (this.listener === client) this.listener = null;
      if (!this.closed) this.retryListener(0);
    });
    this.listener = client;
    this.emit('listening', true);
    // Anything announced while we were not listening: look now.
    if (attempt > 0) this.wake('poll');
  }

  private retryListener(attempt: number): void {
    if (this.closed || this.stopping) return;
    const timer = setTimeout(() => void this.startListener(attempt), jitter(Math.min(30_000, 200 * 2 ** attempt)));
    timer.unref();
  }
}

function positive(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1) throw badInput(`${what} must be a whole number of at least 1, got ${JSON.stringify(n)}`);
  return n;
}

/** The last row in claim order (priority DESC, run_at, id): where the next claim starts. */
function lastInClaimOrder(rows: Claimed[]): ClaimCursor {
  let last = rows[0]!;
  for (const r of rows) {
    const t = r.run_at.getTime();
    const lt = last.run_at.getTime();
    if (r.priority < last.priority || (r.priority === last.priority && (t > lt || (t === lt && BigInt(r.id) > BigInt(last.id))))) last = r;
  }
  return { priority: last.priority, runAt: last.run_at, id: last.id };
}

/** The distinct created_at values of a batch: the partition keys its statement prunes by. */
function keys(held: Held[]): Date[] {
  const seen = new Map<number, Date>();
  for (const h of held) seen.set(h.row.created_at.getTime(), h.row.created_at);
  return [...seen.values()];
}

/** The fence keys of the attempts held: what the statements may change. */
function fences(held: Held[]): string[] {
  return held.map((h) => fenceKey(h.row.id, h.row.attempt));
}

function positiveSeconds(n: number, what: string): number {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0.001 || n > 2_147_483)
    throw badInput(`${what} must be a number of seconds from 0.001 to 2147483, got ${JSON.stringify(n)}`);
  return n;
}

/** A thrown value as an Error (for events). */
function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Thrown inside recordFailures when a lone row was refused: go straight to the stand-in text. */
class RowRefused extends Error {}

/**
 * Error text as stored in last_error: NUL characters removed (a text value
 * cannot hold them) and at most ERROR_TEXT_MAX characters, never ending in
 * half a surrogate pair.
 */
export function sanitizeErrorText(text: string): string {
  let clean = text.replace(/\u0000/g, '');
  if (clean.length > ERROR_TEXT_MAX) {
    clean = clean.slice(0, ERROR_TEXT_MAX);
    if (/[\uD800-\uDBFF]$/.test(clean)) clean = clean.slice(0, -1);
  }
  return clean;
}

function errorText(err: unknown): string {
  return sanitizeErrorText(err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err));
}
