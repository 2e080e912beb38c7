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
  private roomWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  /** @param concurrency - handlers that may run at once (at least 1). */
  constructor(readonly concurrency: number) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a whole number of at least 1, got ${concurrency}`);
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
  }

  /** True when start() would start an attempt: the buffer is open, a slot is free and an attempt waits. */
  canStart(): boolean {
    return this.bufferState === 'open' && this.active.size < this.concurrency && this.waiting.length > 0;
  }

  /** waiting → running: the oldest waiting attempt, or null when canStart() is false. */
  start(): Attempt | null {
    if (!this.canStart()) return null;
    const a = this.waiting.shift()!;
    this.move(a, 'waiting', 'running');
    this.active.add(a);
    return a;
  }

  /**
   * claimed → running, skipping the wait (transaction mode: a slot claims one
   * job and runs it at once). Legal in any buffer state: a claim in flight
   * when stop() began still runs, and stop() waits for it up to its deadline.
   */
  runNow(a: Attempt): void {
    this.move(a, 'claimed', 'running');
    this.active.add(a);
  }

  /**
   * The handler of a running (or lost while running) attempt settled:
   * running → finished, and its slot is free. Returns true when its result
   * counts (false: the attempt was lost meanwhile and stays lost).
   */
  settle(a: Attempt): boolean {
    if (!this.active.delete(a)) throw new IllegalTransitionError('settle', `${a.state} (handler not in progress)`);
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
      if (i >= 0) this.waiting.splice(i, 1);
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
