/**
 * Typed queues: defineQueue<TPayload>(name) ties a queue name to the shape of
 * its payloads, so the producer's enqueue and the worker's handler agree at
 * compile time. Nothing here is checked at run time beyond what enqueue and
 * the Consumer check anyway: the type is a promise between two pieces of
 * your code, and JSON on the way through the database.
 */
import {
  checkQueueName,
  enqueue,
  enqueueKeyed,
  enqueueMany,
  type EnqueueManyOptions,
  type EnqueueOptions,
  type EnqueueTarget,
  type KeyedResult,
} from './enqueue.js';
import type { Job } from './consumer/job.js';
import { badInput } from '../errors.js';

/** What a handler of a typed queue receives: a {@link Job} whose payload has the queue's type. */
export interface TypedJob<TPayload> extends Omit<Job, 'payload'> {
  /** The payload given at enqueue (parsed JSON), of the queue's payload type. */
  payload: TPayload;
}

/** A handler of a typed queue; as {@link Handler}, with the payload typed. */
export type TypedHandler<TPayload> = (job: TypedJob<TPayload>) => unknown;

/** Options of {@link defineQueue}. */
export interface DefineQueueOptions {
  /** Handlers of this queue running at once in a worker (default: the worker's concurrency). */
  concurrency?: number;
}

/**
 * One entry of a tasks module's map, as {@link QueueDefinition.task} makes
 * it: the handler, the queue's concurrency, and the queue it was made for
 * (the Consumer refuses it under another name).
 */
export interface DefinedTask {
  /** The queue this task handles. */
  readonly queue: string;
  /** The handler, as the Consumer calls it. */
  readonly handler: (job: Job) => unknown;
  /** Handlers of the queue running at once (undefined: the worker's concurrency). */
  readonly concurrency?: number;
}

/** A queue whose payloads have type TPayload: see {@link defineQueue}. */
export interface QueueDefinition<TPayload> {
  /** The queue's name. */
  readonly name: string;
  /** Handlers of this queue running at once in a worker, when set. */
  readonly concurrency: number | undefined;
  /** {@link enqueue} one job of this queue; the payload must be a TPayload. */
  readonly enqueue: (target: EnqueueTarget, payload: TPayload, options?: EnqueueOptions) => Promise<string>;
  /** {@link enqueueKeyed} one job of this queue under a unique key. */
  readonly enqueueKeyed: (target: EnqueueTarget, payload: TPayload, options: EnqueueOptions & { key: string }) => Promise<KeyedResult>;
  /** {@link enqueueMany} jobs of this queue (bare payloads: `specs` is not available here). */
  readonly enqueueMany: (
    target: EnqueueTarget,
    payloads: Iterable<TPayload> | AsyncIterable<TPayload>,
    options?: Omit<EnqueueManyOptions, 'specs' | 'keyMode' | 'onKeys'>,
  ) => Promise<number>;
  /**
   * The entry of a tasks module's map for this queue (`{ [queue.name]:
   * queue.task(handler) }`), with its concurrency; the handler gets jobs
   * whose payload is a TPayload.
   */
  readonly task: (handler: TypedHandler<TPayload>, options?: DefineQueueOptions) => DefinedTask;
}

/**
 * Define a queue whose payloads have type TPayload: its `enqueue` accepts
 * only a TPayload, and its `task` only a handler of TPayload jobs, so a
 * producer and a worker that disagree on the payload do not compile.
 *
 * @example
 * type Email = { to: string; subject: string };
 * export const emails = defineQueue<Email>('emails', { concurrency: 5 });
 * await emails.enqueue(db, { to: 'a@example.com', subject: 'hi' });
 * // tasks.ts, for qmaint work --tasks tasks.js (or new Consumer(db, { queues: tasks })):
 * export default { [emails.name]: emails.task(async (job) => send(job.payload.to)) };
 *
 * @param name - the queue name (1 to 128 printable characters)
 * @param options - see {@link DefineQueueOptions}
 * @throws {@link QmaintError} `bad_input` for an invalid name or concurrency
 */
export function defineQueue<TPayload>(name: string, options: DefineQueueOptions = {}): QueueDefinition<TPayload> {
  checkQueueName(name);
  const concurrency = checkConcurrency(options.concurrency, name);
  return {
    name,
    concurrency,
    enqueue: (target, payload, opts) => enqueue(target, name, payload, opts),
    enqueueKeyed: (target, payload, opts) => enqueueKeyed(target, name, payload, opts),
    enqueueMany: (target, payloads, opts) => enqueueMany(target, name, payloads, opts),
    task: (handler, opts = {}) => {
      const own = checkConcurrency(opts.concurrency, name) ?? concurrency;
      return { queue: name, handler: handler as (job: Job) => unknown, ...(own === undefined ? {} : { concurrency: own }) };
    },
  };
}

function checkConcurrency(n: number | undefined, queue: string): number | undefined {
  if (n !== undefined && (!Number.isInteger(n) || n < 1))
    throw badInput(`queue ${queue}: concurrency must be a whole number of at least 1, got ${JSON.stringify(n)}`);
  return n;
}
