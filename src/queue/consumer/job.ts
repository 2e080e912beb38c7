/**
 * What a handler sees of a claimed job, the consumer's record of one attempt
 * (`Attempt`), and running a handler under the attempt's timeout.
 */
import type pg from 'pg';
import { fenceKey } from '../statements.js';

/** What a handler receives. */
export interface Job {
  /** The job's id (a bigint, as text). */
  id: string;
  /** The queue it was claimed from. */
  queue: string;
  /** The payload given at enqueue (parsed JSON). */
  payload: unknown;
  /** Higher runs first. */
  priority: number;
  /** Failed attempts so far (0 on the first try). */
  retryCount: number;
  /** Failed attempts allowed before the job ends `failed`. */
  maxRetries: number;
  /** When it was enqueued (also its partition key). */
  createdAt: Date;
  /** When it became (or becomes again, after a retry) ready to run. */
  runAt: Date;
  /** Which claim of the job this is (1 for the first); every result is fenced by it. */
  attempt: number;
  /** How long this attempt may run, in seconds (the job's own timeout, else the consumer's). */
  timeout: number;
  /**
   * Aborted when the job's timeout or a shutdown deadline passes, the lease
   * was lost, or the job was cancelled (reason: a JobCancelledError). Read
   * after that, it is already aborted. A getter, made on first read: a copy
   * of the job made by spreading it (`{ ...job }`) has no signal.
   */
  signal: AbortSignal;
  /**
   * Transaction mode only: the client whose transaction claimed the job and
   * will mark it completed. Work done through it commits with the job.
   */
  client?: pg.PoolClient;
}

/**
 * A job handler. Whatever it returns (or the promise it returns resolves to)
 * completes the job; a throw (or rejection) fails the attempt, which is
 * retried with backoff while retries remain.
 */
export type Handler = (job: Job) => unknown;

/**
 * Longest error text stored in last_error, in characters; NUL characters
 * (which a PostgreSQL text value cannot hold) are removed first.
 */
export const ERROR_TEXT_MAX = 4000;

/** What a handler's signal is aborted with, and what its attempt fails with, when the job's timeout passes. */
export class JobTimeoutError extends Error {
  /**
   * An error whose message names the job and its timeout.
   *
   * @param jobId - the job whose attempt timed out
   * @param seconds - its timeout
   */
  constructor(jobId: string, seconds: number) {
    super(`job ${jobId} timed out after ${seconds} s`);
    this.name = 'JobTimeoutError';
  }
}

/**
 * What a handler's signal is aborted with when its job is cancelled while it
 * runs (`qmaint jobs cancel`, cancelJobs). The job is already `cancelled` in
 * the database: whatever the handler returns or throws afterwards changes nothing.
 */
export class JobCancelledError extends Error {
  /**
   * An error whose message names the job.
   *
   * @param jobId - the job that was cancelled
   */
  constructor(jobId: string) {
    super(`job ${jobId} was cancelled`);
    this.name = 'JobCancelledError';
  }
}

/** A claimed row, as the Claimer hands it on (created_at and run_at parsed from the text the claim returns). */
export interface ClaimedRow {
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

/**
 * Where one attempt stands in the consumer (see LocalBuffer, which makes
 * every transition):
 * - `claimed`: just claimed, not yet in the buffer;
 * - `waiting`: in the local buffer, handler not started;
 * - `running`: handler started (its result not yet settled);
 * - `finished`: handler settled; its result is being (or was) recorded;
 * - `returned`: given back to the queue unstarted (shutdown);
 * - `lost`: the attempt no longer holds the job (its lease ran out, it was
 *   cancelled, or a fenced statement changed nothing); its result is dropped.
 */
export type AttemptState = 'claimed' | 'waiting' | 'running' | 'finished' | 'returned' | 'lost';

/**
 * The Job a handler receives: plain fields, and `signal` read through its
 * attempt (a getter on the class, so it costs nothing until read; a job
 * object with an accessor of its own costs microseconds to make).
 */
class AttemptJob implements Job {
  id: string;
  queue: string;
  payload: unknown;
  priority: number;
  retryCount: number;
  maxRetries: number;
  createdAt: Date;
  runAt: Date;
  attempt: number;
  timeout: number;
  readonly #of: Attempt;

