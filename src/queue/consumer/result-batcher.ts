/**
 * The result batcher: records completions and failures, one statement per
 * batch, fenced by attempt (statements.ts): a result of an attempt that no
 * longer holds its job changes nothing, and is reported as lost.
 */
import type { Queryable } from '../../db.js';
import { isConnectionError, sqlState } from '../../errors.js';
import { COMPLETE_SQL, FAIL_SQL } from '../statements.js';
import { asError, byQueue, fences, partitionKeys, sanitizeErrorText, type Attempt } from './job.js';

/** A failed attempt and the error text to store. */
export interface Failure {
  held: Attempt;
  error: string;
}

/** What a recorded failure did to the job. */
export interface FailOutcome {
  status: 'queued' | 'failed';
  retryCount: number;
  runAt: Date;
}

/**
 * What a ResultBatcher needs to know of its consumer. Every statement filters
 * by the queue of its jobs (the distribution column a sharded deployment
 * routes on): results of several queues go one statement per queue.
 */
export interface ResultBatcherOptions {
  workerId: string;
  /** Results per statement. */
  batch: number;
  backoffBaseMs: number;
  backoffCapMs: number;
}

/** Where a ResultBatcher reports what happened. */
export interface ResultHooks {
  /** The completion landed. */
  completed(held: Attempt): void;
  /** The failure landed. */
  failed(held: Attempt, error: string, outcome: FailOutcome): void;
  /** The statement changed nothing for this attempt: it had lost its job. */
  lost(held: Attempt): void;
  /** A statement failed; `during` names the step (`complete`, `fail`, ...). */
  error(err: Error, during: string): void;
}

/**
 * SQLSTATE classes that say "this row's data", not "the server or the
 * connection": a batch failing so is sent again row by row.
 */
const ROW_ERROR_CLASSES = ['22', '23', 'P0'];
const isRowError = (err: unknown) => !isConnectionError(err) && ROW_ERROR_CLASSES.some((c) => sqlState(err)?.startsWith(c));

/** Flushes in flight at once. */
const MAX_FLUSHES = 2;

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());
const jitter = (ms: number) => ms / 2 + (Math.random() * ms) / 2;

/** Thrown inside recordFailures when a lone row was refused: go straight to the stand-in text. */
class RowRefused extends Error {}

/**
 * Queues results and sends them in batches (at most two flushes in flight,
 * the next one as soon as one returns). Completions and failures are sent
 * independently: trouble with one never holds back or re-sends the other.
 * Results that could not be sent (server or connection trouble) stay queued
 * for the next flush; the lease protects their jobs meanwhile. Once closed,
 * queued results are dropped: their leases decide.
 */
export class ResultBatcher {
  private readonly toComplete: Attempt[] = [];
  private readonly toFail: Failure[] = [];
  /** The batches of the flushes in progress: out of the queues until they return (what could not be sent goes back). */
  private readonly sending = new Set<readonly Attempt[]>();
  private flushing = 0;
  private flushScheduled = false;
  private closed = false;

  /**
   * @param db - where batched results are sent (autocommit).
   * @param options - worker id, batch size and the retry backoff.
   * @param hooks - where outcomes and errors are reported.
   */
  constructor(
    private readonly db: Queryable,
    private readonly options: ResultBatcherOptions,
    private readonly hooks: ResultHooks,
  ) {}

  /** Results waiting to be sent (or being sent again). */
  get pending(): number {
    return this.toComplete.length + this.toFail.length;
  }

  /**
   * The attempts whose result is not recorded yet: queued, or in a flush
   * now. Their jobs are still `running` under this consumer's lease, so the
   * heartbeat keeps extending it until the result lands.
   */
  unsent(): Attempt[] {
    return [...this.toComplete, ...this.toFail.map((f) => f.held), ...[...this.sending].flat()];
  }

  /** Queue a completion; a flush follows on the next turn of the event loop. */
  addCompletion(held: Attempt): void {
    this.toComplete.push(held);
    this.schedule();
  }

  /** Queue a failure; a flush follows on the next turn of the event loop. */
  addFailure(held: Attempt, error: string): void {
    this.toFail.push({ held, error });
    this.schedule();
  }

  /** Flush until nothing is queued or in flight (at most 20 rounds: a server that keeps refusing leaves the rest to the leases). */
  async flushAll(): Promise<void> {
    for (let attempt = 0; attempt < 20 && (this.pending > 0 || this.flushing > 0); attempt++) {
      await this.flush();
      if (this.flushing > 0 || this.pending > 0) await delay(20);
    }
  }

  /** No more flushes: what is still queued is left to the leases. */
  close(): void {
    this.closed = true;
  }

