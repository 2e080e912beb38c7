/**
 * The consumer's options, their defaults and their validation, and the
 * consumer's events.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { badInput } from '../../errors.js';
import { checkQueueName } from '../enqueue.js';
import type { Handler, Job } from './job.js';

/**
 * One queue of a consumer that works several ({@link ConsumerOptions.queues}):
 * its handler, and how many of its jobs may run at once.
 */
export interface QueueTask {
  /** Runs each job of the queue (a function, else the constructor throws). */
  handler: Handler;
  /** Handlers of this queue running at once (default: the consumer's concurrency; a whole number of at least 1). */
  concurrency?: number;
  /** The queue the task was made for (defineQueue's task() sets it): under another name the constructor throws. */
  queue?: string;
}

/** The queues of a consumer that works several: queue name → its handler, or its handler and concurrency. */
export type QueueTasks = Record<string, Handler | QueueTask>;

/**
 * Options of a Consumer. Name the work either as `queue` and `handler` (one
 * queue) or as `queues` (several, each with its handler and concurrency),
 * never both. The constructor validates them and throws a `QmaintError` with
 * code `bad_input` (one line saying what is wrong) for a bad queue name, a
 * handler that is not a function, a count below 1 or not whole, or a timeout
 * out of range.
 */
export interface ConsumerOptions {
  /** The queue to work (a valid queue name, else the constructor throws); with `handler`, instead of `queues`. */
  queue?: string;
  /** Runs each job of `queue` (a function, else the constructor throws). */
  handler?: Handler;
  /**
   * Several queues worked by this one consumer, instead of `queue` and
   * `handler`: queue name → handler, or `{ handler, concurrency }`. Each
   * claim statement takes jobs of one queue; the consumer turns through the
   * queues that have room and were not found empty since it last slept (see
   * docs/queue.md, "One worker, many queues").
   */
  queues?: QueueTasks;
  /**
   * Handlers running at once, across all its queues (a whole number of at
   * least 1). Default: with `queues` each of which sets its own concurrency,
   * their sum; else 10.
   */
  concurrency?: number;
  /** Jobs claimed per statement, and results sent per statement (default 100; a whole number of at least 1). Claims are one job each in transaction mode. */
  batch?: number;
  /** Lease of a claimed job, in seconds (default 60; a whole number of at least 1); extended every third of it while the job is held. */
  leaseSeconds?: number;
  /**
   * lease (default): claim, commit, run, complete in batches.
   * transaction: claim one job, run the handler and complete it in one
   * transaction (the handler may use job.client), one connection per slot.
   * Transaction mode needs a pool of at least concurrency + 1 connections,
   * else the constructor throws (`bad_input`).
   */
  mode?: 'lease' | 'transaction';
  /** Exit once no job of the queue is ready to run now (default false); `done` then resolves. */
  drain?: boolean;
  /** LISTEN for NOTIFY: true (default, same server), false (poll only), or a direct URL (e.g. around PgBouncer). */
  listen?: boolean | string;
  /** First idle poll interval in ms (default 50); it doubles while idle, up to pollMaxMs. */
  pollMinMs?: number;
  /** Longest idle poll interval in ms (default 5000). */
  pollMaxMs?: number;
  /** Retry backoff base in ms (default 1000), with jitter; recorded for the queue, so rescue uses it too. */
  backoffBaseMs?: number;
  /** Retry backoff cap in ms (default 3,600,000: one hour). */
  backoffCapMs?: number;
  /** How often to re-read the low-water mark while busy, in ms (default 5000). */
  lowWaterRefreshMs?: number;
  /** How often to restart the claim from the head of the queue while busy, in ms (default 2000). */
  rescanMs?: number;
  /** How often to run qmaint.rescue_expired(), in ms (default: half the lease, at least 1 s, at most 30 s). */
  rescueEveryMs?: number;
  /**
   * Seconds a handler may run when its job carries no timeout of its own
   * (default 900, from 0.001 to 2147483, else the constructor throws). At the
   * deadline its signal aborts and the attempt fails with a JobTimeoutError,
   * as if the handler had thrown it.
   */
  timeout?: number;
  /** Shown in locked_by (default host:pid:random). */
  workerId?: string;
}

/** Default of ConsumerOptions.timeout, in seconds. */
export const DEFAULT_JOB_TIMEOUT_SECONDS = 900;

/** One queue a consumer works, resolved: its name, handler and concurrency. */
export interface ResolvedQueue {
  name: string;
  handler: Handler;
  concurrency: number;
}

/** ConsumerOptions with every default filled in and every value checked; the queues as a list. */
export type ResolvedOptions = Required<Omit<ConsumerOptions, 'listen' | 'queue' | 'handler' | 'queues'>> & {
  listen: boolean | string;
  /** The queues worked, in the order given (at least one). */
  queues: ResolvedQueue[];
};

