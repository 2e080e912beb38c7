/**
 * Producers: one job through qmaint.enqueue() (works inside the caller's
 * transaction), many jobs through COPY.
 */
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { Db, type SqlValue } from '../db.js';
import { badInput, badOption, toQmaintError } from '../errors.js';
import { JsonText, unstorable } from '../json.js';

/** Channel every ready job is announced on; the payload is the queue name. */
export const NOTIFY_CHANNEL = 'qmaint_jobs';

/** Options of one job ({@link enqueue}, and defaults for {@link enqueueMany}). */
export interface EnqueueOptions {
  /** Not before this time (default: now). */
  runAt?: Date;
  /** Higher runs first (default 0). */
  priority?: number;
  /** Retries after the first attempt before the job ends failed (default 5). */
  maxRetries?: number;
  /** Partition key; default the server's now(). For tests and time travel (--now). */
  createdAt?: Date;
  /**
   * Seconds one attempt's handler may run (0.001 to 2147483, millisecond
   * precision; default: the consumer's timeout). At the deadline the
   * handler's signal aborts and the attempt fails.
   */
  timeout?: number;
}

/** Largest job timeout, in seconds (timeout_ms is an integer column). */
export const MAX_TIMEOUT_SECONDS = 2_147_483;

/** Where jobs go: a Db, a pg.Pool, or the caller's own client (its transaction is respected). */
export type EnqueueTarget = Db | pg.Pool | pg.Client | pg.PoolClient;

const INT4_MAX = 2_147_483_647;

export function checkQueueName(queue: unknown): string {
  if (typeof queue !== 'string' || queue === '' || queue.length > 128 || /[\u0000-\u001f]/.test(queue)) {
    throw badInput(`queue name ${JSON.stringify(queue)} is not valid; use 1 to 128 printable characters`);
  }
  return queue;
}

/** Refuse options PostgreSQL would refuse (or misread), before anything is sent. */
export function checkOptions(opts: EnqueueOptions): void {
  const int = (v: unknown, what: string, min: number) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > INT4_MAX)) {
      throw badOption(what, `${what} must be a whole number from ${min} to ${INT4_MAX}, got ${typeof v === 'number' ? v : JSON.stringify(v)}`);
    }
  };
  int(opts.priority, 'priority', -INT4_MAX);
  int(opts.maxRetries, 'maxRetries', 0);
  checkTimeout(opts.timeout);
  for (const [what, d] of [
    ['runAt', opts.runAt],
    ['createdAt', opts.createdAt],
  ] as const) {
    if (d !== undefined && !(d instanceof Date && !Number.isNaN(d.getTime()))) throw badInput(`${what} must be a valid Date`);
  }
}

function checkTimeout(timeout: unknown, where = 'timeout'): void {
  if (timeout !== undefined && !(typeof timeout === 'number' && Number.isFinite(timeout) && timeoutMs(timeout) >= 1 && timeout <= MAX_TIMEOUT_SECONDS)) {
    const message = `${where} must be a number of seconds from 0.001 to ${MAX_TIMEOUT_SECONDS}, got ${JSON.stringify(timeout)}`;
    throw where === 'timeout' ? badOption('timeout', message) : badInput(message);
  }
}

/** The stored form of a timeout: whole milliseconds. */
function timeoutMs(seconds: number): number {
  return Math.round(seconds * 1000);
}

/** The payload as JSON text: a JsonText as given, anything else through JSON.stringify. */
function payloadJson(payload: unknown): string {
  if (payload instanceof JsonText) return payload.text;
  let text: string | undefined;
  let lost: number | undefined;
  try {
    // JSON.stringify would write NaN and ±Infinity as null: refuse rather than rewrite.
    text = JSON.stringify(payload === undefined ? {} : payload, (_key, value: unknown) => {
      if (typeof value === 'number' && !Number.isFinite(value)) lost ??= value;
      return value;
    });
  } catch (err) {
    throw badInput(`payload is not JSON-serialisable (${(err as Error).message})`);
  }
  if (text === undefined) throw badInput('payload must be JSON-serialisable');
  if (lost !== undefined)
    throw badInput(`payload holds ${String(lost)}, which JSON cannot represent (JSON.stringify would store null); use a string or a JsonText`);
  const problem = unstorable(text);
  if (problem) throw badInput(`payload ${problem}`);
  return text;
}

