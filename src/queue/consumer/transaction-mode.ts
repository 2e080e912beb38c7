/**
 * Transaction mode: one job per transaction, one connection per slot.
 */
import type { CheckedOut } from '../../db.js';
import { badInput, isConnectionError, sqlState } from '../../errors.js';
import { asError, errorText, sanitizeErrorText, type Attempt } from './job.js';
import { Backoff, drainedNow, failedStep, idle, SERIAL_RETRIES, type ConsumerMode, type ModeContext } from './mode.js';

/**
 * Transaction mode: `concurrency` slots, each claiming and running one job at
 * a time (see slotLoop), from the queue the rotation picks among those below
 * their own concurrency.
 */
export class TransactionMode implements ConsumerMode {
  /** Claims in flight per queue (each will run at once, so it counts against the queue's concurrency). */
  private readonly claiming = new Map<string, number>();

  /**
   * @param ctx - the consumer's parts.
   * @throws QmaintError `bad_input` when the pool has fewer than concurrency + 1 connections (each slot holds one while it works).
   */
  constructor(private readonly ctx: ModeContext) {
    const poolMax = (ctx.db.pool as unknown as { options: { max?: number } }).options.max ?? 10;
    const { concurrency } = ctx.options;
    if (poolMax < concurrency + 1) {
      throw badInput(
        `transaction mode holds one connection per handler: the pool needs at least ${concurrency + 1} connections, it has ${poolMax}; connect with max >= concurrency + 1`,
      );
    }
  }

  /** Start `concurrency` slots; resolves once all ended (stop(), or a finished drain). */
  run(): Promise<void> {
    const slots = Array.from({ length: this.ctx.options.concurrency }, () => this.slotLoop());
    return Promise.all(slots).then(() => undefined);
  }

  /** Nothing waits in the buffer in this mode: a slot runs what it claims at once (stop() waits for it up to its deadline). */
  claimsSettled(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * One slot. The claim commits on its own (autocommit) before the handler
   * runs, so every attempt counts: a crash, a killed connection or an aborted
   * transaction leaves the job `running` under its lease (kept alive by the
   * heartbeat while the slot lives), and the rescuer puts it back with
   * retry_count + 1 or fails it. The handler then runs in a transaction on
   * the same connection, and the completion commits with its writes.
   */
  private async slotLoop(): Promise<void> {
    const { ctx } = this;
    const { buffer } = ctx;
    let idleMs = ctx.options.pollMinMs;
    const backoff = new Backoff();
    let serial = 0;
    // The slot keeps its connection while there is work, and gives it back when idle.
    let slot: CheckedOut | null = null;
    try {
      while (!ctx.stopping()) {
        const wakesBefore = ctx.listener.wakeCount;
        const pick = ctx.rotation.pick((queue) => buffer.runningOf(queue) + (this.claiming.get(queue) ?? 0) < buffer.limitOf(queue), wakesBefore);
        if (pick.kind === 'full') {
          slot?.release();
          slot = null;
          await buffer.roomChanged();
          continue;
        }
        let during = 'claim';
        try {
          if (pick.kind === 'queue') {
            const { queue } = pick;
            slot ??= await ctx.db.checkout();
            this.claiming.set(queue, (this.claiming.get(queue) ?? 0) + 1);
            let held: Attempt | null = null;
            try {
              const rows = await ctx.claimer.claim(slot.client, queue, 1, null);
              if (rows.length > 0) {
                held = ctx.hold(rows[0]!);
                buffer.runNow(held);
              }
            } finally {
              this.claiming.set(queue, this.claiming.get(queue)! - 1);
            }
            serial = 0;
            if (held) {
              ctx.rotation.markFound(queue);
              during = 'job transaction';
              if (!(await this.oneInTransaction(slot, held))) {
                slot.release(true);
                slot = null;
              }
              idleMs = ctx.options.pollMinMs;
              backoff.reset();
            } else {
              ctx.rotation.markEmpty(queue, wakesBefore);
            }
            continue;
          }
          slot?.release();
          slot = null;
          during = 'low-water refresh';
          await ctx.claimer.refreshLowWater(true, ctx.db);
          if (ctx.options.drain) {
            during = 'drain check';
            if (await drainedNow(ctx, false)) return;
          }
          backoff.reset();
        } catch (err) {
          slot?.release(true);
          slot = null;
          if (during === 'claim' && sqlState(err) === '40001' && ++serial <= SERIAL_RETRIES) continue;
          serial = 0;
          await failedStep(ctx, err, during, backoff);
          continue;
        }
        idleMs = await idle(ctx, idleMs, pick.wakes, pick.someFull ? buffer.roomChanged() : undefined);
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
  private async oneInTransaction(slot: CheckedOut, held: Attempt): Promise<boolean> {
    const { ctx } = this;
    const { results } = ctx;
    const client = slot.client;
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
      const error = await ctx.run(held);
      if (held.timedOut) {
        // The handler may still be inside a statement on this connection: end
        // the session (its transaction rolls back) and record through the pool.
        await ctx.db.query('SELECT pg_terminate_backend($1)', [(client as unknown as { processID: number }).processID]).catch(() => undefined);
        if (!held.lost) {
          await results.recordFailures([{ held, error: error ?? errorText(held.job.signal.reason) }]).catch((e: unknown) => results.retryLater(e));
        }
        return false;
      }
      if (held.lost) {
        // Cancelled (or its lease lost) while the handler ran: the job is not
        // this attempt's any more, so nothing the handler wrote may commit.
        await client.query('ROLLBACK');
        return true;
      }
      if (error === null) {
        // Lost the job meanwhile: its writes must not commit with someone else's attempt.
        await results.complete([held], client, async (changed) => void (await client.query(changed > 0 ? 'COMMIT' : 'ROLLBACK')));
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
        await results.fail([{ held, error }], client, async () => void (await client.query('COMMIT')));
        return true;
      }
      // The savepoint is gone: undo everything, then record the failure on its own.
      await client.query('ROLLBACK');
      await results.fail([{ held, error }], client);
      return true;
    } catch (err) {
      ctx.emit('db-error', asError(err), 'job transaction');
      let usable = slot.lost === null && !isConnectionError(err);
      if (usable) await client.query('ROLLBACK').catch(() => (usable = false));
      // The handler's outcome is unknown to the database: record it as a failure
      // through the pool (fenced: if a COMMIT did land, this changes nothing).
      if (!held.lost) {
        await results
          .recordFailures([{ held, error: sanitizeErrorText(`the job's transaction failed: ${asError(err).message}`) }])
          .catch((e: unknown) => results.retryLater(e));
      }
      return usable;
    } finally {
      ctx.buffer.settle(held);
    }
  }
}