  constructor(of: Attempt, row: ClaimedRow, defaultTimeout: number) {
    this.#of = of;
    this.id = row.id;
    this.queue = row.queue;
    this.payload = row.payload;
    this.priority = row.priority;
    this.retryCount = row.retry_count;
    this.maxRetries = row.max_retries;
    this.createdAt = row.created_at;
    this.runAt = row.run_at;
    this.attempt = row.attempt;
    this.timeout = row.timeout_ms !== null ? row.timeout_ms / 1000 : defaultTimeout;
  }

  get signal(): AbortSignal {
    return this.#of.signal;
  }
}

/** One claim of one job, as the consumer holds it. */
export class Attempt {
  /** What the handler receives. */
  readonly job: Job;
  /**
   * Behind the handler's signal; made the first time the signal is read or
   * the attempt is aborted: most handlers never read it, and making one for
   * every job cost more than the rest of its Attempt together.
   */
  private controller: AbortController | null = null;
  /** Changed only by LocalBuffer, which asserts each transition. */
  state: AttemptState = 'claimed';
  /** Set when the attempt's timeout passed before its handler settled (the handler may still be running). */
  timedOut = false;

  /**
   * @param row - the claimed row.
   * @param defaultTimeout - seconds the attempt may run when the job has no timeout of its own.
   */
  constructor(
    readonly row: ClaimedRow,
    defaultTimeout: number,
  ) {
    this.job = new AttemptJob(this, row, defaultTimeout);
  }

  /** The handler's signal (job.signal): already aborted, with the first reason, when read after abort(). */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  /** Abort the handler's signal (timeout, shutdown deadline, lost lease, cancel); only the first reason counts. */
  abort(reason: unknown): void {
    this.controller ??= new AbortController();
    this.controller.abort(reason);
  }

  /** True once the attempt lost its job: its result must be dropped. */
  get lost(): boolean {
    return this.state === 'lost';
  }
}

/**
 * The attempts grouped by the queue of their job, in order of first
 * appearance: every statement after the claim names one queue (the
 * distribution column), so a consumer of several queues sends one per queue.
 */
export function byQueue<T extends { row: { queue: string } }>(held: readonly T[]): [queue: string, held: T[]][] {
  const groups = new Map<string, T[]>();
  for (const h of held) {
    const group = groups.get(h.row.queue);
    if (group) group.push(h);
    else groups.set(h.row.queue, [h]);
  }
  return [...groups];
}

/** The distinct created_at values of a batch: the partition keys its statement prunes by. */
export function partitionKeys(held: readonly Attempt[]): Date[] {
  const seen = new Map<number, Date>();
  for (const h of held) seen.set(h.row.created_at.getTime(), h.row.created_at);
  return [...seen.values()];
}

/** The fence keys of the attempts held: what the statements may change. */
export function fences(held: readonly Attempt[]): string[] {
  return held.map((h) => fenceKey(h.row.id, h.row.attempt));
}

/**
 * Run the handler under the attempt's timeout; null on success, the
 * (sanitised) error text on failure. At the deadline the signal is aborted
 * with a JobTimeoutError, `onTimeout` is called, and the attempt fails with
 * that error; a handler that ignores its signal is left running, but its
 * result no longer counts. Never throws.
 */
export function runHandler(handler: Handler, attempt: Attempt, onTimeout: () => void): Promise<string | null> {
  return new Promise((resolve) => {
    let settled = false;
    const timer = setTimeout(
      () => {
        if (settled) return;
        settled = true;
        const err = new JobTimeoutError(attempt.job.id, attempt.job.timeout);
        attempt.timedOut = true;
        attempt.abort(err);
        onTimeout();
        resolve(errorText(err));
      },
      Math.min(attempt.job.timeout * 1000, 2_147_483_647),
    );
    const settle = (result: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    Promise.resolve(attempt.job)
      .then(handler)
      .then(
        () => settle(null),
        (err: unknown) => settle(errorText(err)),
      );
  });
}

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

/** A thrown value as stored in last_error: its stack (else name and message), sanitised. */
export function errorText(err: unknown): string {
  return sanitizeErrorText(err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err));
}

/** A thrown value as an Error (for events). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
