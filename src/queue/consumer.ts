/**
 * The consumer: claims batches with the one claim statement, runs handlers up
 * to a concurrency limit, completes and fails in batches, keeps leases alive,
 * sleeps on LISTEN/NOTIFY with a capped exponential poll, and shuts down
 * gracefully (unstarted jobs go back to the queue).
 *
 * This class only wires its parts together (src/queue/consumer/), each of
 * which owns its state: the Claimer (lanes, keyset cursors, low-water
 * cache), the LocalBuffer (every attempt's state machine), the LeaseKeeper
 * (heartbeat, release, rescue), the ResultBatcher (fenced, batched
 * complete/fail), the Listener (LISTEN with reconnects, the wake-up counter)
 * and the mode, LeaseMode or TransactionMode, which runs the claim loops.
 */
import { EventEmitter } from 'node:events';
import type { Db } from '../db.js';
import { LocalBuffer } from './consumer/buffer.js';
import { Claimer } from './consumer/claimer.js';
import { asError, Attempt, JobCancelledError, runHandler, type ClaimedRow, type Handler } from './consumer/job.js';
import { LeaseKeeper, type RescueResult } from './consumer/lease-keeper.js';
import { LeaseMode } from './consumer/lease-mode.js';
import { Listener } from './consumer/listener.js';
import type { ConsumerMode, ModeContext } from './consumer/mode.js';
import { resolveOptions, type ConsumerEvents, type ConsumerOptions, type ConsumerStats, type ResolvedOptions, type StopReport } from './consumer/options.js';
import { ResultBatcher } from './consumer/result-batcher.js';
import { Rotation } from './consumer/rotation.js';
import { fenceKey } from './statements.js';
import { TransactionMode } from './consumer/transaction-mode.js';

export { ERROR_TEXT_MAX, JobCancelledError, JobTimeoutError, sanitizeErrorText, type Handler, type Job } from './consumer/job.js';
export {
  DEFAULT_JOB_TIMEOUT_SECONDS,
  type ConsumerEvents,
  type ConsumerOptions,
  type ConsumerStats,
  type QueueTask,
  type QueueTasks,
  type StopReport,
  type WakeReason,
} from './consumer/options.js';

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/**
 * Works one queue, or several (`queues`): see ConsumerOptions for what it can
 * be told, and ConsumerEvents for what it reports. Database trouble never
 * throws out of a running consumer: every step reports `db-error` and is retried.
 *
 * @example
 * const consumer = new Consumer(db, { queue: 'emails', handler: async (job) => send(job.payload) });
 * // or several queues, each with its handler and concurrency:
 * // new Consumer(db, { queues: { emails: send, reports: { handler: report, concurrency: 2 } } });
 * await consumer.start();
 * process.once('SIGTERM', () => void consumer.stop({ deadlineMs: 30_000 }));
 * await consumer.done;
 */
export class Consumer extends EventEmitter<ConsumerEvents> {
  /** Shown in locked_by of the jobs it holds. */
  readonly workerId: string;
  /** Counts of rows the statements really changed (see ConsumerStats). */
  readonly stats: ConsumerStats = { claimed: 0, completed: 0, failed: 0, willRetry: 0, failedForGood: 0, returned: 0, lost: 0, timedOut: 0, cancelled: 0 };
  /** The queues it works, in the order given. */
  readonly queues: readonly string[];
  /** Resolves when the consumer has stopped: after stop(), or when a drain finds nothing left. */
  readonly done: Promise<StopReport>;
  private readonly db: Db;
  private readonly o: ResolvedOptions;
  private readonly buffer: LocalBuffer;
  private readonly claimer: Claimer;
  private readonly keeper: LeaseKeeper;
  private readonly results: ResultBatcher;
  private readonly listener: Listener;
  private readonly mode: ConsumerMode;
  private readonly handlers: ReadonlyMap<string, Handler>;
  private running: Promise<void> | null = null;
  private stopping = false;
  private closed = false;
  private timers: NodeJS.Timeout[] = [];
  private finished!: (report: StopReport) => void;

