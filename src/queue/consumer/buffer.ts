/**
 * The local buffer: the attempts a consumer holds, waiting or running, and
 * the one place where an attempt changes state. Every transition is checked
 * against the table below; an illegal one is a bug in the consumer and
 * throws an IllegalTransitionError instead of corrupting the books.
 *
 *   claimed ──add──▶ waiting ──start──▶ running ──settle──▶ finished
 *      │                │                  ▲                  │
 *      └────runNow──────┼──────────────────┘                  │
 *                       └──takeUnstarted──▶ returned          │
 *   waiting | running | finished ──lose──▶ lost ◀─────────────┘
 *
 * Each queue may have a limit of its own (`limits`): an attempt starts only
 * while fewer than its queue's limit of that queue's handlers are in
 * progress, and the oldest waiting attempt that may start starts first.
 *
 * The buffer itself is `open` (handlers start), then `stopping` (no handler
 * starts; claims in flight may still add), then `closed` (the unstarted
 * attempts were taken back; nothing is added any more).
 */
import type { Attempt, AttemptState } from './job.js';

/** The buffer's own state: see the module comment. */
export type BufferState = 'open' | 'stopping' | 'closed';

/** Thrown on a transition the state table does not allow: a bug, never a user error. */
export class IllegalTransitionError extends Error {
  /** @param what - the transition tried; @param from - the state it was tried from. */
  constructor(what: string, from: string) {
    super(`consumer buffer: illegal transition ${what} from ${from}`);
    this.name = 'IllegalTransitionError';
  }
}