/**
 * Enqueue one job; returns its id (bigint as a string). Pass your own client
 * to make the job commit or roll back with your transaction. The payload is
 * any JSON value; a JsonText is stored exactly as its text says.
 *
 * @param target - a {@link Db}, a pg.Pool, or your own pg.Client / pool client (the job then commits or rolls back with your transaction)
 * @param queue - queue name, 1 to 128 printable characters
 * @param payload - any JSON value (undefined stores `{}`), or a {@link JsonText}
 * @param opts - see {@link EnqueueOptions}: run at now, priority 0, 5 retries, the consumer's timeout
 * @returns the job id, a bigint as a decimal string
 * @throws {@link QmaintError} `bad_input` for an invalid queue name, option or payload (NaN, Infinity, a lone surrogate, \u0000, too deep), before anything is sent; through a Db, a classified QmaintError for a failing statement (your own client gets node-pg's error as it is)
 */
export async function enqueue(target: EnqueueTarget, queue: string, payload: unknown, opts: EnqueueOptions = {}): Promise<string> {
  checkQueueName(queue);
  checkOptions(opts);
  const { text, values } = enqueueStatement(queue, payload, opts);
  const { rows } = await run(target, (q) => q.query<{ id: string }>(text, values));
  return rows[0]!.id;
}

/** $1 queue, $2 payload, $3 run_at, $4 priority, $5 max_retries, $6 created_at, $7 timeout in ms. */
export const ENQUEUE_SQL = 'SELECT qmaint.enqueue($1, $2::jsonb, $3, $4, $5, $6, $7) AS id';

/** The statement enqueue() runs for these arguments, with its values (what a dry run prints). */
export function enqueueStatement(queue: string, payload: unknown, opts: EnqueueOptions = {}): { text: string; values: SqlValue[] } {
  return {
    text: ENQUEUE_SQL,
    values: [
      queue,
      payloadJson(payload),
      opts.runAt ?? null,
      opts.priority ?? 0,
      opts.maxRetries ?? 5,
      opts.createdAt ?? null,
      opts.timeout === undefined ? null : timeoutMs(opts.timeout),
    ],
  };
}

/** Options of {@link enqueueMany}: defaults for every job, plus batching. */
export interface EnqueueManyOptions extends EnqueueOptions {
  /** Called after every chunk sent, with the number of jobs sent so far. */
  onProgress?: (sent: number) => void;
  /**
   * Each item is a JobSpec ({ payload, timeout? }) instead of a bare payload,
   * so jobs can carry their own timeout (overriding `timeout`).
   */
  specs?: boolean;
}

/** One job of enqueueMany with `specs: true`. */
export interface JobSpec {
  /** The job's payload, as for {@link enqueue}. */
  payload: unknown;
  /** Seconds one attempt may run (overrides the call's `timeout`). */
  timeout?: number;
}

/**
 * Enqueue many jobs of one queue through COPY, in one transaction (the
 * caller's, when its client is inside one). One NOTIFY for the lot. Returns
 * how many were enqueued. An error from `payloads` (e.g. a malformed input
 * line) aborts the COPY: nothing is enqueued.
 *
 * @param target - as for {@link enqueue}; a pool or Db gets a client of its own and its own transaction
 * @param queue - queue name, 1 to 128 printable characters
 * @param payloads - the payloads (or, with `specs`, {@link JobSpec}s), sync or async; read as they are sent
 * @param opts - see {@link EnqueueManyOptions}; the job options apply to every job
 * @returns how many jobs were enqueued
 * @throws {@link QmaintError} `bad_input` for an invalid queue name, option or payload; whatever `payloads` throws, after rolling the COPY back
 */
export async function enqueueMany(
  target: EnqueueTarget,
  queue: string,
  payloads: Iterable<unknown> | AsyncIterable<unknown>,
  opts: EnqueueManyOptions = {},
): Promise<number> {
  checkQueueName(queue);
  checkOptions(opts);
  return withClient(target, async (client) => {
    const own = client.getTransactionStatus() !== 'T';
    if (own) await client.query('BEGIN');
    try {
      const created = opts.createdAt ?? null;
      // created_at is now() for every row (one transaction): one partition to make sure of.
      // Truncated like the column's default, so the partition made is the one the rows land in.
      await client.query(
        `SELECT qmaint.ensure_jobs_partition(ts), qmaint.lower_low_water(ts) FROM (SELECT date_trunc('milliseconds', coalesce($1::timestamptz, now())) AS ts) s`,
        [created],
      );
      const count = await copyJobs(client, queue, payloads, opts);
      const ready = !opts.runAt || opts.runAt.getTime() <= Date.now();
      if (count > 0 && ready) await client.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, queue]);
      if (own) await client.query('COMMIT');
      return count;
    } catch (err) {
      if (own) await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  });
}