  /**
   * @param db - the connection (see connect()); transaction mode needs its pool to hold concurrency + 1 connections.
   * @param options - see ConsumerOptions.
   * @throws QmaintError with code `bad_input` for an invalid option (see ConsumerOptions), or a pool too small for transaction mode.
   */
  constructor(db: Db, options: ConsumerOptions) {
    super();
    this.o = resolveOptions(options);
    this.workerId = this.o.workerId;
    this.queues = this.o.queues.map((q) => q.name);
    this.handlers = new Map(this.o.queues.map((q) => [q.name, q.handler]));
    this.db = db;
    // EventEmitter's emit, with the argument tuple the generic signature cannot relate to the event name.
    const untyped = this.emit.bind(this) as (event: keyof ConsumerEvents, ...args: unknown[]) => boolean;
    const emit: ModeContext['emit'] = (event, ...args) => void untyped(event, ...args);
    this.buffer = new LocalBuffer(this.o.concurrency, new Map(this.o.queues.map((q) => [q.name, q.concurrency])));
    this.claimer = new Claimer(this.o, (count) => {
      this.stats.claimed += count;
      this.emit('claimed', count);
    });
    this.keeper = new LeaseKeeper(db, this.o);
    this.results = new ResultBatcher(db, this.o, {
      completed: (held) => {
        this.stats.completed++;
        this.emit('completed', held.job);
      },
      failed: (held, error, outcome) => {
        this.stats.failed++;
        if (outcome.status === 'failed') this.stats.failedForGood++;
        else this.stats.willRetry++;
        this.emit('failed', held.job, error, outcome);
      },
      lost: (held) => void this.judgeLost([held]),
      error: (err, during) => this.emit('db-error', err, during),
    });
    this.listener = new Listener(db, new Set(this.queues), this.o.listen, {
      listening: (ok) => this.emit('listening', ok),
      error: (err) => this.emit('db-error', err, 'listen'),
      cancel: (fence) => {
        const held = this.buffer.held().find((h) => fenceKey(h.row.id, h.row.attempt) === fence);
        if (held) this.cancel(held);
      },
    });
    const ctx: ModeContext = {
      db,
      options: this.o,
      claimer: this.claimer,
      buffer: this.buffer,
      results: this.results,
      listener: this.listener,
      keeper: this.keeper,
      rotation: new Rotation(this.queues),
      emit,
      stopping: () => this.stopping,
      hold: (row: ClaimedRow) => {
        const held = new Attempt(row, this.o.timeout);
        this.emit('job-claimed', held.job);
        return held;
      },
      run: (held) => {
        const started = performance.now();
        return runHandler(this.handlers.get(held.row.queue)!, held, () => {
          this.stats.timedOut++;
          this.emit('timeout', held.job);
        }).then((error) => {
          this.emit('handled', held.job, (performance.now() - started) / 1000, error);
          return error;
        });
      },
      lose: (held) => this.lose(held),
      rescue: () => this.rescue(),
    };
    this.mode = this.o.mode === 'transaction' ? new TransactionMode(ctx) : new LeaseMode(ctx);
    this.done = new Promise((resolve) => (this.finished = resolve));
  }

  /** Jobs this consumer holds now: claimed and waiting for a free handler slot, and with a handler in progress. */
  get held(): { waiting: number; running: number } {
    return { waiting: this.buffer.waitingCount, running: this.buffer.runningCount };
  }

