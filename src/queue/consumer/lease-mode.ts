/**
 * Lease mode: claim lanes fill the local buffer in batches (each claim
 * commits at once), handlers run up to `concurrency` at once (and up to
 * each queue's own concurrency), and results go to the result batcher.
 */
import { sqlState } from '../../errors.js';
import { ClaimLane } from './claimer.js';
import type { ClaimedRow } from './job.js';
import { Backoff, drainedNow, failedStep, idle, SERIAL_RETRIES, type ConsumerMode, type ModeContext } from './mode.js';

/**
 * Claims in flight at once in lease mode. One claim after another leaves the
 * server idle while each result travels back and is handed out; a second lane
 * overlaps that (about +7% drain throughput measured on 2 cores).
 */
export const CLAIM_LANES = 2;

/** Lease mode (the default): see the module comment. */
export class LeaseMode implements ConsumerMode {
  /** Jobs asked for by claims in flight, in all and per queue. */
  private claimingAll = 0;
  private readonly claimingOf = new Map<string, number>();
  private loops: Promise<void> = Promise.resolve();

  /** @param ctx - the consumer's parts. */
  constructor(private readonly ctx: ModeContext) {}

  /** Start CLAIM_LANES claim loops; resolves once all ended (stop(), or a finished drain). */
  run(): Promise<void> {
    const lanes = Array.from({ length: CLAIM_LANES }, () => this.claimLoop());
    this.loops = Promise.all(lanes).then(() => undefined);
    return this.loops;
  }

  /** The claim loops end after at most one claim in flight each. */
  claimsSettled(): Promise<void> {
    return this.loops;
  }

  /**
   * One claim lane: claims whenever fewer than `concurrency` jobs wait
   * locally, and never lets the consumer hold more than concurrency + 2 x
   * batch jobs (claims in flight included); per queue, the same with the
   * queue's own concurrency. Each claim takes jobs of the queue the rotation
   * picks, and starts after the lane's last key in that queue. Any failing
   * step is reported (`db-error`) and retried with backoff: the loop only
   * ends on stop() or a finished drain.
   */
  private async claimLoop(): Promise<void> {
    const { ctx } = this;
    const { buffer, options: o } = ctx;
    const lanes = new Map(o.queues.map((q) => [q.name, new ClaimLane()]));
    let idleMs = o.pollMinMs;
    const backoff = new Backoff();
    let serial = 0;
    while (!ctx.stopping()) {
      const wakesBefore = ctx.listener.wakeCount;
      const total = o.concurrency + CLAIM_LANES * o.batch - buffer.waitingCount - buffer.runningCount - this.claimingAll;
      const pick = ctx.rotation.pick((queue) => buffer.waitingCount < o.concurrency && this.want(queue, total) > 0, wakesBefore);
      if (pick.kind === 'full') {
        await buffer.roomChanged();
        continue;
      }
      let during = 'claim';
      try {
        if (pick.kind === 'queue') {
          const { queue } = pick;
          const lane = lanes.get(queue)!;
          const want = this.want(queue, total);
          const fromCursor = lane.cursor !== null;
          let rows: ClaimedRow[];
          this.claiming(queue, want);
          try {
            rows = await ctx.claimer.claim(ctx.db, queue, want, lane);
          } finally {
            this.claiming(queue, -want);
          }
          serial = 0;
          if (rows.length > 0) {
            ctx.rotation.markFound(queue);
            idleMs = o.pollMinMs;
            for (const row of rows) buffer.add(ctx.hold(row));
            this.pump();
            backoff.reset();
          } else if (!fromCursor) {
            ctx.rotation.markEmpty(queue, wakesBefore);
          }
          continue;
        }
        during = 'low-water refresh';
        await ctx.claimer.refreshLowWater(true, ctx.db);
        if (o.drain) {
          during = 'drain check';
          if (await drainedNow(ctx, true)) {
            ctx.emit('drained');
            return;
          }
        }
        backoff.reset();
      } catch (err) {
        if (during === 'claim' && sqlState(err) === '40001' && ++serial <= SERIAL_RETRIES) continue;
        serial = 0;
        await failedStep(ctx, err, during, backoff);
        continue;
      }
      idleMs = await idle(ctx, idleMs, pick.wakes, pick.someFull ? buffer.roomChanged() : undefined);
    }
  }

  /** Jobs a claim of `queue` may ask for now, given `total` room left across queues. */
  private want(queue: string, total: number): number {
    const { buffer, options: o } = this.ctx;
    const limit = buffer.limitOf(queue);
    if (buffer.waitingOfQueue(queue) >= limit) return 0;
    const held = buffer.waitingOfQueue(queue) + buffer.runningOf(queue) + (this.claimingOf.get(queue) ?? 0);
    return Math.min(o.batch, limit + CLAIM_LANES * o.batch - held, total);
  }

  /** Count `n` more (or, negative, fewer) jobs asked for by claims of `queue` in flight. */
  private claiming(queue: string, n: number): void {
    this.claimingAll += n;
    this.claimingOf.set(queue, (this.claimingOf.get(queue) ?? 0) + n);
  }

  /** Start buffered jobs while slots are free; each settled handler's result goes to the batcher. */
  private pump(): void {
    const { buffer, results } = this.ctx;
    for (let held = buffer.start(); held !== null; held = buffer.start()) {
      const a = held;
      void this.ctx.run(a).then((error) => {
        // A lost job's result is dropped (counted when the loss was found).
        if (buffer.settle(a)) {
          if (error === null) results.addCompletion(a);
          else results.addFailure(a, error);
        }
        this.pump();
      });
    }
  }
}