/** Holds the attempts of one consumer and runs the state machine of each (see the module comment). */
export class LocalBuffer {
  private bufferState: BufferState = 'open';
  private readonly waiting: Attempt[] = [];
  /** Attempts whose handler is in progress (running, or lost while running). */
  private readonly active = new Set<Attempt>();
  /** Handlers in progress per queue. */
  private readonly activeOf = new Map<string, number>();
  /** Attempts waiting per queue. */
  private readonly waitingOf = new Map<string, number>();
  private roomWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  /**
   * @param concurrency - handlers that may run at once (at least 1).
   * @param limits - handlers of one queue that may run at once, per queue (a queue not named: concurrency).
   */
  constructor(
    readonly concurrency: number,
    private readonly limits: ReadonlyMap<string, number> = new Map(),
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a whole number of at least 1, got ${concurrency}`);
  }

  /** Handlers of this queue that may run at once. */
  limitOf(queue: string): number {
    return Math.min(this.limits.get(queue) ?? this.concurrency, this.concurrency);
  }

  /** Handlers of this queue in progress (a lost attempt's handler counts until it settles). */
  runningOf(queue: string): number {
    return this.activeOf.get(queue) ?? 0;
  }

  /** Attempts of this queue claimed and not started. */
  waitingOfQueue(queue: string): number {
    return this.waitingOf.get(queue) ?? 0;
  }

  /** open, stopping or closed. */
  get state(): BufferState {
    return this.bufferState;
  }

  /** Attempts claimed and not started. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Handlers in progress (a lost attempt's handler counts until it settles). */
  get runningCount(): number {
    return this.active.size;
  }

  /** claimed → waiting. Legal while the buffer is open or stopping (a claim in flight at stop() lands). */
  add(a: Attempt): void {
    if (this.bufferState === 'closed') throw new IllegalTransitionError('add', 'buffer closed');
    this.move(a, 'claimed', 'waiting');
    this.waiting.push(a);
    count(this.waitingOf, a.row.queue, 1);
  }

  /** True when start() would start an attempt: the buffer is open, a slot is free and an attempt of a queue below its limit waits. */
  canStart(): boolean {
    return this.nextStartable() >= 0;
  }

  /** waiting → running: the oldest waiting attempt whose queue is below its limit, or null when canStart() is false. */
  start(): Attempt | null {
    const i = this.nextStartable();
    if (i < 0) return null;
    const a = this.waiting.splice(i, 1)[0]!;
    count(this.waitingOf, a.row.queue, -1);
    this.move(a, 'waiting', 'running');
    this.active.add(a);
    count(this.activeOf, a.row.queue, 1);
    return a;
  }

  /** Index in `waiting` of the attempt start() would start, or -1. */
  private nextStartable(): number {
    if (this.bufferState !== 'open' || this.active.size >= this.concurrency) return -1;
    return this.waiting.findIndex((a) => this.runningOf(a.row.queue) < this.limitOf(a.row.queue));
  }

  /**
   * claimed → running, skipping the wait (transaction mode: a slot claims one
   * job and runs it at once). Legal in any buffer state: a claim in flight
   * when stop() began still runs, and stop() waits for it up to its deadline.
   */
  runNow(a: Attempt): void {
    this.move(a, 'claimed', 'running');
    this.active.add(a);
    count(this.activeOf, a.row.queue, 1);
  }

  /**
   * The handler of a running (or lost while running) attempt settled:
   * running → finished, and its slot is free. Returns true when its result
   * counts (false: the attempt was lost meanwhile and stays lost).
   */
  settle(a: Attempt): boolean {
    if (!this.active.delete(a)) throw new IllegalTransitionError('settle', `${a.state} (handler not in progress)`);
    count(this.activeOf, a.row.queue, -1);
    const counts = a.state === 'running';
    if (counts) a.state = 'finished';
    for (const w of this.roomWaiters.splice(0)) w();
    if (this.active.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    return counts;
  }

  /**
   * waiting, running or finished → lost: the attempt no longer holds its
   * job. Returns true on the transition, false when it was already lost
   * (each loss is counted once). A waiting attempt leaves the buffer.
   */
  lose(a: Attempt): boolean {
    if (a.state === 'lost') return false;
    if (a.state === 'waiting') {
      const i = this.waiting.indexOf(a);
      if (i >= 0) {
        this.waiting.splice(i, 1);
        count(this.waitingOf, a.row.queue, -1);
      }
    } else if (a.state !== 'running' && a.state !== 'finished') {
      throw new IllegalTransitionError('lose', a.state);
    }
    a.state = 'lost';
    return true;
  }

  /** open → stopping: no handler starts any more; whoever waits for room or idleness is woken to look again. */
  stop(): void {
    if (this.bufferState !== 'open') throw new IllegalTransitionError('stop', `buffer ${this.bufferState}`);
    this.bufferState = 'stopping';
    for (const w of this.roomWaiters.splice(0)) w();
  }

  /** stopping → closed: every waiting attempt → returned, and taken out (to be given back to the queue). */
  takeUnstarted(): Attempt[] {
    if (this.bufferState !== 'stopping') throw new IllegalTransitionError('takeUnstarted', `buffer ${this.bufferState}`);
    this.bufferState = 'closed';
    const taken = this.waiting.splice(0);
    this.waitingOf.clear();
    for (const a of taken) this.move(a, 'waiting', 'returned');
    return taken;
  }

  /** Attempts whose lease must be kept: waiting or running, not lost. */
  held(): Attempt[] {
    const out: Attempt[] = [];
    for (const a of this.waiting) out.push(a);
    for (const a of this.active) if (a.state === 'running') out.push(a);
    return out;
  }

  /** Handlers still in progress (what a shutdown deadline abandons). */
  inProgress(): Attempt[] {
    return [...this.active];
  }

  /** Resolves at the next settle() or stop(): a claimer waiting for room looks again. */
  roomChanged(): Promise<void> {
    return new Promise((r) => this.roomWaiters.push(r));
  }

  /** Resolves once no handler is in progress. */
  whenIdle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private move(a: Attempt, from: AttemptState, to: AttemptState): void {
    if (a.state !== from) throw new IllegalTransitionError(`${from} → ${to}`, a.state);
    a.state = to;
  }
}

/** Add `by` to the count of `key` (a count of 0 leaves the map). */
function count(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n === 0) map.delete(key);
  else map.set(key, n);
}