  /**
   * Start consuming; resolves once the LISTEN connection is up (or given up
   * on) and the first rescue ran (jobs a crashed consumer left behind go
   * back to the queue before this one looks for work). Calling it again does
   * nothing. Never throws: database trouble is reported as `db-error`.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = Promise.resolve();
    await this.listener.start();
    for (const queue of this.queues) await this.guarded('backoff', () => this.keeper.recordBackoff(queue, this.o.backoffBaseMs, this.o.backoffCapMs));
    await this.guarded('rescue', () => this.rescue());
    this.every(Math.max(200, (this.o.leaseSeconds * 1000) / 3), 'heartbeat', () => this.heartbeat());
    this.every(this.o.rescueEveryMs, 'rescue', () => this.rescue());
    this.running = this.mode.run();
    void this.running
      .then(async () => {
        // A drain ended the loops: finish like a stop with nothing left to wait for.
        if (!this.stopping) this.finished(await this.stop());
      })
      .catch((err: unknown) => this.emit('db-error', asError(err), 'stop'));
  }

  /**
   * Stop claiming, put claimed-but-unstarted jobs back, let running handlers
   * finish up to the deadline (default 30 s), then abort the rest (their
   * leases will run out and the rescuer puts them back). Calling it again
   * returns the first call's report. Never throws.
   */
  async stop(options: { deadlineMs?: number } = {}): Promise<StopReport> {
    if (this.stopping) return this.done;
    this.stopping = true;
    this.listener.stop();
    this.buffer.stop();
    const deadline = delay(options.deadlineMs ?? 30_000);
    await this.mode.claimsSettled();
    const returned = await this.release(this.buffer.takeUnstarted());
    await Promise.race([Promise.all([this.buffer.whenIdle(), this.running]), deadline]);
    const abandoned = this.buffer.inProgress();
    for (const h of abandoned) h.abort(new Error('consumer shutdown deadline passed'));
    await this.results.flushAll();
    this.closed = true;
    this.results.close();
    for (const t of this.timers) clearInterval(t);
    await this.listener.close();
    const report = { returned, abandoned: abandoned.length };
    this.finished(report);
    return report;
  }

  /** This attempt no longer holds the job: abort its handler, drop its result, count it once. */
  private lose(held: Attempt): void {
    if (!this.buffer.lose(held)) return;
    held.abort(new Error('lease lost'));
    this.stats.lost++;
    this.emit('lease-lost', held.job);
  }

  /** The job was cancelled while this attempt held it: abort its handler with a JobCancelledError, drop its result, count it once. */
  private cancel(held: Attempt): void {
    if (!this.buffer.lose(held)) return;
    held.abort(new JobCancelledError(held.job.id));
    this.stats.cancelled++;
    this.emit('cancelled', held.job);
  }

  /**
   * Attempts a statement found no longer holding their job: cancelled ones
   * (their NOTIFY may not have come: polling only, or a LISTEN reconnect) are
   * reported as cancelled, the rest as lost. When that cannot be told, lost.
   */
  private async judgeLost(lost: Attempt[]): Promise<void> {
    const open = lost.filter((h) => !h.lost);
    if (open.length === 0) return;
    let cancelled = new Set<Attempt>();
    try {
      cancelled = await this.keeper.cancelled(open);
    } catch (err) {
      this.emit('db-error', asError(err), 'cancel check');
    }
    for (const h of open) {
      if (cancelled.has(h)) this.cancel(h);
      else this.lose(h);
    }
  }

  /** Give unstarted jobs back; what cannot be given back is left to its lease (the rescuer puts it back). */
  private async release(held: Attempt[]): Promise<number> {
    try {
      const n = await this.keeper.release(held, (err) => this.emit('db-error', asError(err), 'release'));
      this.stats.returned += n;
      return n;
    } catch (err) {
      this.emit('db-error', asError(err), 'release');
      return 0;
    }
  }

  /**
   * Extend the leases of the jobs held (both modes), and of those whose
   * result is not recorded yet (a completion the server refused for a while
   * must not let its lease run out and the job run again); drop the ones it
   * lost or that were cancelled. A result may land between the two
   * statements: the result's own fenced statement tells whether its job was
   * lost, not the heartbeat.
   */
  private async heartbeat(): Promise<void> {
    const unsent = this.results.unsent();
    const lost = await this.keeper.extend([...this.buffer.held(), ...unsent]);
    const pending = new Set(unsent);
    await this.judgeLost(lost.filter((h) => !pending.has(h)));
  }

  /** Run the rescuer; when it put jobs back, report it and wake the claim loops. */
  private async rescue(): Promise<RescueResult | null> {
    const result = await this.keeper.rescue();
    if (result && (result.requeued > 0 || result.failed > 0)) {
      this.emit('rescued', result);
      this.listener.wake('poll');
    }
    return result;
  }

  /** Run fn, reporting a failure as db-error instead of throwing. */
  private async guarded(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.emit('db-error', asError(err), what);
    }
  }

  /** Run fn every ms (never two at once, never after stop()), reporting failures as db-error. */
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
}