  /**
   * Mark completed in one statement on `q`; what the statement did not
   * change (the attempt lost the job) is reported lost. `finish`
   * (transaction mode: COMMIT, or ROLLBACK when nothing changed) runs before
   * anything is reported. Throws what the statement throws.
   */
  async complete(done: readonly Attempt[], q: Queryable = this.db, finish?: (changed: number) => Promise<void>): Promise<void> {
    if (done.length === 0) return;
    const changed = new Set<string>();
    for (const [queue, group] of byQueue(done)) {
      const { rows } = await q.query<{ id: string }>(COMPLETE_SQL, [
        group.map((h) => h.row.id),
        partitionKeys(group),
        fences(group),
        this.options.workerId,
        queue,
      ]);
      for (const r of rows) changed.add(r.id);
    }
    await finish?.(changed.size);
    for (const h of done) {
      if (!changed.has(h.row.id)) this.hooks.lost(h);
      else this.hooks.completed(h);
    }
  }

  /**
   * Record failures in one statement on `q` (qmaint.next_try() decides:
   * queued again with backoff, or failed); `finish` (transaction mode:
   * COMMIT) runs before anything is reported. Throws what the statement throws.
   */
  async fail(failed: readonly Failure[], q: Queryable = this.db, finish?: () => Promise<void>): Promise<void> {
    if (failed.length === 0) return;
    const byId = new Map<string, { status: 'queued' | 'failed'; retry_count: number; run_at: Date }>();
    for (const [queue, group] of byQueue(failed.map((f) => ({ row: f.held.row, f })))) {
      const { rows } = await q.query<{ id: string; status: 'queued' | 'failed'; retry_count: number; run_at: Date }>(FAIL_SQL, [
        group.map((g) => g.f.held.row.id),
        group.map((g) => g.f.held.row.created_at),
        fences(group.map((g) => g.f.held)),
        group.map((g) => g.f.error),
        this.options.workerId,
        this.options.backoffBaseMs / 1000,
        this.options.backoffCapMs / 1000,
        queue,
      ]);
      for (const r of rows) byId.set(r.id, r);
    }
    await finish?.();
    for (const f of failed) {
      const r = byId.get(f.held.row.id);
      if (!r) {
        this.hooks.lost(f.held);
        continue;
      }
      this.hooks.failed(f.held, f.error, { status: r.status, retryCount: r.retry_count, runAt: r.run_at });
    }
  }

  /**
   * Record failures through the pool: one statement for the batch. When the
   * batch is refused for something in a row (a data error), each row is sent
   * alone, and a row refused again is recorded with a stand-in text naming
   * the refusal, so one bad row never holds back the rest. Rows not sent
   * because of server or connection trouble go back on the queue and the
   * error is thrown.
   */
  async recordFailures(failed: Failure[]): Promise<void> {
    if (failed.length === 0) return;
    try {
      await this.fail(failed);
      return;
    } catch (err) {
      if (!isRowError(err)) {
        this.toFail.unshift(...failed);
        throw err;
      }
      if (failed.length > 1) this.hooks.error(asError(err), 'fail (batch refused; recording row by row)');
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
        this.hooks.error(asError(err), `fail (job ${f.held.job.id} left to its lease)`);
      }
    }
  }

  /** recordFailures kept what it could not send: report it, and let a flush send it again. */
  retryLater(err: unknown): void {
    this.hooks.error(asError(err), 'fail');
    this.schedule();
  }

  /** Completions, one statement per queue; on trouble, what was not recorded goes back on the queue and the error is thrown. */
  private async completeEachQueue(done: Attempt[]): Promise<void> {
    const groups = byQueue(done);
    for (let i = 0; i < groups.length; i++) {
      try {
        await this.complete(groups[i]![1]);
      } catch (err) {
        for (const [, group] of groups.slice(i)) this.toComplete.unshift(...group);
        throw err;
      }
    }
  }

  /** recordFailures, one queue at a time; on trouble, the queues not tried go back on the queue too. */
  private async recordEachQueue(failed: Failure[]): Promise<void> {
    const groups = byQueue(failed.map((f) => ({ row: f.held.row, f })));
    for (let i = 0; i < groups.length; i++) {
      try {
        await this.recordFailures(groups[i]![1].map((g) => g.f));
      } catch (err) {
        for (const [, group] of groups.slice(i + 1)) this.toFail.unshift(...group.map((g) => g.f));
        throw err;
      }
    }
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.closed) return;
    while (this.flushing < MAX_FLUSHES && this.pending > 0) {
      const done = this.toComplete.splice(0, this.options.batch);
      const failed = this.toFail.splice(0, this.options.batch);
      const batch = failed.length === 0 ? done : [...done, ...failed.map((f) => f.held)];
      this.sending.add(batch);
      this.flushing++;
      try {
        const [c, f] = await Promise.allSettled([this.completeEachQueue(done), this.recordEachQueue(failed)]);
        this.sending.delete(batch);
        let trouble = false;
        if (c.status === 'rejected') {
          this.hooks.error(asError(c.reason), 'complete');
          trouble = true;
        }
        if (f.status === 'rejected') {
          this.hooks.error(asError(f.reason), 'fail');
          trouble = true;
        }
        if (trouble) await delay(jitter(500));
      } finally {
        this.flushing--;
      }
      if (this.closed) return;
    }
  }
}
