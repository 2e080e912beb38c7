/**
 * The two ways a consumer runs jobs (lease mode and transaction mode) are
 * strategies behind one interface, ConsumerMode. Both get the consumer's
 * parts through a ModeContext and share the loop plumbing below: the idle
 * sleep, the backoff after a failed step, and the drain check.
 */
import type { Db } from '../../db.js';
import type { LocalBuffer } from './buffer.js';
import type { Claimer } from './claimer.js';
import { asError, type Attempt, type ClaimedRow } from './job.js';
import type { LeaseKeeper, RescueResult } from './lease-keeper.js';
import type { Listener } from './listener.js';
import type { Emit, ResolvedOptions } from './options.js';
import type { ResultBatcher } from './result-batcher.js';
import type { Rotation } from './rotation.js';
import { READY_SQL } from '../statements.js';

/** What a mode is given: the consumer's parts and the few things only the consumer does. */
export interface ModeContext {
  readonly db: Db;
  readonly options: ResolvedOptions;
  readonly claimer: Claimer;
  readonly buffer: LocalBuffer;
  readonly results: ResultBatcher;
  readonly listener: Listener;
  readonly keeper: LeaseKeeper;
  /** Which queue to claim from next (shared by the mode's loops). */
  readonly rotation: Rotation;
  readonly emit: Emit;
  /** True once stop() began: loops end after their current step. */
  stopping(): boolean;
  /** An Attempt of a claimed row (state `claimed`). */
  hold(row: ClaimedRow): Attempt;
  /** Run the attempt's handler under its timeout: null on success, else the error text. Never throws. */
  run(held: Attempt): Promise<string | null>;
  /** The attempt lost its job: abort its handler, count and report it once. */
  lose(held: Attempt): void;
  /** Run the rescuer now (reported when it did something); null when another rescue was running. */
  rescue(): Promise<RescueResult | null>;
}

/** A way to run jobs: lease mode or transaction mode. */
export interface ConsumerMode {
  /** Start the claim loops; resolves once every loop ended (after stop(), or when a drain found nothing left). Never rejects. */
  run(): Promise<void>;
  /**
   * After stop() began: resolves once no claim can add to the buffer any
   * more, so its unstarted attempts can be taken back.
   */
  claimsSettled(): Promise<void>;
}

/** Consecutive serialization failures (40001) of a claim retried at once, before backing off. */
export const SERIAL_RETRIES = 5;

/** Capped (10 s), jittered, doubling backoff between retries of a failing loop step, from 100 ms. */
export class Backoff {
  private ms = 100;
  /** The next wait, in ms; doubles the one after. */
  next(): number {
    const wait = this.ms / 2 + (Math.random() * this.ms) / 2;
    this.ms = Math.min(this.ms * 2, 10_000);
    return wait;
  }
  /** Back to the shortest wait (after a step succeeded). */
  reset(): void {
    this.ms = 100;
  }
}

/**
 * Sleep after empty claims (unless a wake-up came since wakesBefore), or
 * until `roomFreed` (a queue at its limit got room). After a wake-up or the
 * poll interval every queue is looked at again; after `roomFreed` the queues
 * found empty stay skipped until then. Returns the next idle interval.
 */
export async function idle(ctx: ModeContext, idleMs: number, wakesBefore: number, roomFreed?: Promise<void>): Promise<number> {
  ctx.emit('idle', idleMs);
  const sleep = ctx.listener.sleep(idleMs, wakesBefore);
  const reason = roomFreed ? await Promise.race([sleep, roomFreed.then(() => null)]) : await sleep;
  ctx.emit('wake', reason ?? 'poll');
  if (reason === null) return idleMs;
  ctx.rotation.reset();
  return reason === 'notify' ? ctx.options.pollMinMs : Math.min(idleMs * 2, ctx.options.pollMaxMs);
}

/** A loop step failed: report it and wait (capped, jittered, growing; cut short by stop()) before the loop tries again. */
export async function failedStep(ctx: ModeContext, err: unknown, during: string, backoff: Backoff): Promise<void> {
  ctx.emit('db-error', asError(err), during);
  await ctx.listener.sleep(backoff.next());
}

/**
 * Nothing held locally, the rescuer ran (so jobs of a crashed consumer are
 * back in the queue first), and no job of the queue is ready now: the
 * drain is over. A rescue skipped because another one runs means "not sure
 * yet": the caller looks again after its idle sleep. With several queues,
 * none of them may have a job ready. With `waitForIdle`, a
 * consumer still running handlers waits for them before saying no.
 */
export async function drainedNow(ctx: ModeContext, waitForIdle: boolean): Promise<boolean> {
  if (ctx.buffer.waitingCount > 0 || ctx.buffer.runningCount > 0) {
    if (waitForIdle) await ctx.buffer.whenIdle();
    return false;
  }
  await ctx.results.flushAll();
  if ((await ctx.rescue()) === null) return false;
  // The mark as the rescue left it: the claims that follow use it too.
  await ctx.claimer.refreshLowWater(true, ctx.db);
  const mark = ctx.claimer.lowWaterMark ?? '-infinity';
  for (const { name } of ctx.options.queues) {
    const { rows } = await ctx.db.query<{ ready: boolean }>(READY_SQL, [name, mark]);
    if (rows[0]!.ready) return false;
  }
  return true;
}