async function copyJobs(client: pg.ClientBase, queue: string, payloads: Iterable<unknown> | AsyncIterable<unknown>, opts: EnqueueManyOptions): Promise<number> {
  const extra: [string, string][] = [];
  if (opts.runAt) extra.push(['run_at', opts.runAt.toISOString()]);
  if (opts.priority !== undefined) extra.push(['priority', String(opts.priority)]);
  if (opts.maxRetries !== undefined) extra.push(['max_retries', String(opts.maxRetries)]);
  if (opts.createdAt) extra.push(['created_at', opts.createdAt.toISOString()]);
  // With specs the timeout is a column of its own, per row; else a constant like the others.
  if (opts.timeout !== undefined && !opts.specs) extra.push(['timeout_ms', String(timeoutMs(opts.timeout))]);
  const columns = ['queue', 'payload', ...(opts.specs ? ['timeout_ms'] : []), ...extra.map(([c]) => c)].join(', ');
  const tail = extra.map(([, v]) => '\t' + v).join('');
  const prefix = copyText(queue) + '\t';
  let count = 0;
  async function* chunks(): AsyncGenerator<string> {
    let buf = '';
    let inChunk = 0;
    for await (const item of payloads as AsyncIterable<unknown>) {
      if (opts.specs) {
        const spec = item as JobSpec;
        if (!spec || typeof spec !== 'object' || !('payload' in spec)) throw badInput(`job ${count + 1} is not a { payload, timeout? } object`);
        checkTimeout(spec.timeout, `job ${count + 1}: timeout`);
        const timeout = spec.timeout ?? opts.timeout;
        buf += prefix + copyText(payloadJson(spec.payload)) + '\t' + (timeout === undefined ? '\\N' : String(timeoutMs(timeout))) + tail + '\n';
      } else {
        buf += prefix + copyText(payloadJson(item)) + tail + '\n';
      }
      count++;
      if (++inChunk === 2000) {
        yield buf;
        opts.onProgress?.(count);
        buf = '';
        inChunk = 0;
      }
    }
    if (buf) yield buf;
    opts.onProgress?.(count);
  }
  const stream = client.query(copyFrom(`COPY qmaint.jobs (${columns}) FROM STDIN`));
  await pipeline(Readable.from(chunks()), stream);
  return count;
}

/** Escape a value for COPY's text format. */
function copyText(value: string): string {
  return value.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
}

// ---------------------------------------------------------------------------

function isPool(target: EnqueueTarget): target is pg.Pool {
  return target instanceof pg.Pool || ('totalCount' in target && !('release' in target));
}

/** Run fn on something that can query, mapping errors for a Db. */
async function run<T>(target: EnqueueTarget, fn: (q: pg.ClientBase | pg.Pool) => Promise<T>): Promise<T> {
  if (target instanceof Db) {
    try {
      return await fn(target.pool);
    } catch (err) {
      throw toQmaintError(err, target.target);
    }
  }
  return fn(target);
}

/**
 * Run fn on one client: the caller's, or one borrowed from a pool for the
 * call. A borrowed client carries an 'error' listener while it is out, so a
 * connection lost mid-call fails the call (a QmaintError, exit 3) instead of
 * the process ("Unhandled 'error' event").
 */
async function withClient<T>(target: EnqueueTarget, fn: (client: pg.ClientBase) => Promise<T>): Promise<T> {
  if (target instanceof Db) {
    try {
      return await target.withClient((c) => fn(c as never));
    } catch (err) {
      throw toQmaintError(err, target.target);
    }
  }
  if (isPool(target)) {
    let client: pg.PoolClient;
    try {
      client = await target.connect();
    } catch (err) {
      throw toQmaintError(err);
    }
    let lost: Error | null = null;
    const onError = (err: Error) => {
      lost ??= err;
    };
    client.on('error', onError);
    let broken = false;
    try {
      return await fn(client);
    } catch (err) {
      broken = true;
      throw toQmaintError(lost ?? err);
    } finally {
      client.off('error', onError);
      client.release(lost ?? broken);
    }
  }
  return fn(target);
}