/** The queues of the options (one, or several), each checked; throws `bad_input` on the first bad one. */
function queuesOf(options: ConsumerOptions): { name: string; handler: unknown; concurrency?: number }[] {
  if (options.queues !== undefined) {
    if (options.queue !== undefined || options.handler !== undefined) throw badInput('give either queue and handler, or queues, not both');
    if (options.queues === null || typeof options.queues !== 'object') throw badInput('queues must map queue names to handlers');
    const entries = Object.entries(options.queues);
    if (entries.length === 0) throw badInput('queues names no queue; map at least one queue name to its handler');
    return entries.map(([name, task]) => {
      checkQueueName(name);
      if (typeof task === 'function') return { name, handler: task };
      if (task === null || typeof task !== 'object') throw badInput(`queue ${name}: give a handler function, or { handler, concurrency }`);
      if (task.queue !== undefined && task.queue !== name)
        throw badInput(`queue ${name}: its task was defined for queue ${task.queue}; use that name as its key`);
      return {
        name,
        handler: task.handler,
        concurrency: task.concurrency === undefined ? undefined : positive(task.concurrency, `queue ${name}: concurrency`),
      };
    });
  }
  if (options.queue === undefined) throw badInput('name the queue to work (queue and handler), or the queues (queues)');
  checkQueueName(options.queue);
  return [{ name: options.queue, handler: options.handler }];
}

/** Fill in the defaults of ConsumerOptions and check every value; throws `bad_input` on the first bad one. */
export function resolveOptions(options: ConsumerOptions): ResolvedOptions {
  const given = queuesOf(options);
  for (const q of given) {
    if (typeof q.handler !== 'function')
      throw badInput(given.length > 1 || options.queues ? `queue ${q.name}: handler must be a function` : 'handler must be a function');
  }
  const lease = options.leaseSeconds ?? 60;
  const own = given.flatMap((q) => (q.concurrency === undefined ? [] : [q.concurrency]));
  const sum = options.queues && own.length === given.length ? own.reduce((a, b) => a + b, 0) : 10;
  const concurrency = positive(options.concurrency ?? sum, 'concurrency');
  return {
    queues: given.map((q) => ({ name: q.name, handler: q.handler as Handler, concurrency: Math.min(q.concurrency ?? concurrency, concurrency) })),
    concurrency,
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
    workerId: options.workerId ?? `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
  };
}

function positive(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1) throw badInput(`${what} must be a whole number of at least 1, got ${JSON.stringify(n)}`);
  return n;
}

function positiveSeconds(n: number, what: string): number {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0.001 || n > 2_147_483)
    throw badInput(`${what} must be a number of seconds from 0.001 to 2147483, got ${JSON.stringify(n)}`);
  return n;
}

/** Why an idle consumer woke up: a NOTIFY for its queue, its poll interval (or a rescue, or a LISTEN reconnect), or stop(). */
export type WakeReason = 'notify' | 'poll' | 'stop';

/** The events a Consumer emits, with their arguments. */
export interface ConsumerEvents {
  /** A claim statement returned this many jobs. */
  claimed: [count: number];
  /** One job of a claim, as it was claimed (before its handler starts); for per-job accounting such as claim latency. */
  'job-claimed': [job: Job];
  /** The job's handler settled after `seconds`: error null when it succeeded, else the error text (its result is recorded next). */
  handled: [job: Job, seconds: number, error: string | null];
  /** The job's completion was recorded. */
  completed: [job: Job];
  /** The job's failure was recorded: queued again (with its next run_at) or failed for good. */
  failed: [job: Job, error: string, outcome: { status: 'queued' | 'failed'; retryCount: number; runAt: Date }];
  /** The job's timeout passed: its signal was aborted and the attempt fails. */
  timeout: [job: Job];
  /** A claim found nothing; the consumer sleeps up to sleepMs. */
  idle: [sleepMs: number];
  /** An idle sleep ended. */
  wake: [reason: WakeReason];
  /** The LISTEN connection is up (true) or could not be set up (false; it is retried with backoff). */
  listening: [ok: boolean];
  /** rescue_expired() put jobs back or failed them. */
  rescued: [result: { requeued: number; failed: number }];
  /**
   * The job was cancelled while this consumer held it (`qmaint jobs cancel`,
   * cancelJobs): its signal is aborted with a JobCancelledError and whatever
   * its handler returns or throws afterwards is dropped (the job stays cancelled).
   */
  cancelled: [job: Job];
  /** This attempt no longer holds the job (its lease ran out): its signal is aborted and its result dropped. */
  'lease-lost': [job: Job];
  /** A step failed (`during` names it: claim, complete, fail, heartbeat, rescue, listen, ...); it is retried. */
  'db-error': [error: Error, during: string];
  /** A draining consumer found nothing left; it stops. */
  drained: [];
}

/** How an EventEmitter<ConsumerEvents> emits: what the parts are given to report through. */
export type Emit = <K extends keyof ConsumerEvents>(event: K, ...args: ConsumerEvents[K]) => void;

/** What stop() reports. */
export interface StopReport {
  /** Claimed but never started: put back in the queue. */
  returned: number;
  /** Still running at the deadline: their leases will run out and they will be rescued. */
  abandoned: number;
}

/** Counts of rows the statements really changed, not of results attempted. */
export interface ConsumerStats {
  /** Jobs claimed. */
  claimed: number;
  /** Completions recorded. */
  completed: number;
  /** Failures recorded: willRetry + failedForGood. */
  failed: number;
  /** Failures whose job went back to the queue for a retry. */
  willRetry: number;
  /** Failures whose job is now failed (its retries were spent). */
  failedForGood: number;
  /** Unstarted jobs put back at stop(). */
  returned: number;
  /** Results dropped because the attempt had lost the job (lease ran out, job rescued or claimed again). */
  lost: number;
  /** Attempts failed by their timeout. */
  timedOut: number;
  /** Jobs cancelled while this consumer held them: their handlers' signals were aborted and their results dropped. */
  cancelled: number;
}
