import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import pg from 'pg';
import type { SqlValue } from '../../db.js';
import { badInput, QmaintError, sqlState } from '../../errors.js';
import { JsonText, objectMembers } from '../../json.js';
import {
  checkOptions,
  checkQueueName,
  enqueue,
  enqueueKeyed,
  enqueueKeyedStatement,
  enqueueMany,
  enqueueStatement,
  KEY_MODES,
  type EnqueueOptions,
  type JobSpec,
  type KeyMode,
  type KeyOutcome,
} from '../../queue/enqueue.js';
import { handler, parseTimestamp, type Context } from '../context.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import type { Register } from '../register.js';

/** A statement with its $n parameters written in as literals (what --dry-run prints). */
function inlineValues(text: string, values: SqlValue[]): string {
  return text.replace(/\$(\d+)/g, (_m, n: string) => {
    const v = values[Number(n) - 1];
    if (v === null || v === undefined) return 'NULL';
    if (typeof v === 'number') return String(v);
    return pg.escapeLiteral(v instanceof Date ? v.toISOString() : String(v));
  });
}

interface Args {
  queue: string;
  payload?: string;
  file?: string;
  runAt?: string;
  priority?: number;
  maxRetries?: number;
  timeout?: string;
  key?: string;
  keyMode?: string;
  envelope: boolean;
  dryRun: boolean;
}

const register: Register = (y) => {
  y.command(
    'enqueue',
    'add jobs to a queue, one (--payload) or many (--file, NDJSON through COPY)',
    (b) =>
      b
        .option('queue', { type: 'string', demandOption: true, description: 'queue name' })
        .option('payload', { type: 'string', description: 'the job payload, as JSON' })
        .option('file', { type: 'string', nargs: 1, description: 'NDJSON file, one payload per line ("-" for stdin)' })
        .option('run-at', { type: 'string', description: 'not before this ISO timestamp (default now)' })
        .option('priority', { type: 'number', description: 'higher runs first (default 0)' })
        .option('max-retries', { type: 'number', description: 'retries after the first attempt (default 5)' })
        .options(durationOptions(JOB_TIMEOUT, "how long one attempt may run before its signal aborts and it fails (default: the consumer's, 15m)"))
        .option('key', { type: 'string', description: 'a unique key: no second job while a queued or running job of the queue holds it' })
        .option('key-mode', {
          type: 'string',
          description: 'skip (default): skip the new job while the key is held; replace: a queued holder gets the new payload and run_at',
        })
        .option('envelope', {
          type: 'boolean',
          default: false,
          description: 'with --file: each line is {"payload": ..., "timeout": S, "key": K} (timeout and key optional; a key needs --key-mode)',
        })
        .option('dry-run', { type: 'boolean', default: false, description: 'check the input and print the SQL; enqueue nothing' })
        .conflicts('payload', 'file'),
    handler<Args>(async (ctx, argv) => {
      checkQueueName(argv.queue);
      const opts = options(ctx, argv);
      if (argv.file !== undefined) return enqueueFile(ctx, argv, opts);
      if (argv.envelope) throw badInput('--envelope describes the lines of --file; give --file F');
      if (argv.payload === undefined) throw badInput('give the job with --payload JSON, or many jobs with --file F (NDJSON, - for stdin)');
      const payload = payloadArgument(argv.payload);
      if (argv.key !== undefined) return enqueueOneKeyed(ctx, argv, payload, { ...opts, key: argv.key });
      if (argv.dryRun) {
        const { text, values } = enqueueStatement(argv.queue, payload, opts);
        const sql = inlineValues(text, values);
        const steps = [{ seq: 1, action: 'enqueue', statement: sql, lockLevel: 'ROW EXCLUSIVE on qmaint.jobs', reason: `one job on queue ${argv.queue}` }];
        ctx.out.emit({ ok: true, dryRun: true, steps }, () => ctx.out.plan(steps));
        return;
      }
      const db = await ctx.migratedDb({ max: 2 });
      const id = await enqueue(db, argv.queue, payload, opts).catch(refusedPayload);
      ctx.out.emit({ ok: true, queue: argv.queue, enqueued: 1, id }, () => ctx.out.ok(`enqueued job ${id} on queue ${argv.queue}`));
    }),
  );
};

async function enqueueOneKeyed(ctx: Context, argv: Args, payload: JsonText, opts: EnqueueOptions & { key: string }): Promise<void> {
  if (argv.dryRun) {
    const { text, values } = enqueueKeyedStatement(argv.queue, payload, opts);
    const steps = [
      {
        seq: 1,
        action: 'enqueue',
        statement: inlineValues(text, values),
        lockLevel: 'ROW EXCLUSIVE on qmaint.jobs and qmaint.job_keys',
        reason: `one job on queue ${argv.queue} holding key ${opts.key} (${opts.keyMode ?? 'skip'} while the key is held)`,
      },
    ];
    ctx.out.emit({ ok: true, dryRun: true, steps }, () => ctx.out.plan(steps));
    return;
  }
  const db = await ctx.migratedDb({ max: 2 });
  const r = await enqueueKeyed(db, argv.queue, payload, opts).catch(refusedPayload);
  const said: Record<KeyOutcome, string> = {
    inserted: `enqueued job ${r.id} on queue ${argv.queue} holding key ${opts.key}`,
    replaced: `job ${r.id} holding key ${opts.key} on queue ${argv.queue} got the new payload and run time`,
    skipped: `skipped: job ${r.id} holds key ${opts.key} on queue ${argv.queue}`,
  };
  ctx.out.emit({ ok: true, queue: argv.queue, key: opts.key, outcome: r.outcome, enqueued: r.outcome === 'inserted' ? 1 : 0, id: r.id }, () =>
    r.outcome === 'skipped' ? ctx.out.warn(said.skipped) : ctx.out.ok(said[r.outcome]),
  );
}

function keyMode(value: string | undefined): KeyMode | undefined {
  if (value === undefined) return undefined;
  if (!KEY_MODES.includes(value as KeyMode)) throw badInput(`--key-mode ${JSON.stringify(value)} is not one of ${KEY_MODES.join(', ')}`);
  return value as KeyMode;
}

const JOB_TIMEOUT: DurationFlag = { flag: 'timeout', min: 1, max: 2_147_483_000, bare: 's' };

function options(ctx: Context, argv: Args): EnqueueOptions {
  const opts: EnqueueOptions = {};
  const mode = keyMode(argv.keyMode);
  if (mode !== undefined) opts.keyMode = mode;
  if (argv.key !== undefined && argv.file !== undefined)
    throw badInput('--key names the key of one job; with --file give each line its own "key" (--envelope --key-mode skip|replace)');
  if (mode !== undefined && argv.key === undefined && !(argv.file !== undefined && argv.envelope))
    throw badInput('--key-mode needs --key K (one job) or --file F --envelope (a "key" per line)');
  if (argv.runAt !== undefined) opts.runAt = parseTimestamp(argv.runAt, '--run-at');
  if (argv.priority !== undefined) opts.priority = argv.priority;
  if (argv.maxRetries !== undefined) opts.maxRetries = argv.maxRetries;
  const timeout = readDuration(ctx.out, JOB_TIMEOUT, argv.timeout);
  if (timeout !== undefined) opts.timeout = timeout / 1000;
  // --now: the job is created "then" (it lands in that time's partition).
  if (ctx.nowGiven) opts.createdAt = ctx.now;
  checkOptions(opts);
  return opts;
}

/**
 * SQLSTATEs of jsonb input PostgreSQL refuses: invalid text, a character the
 * database's encoding cannot hold (two codes), a number out of range, and
 * nesting beyond the stack depth limit.
 */
// 0A000: PostgreSQL 15 and older refuse a \u escape a non-UTF8 database cannot hold as an unsupported conversion.
const PAYLOAD_REFUSED = new Set(['22P02', '22P05', '22021', '22003', '54001', '0A000']);

/**
 * PostgreSQL refusing what qmaint checked as storable (e.g. a \u escape the
 * database's encoding cannot hold, or a stack depth limit set lower than
 * qmaint's nesting limit) is bad input: the transaction rolled back, nothing
 * was enqueued.
 */
function refusedPayload(err: unknown): never {
  const cause = err instanceof QmaintError ? err.cause : err;
  const state = sqlState(cause);
  if (state !== undefined && PAYLOAD_REFUSED.has(state)) {
    throw badInput(`PostgreSQL refused a payload (${(cause as Error).message}); fix the payload, nothing was enqueued`);
  }
  throw err;
}

/**
 * --payload as given. Node decodes the command line with U+FFFD in place of
 * bytes that are not UTF-8; when the payload holds U+FFFD, the raw command
 * line (Linux: /proc/self/cmdline) tells a real U+FFFD from a replaced byte.
 */
function payloadArgument(text: string): JsonText {
  if (text.includes('\uFFFD') && existsSync('/proc/self/cmdline')) {
    const decoder = new TextDecoder('utf-8', { fatal: true });
    for (const arg of splitBytes(readFileSync('/proc/self/cmdline'), 0)) {
      try {
        decoder.decode(arg);
      } catch {
        throw badInput('--payload is not valid UTF-8; give the payload in UTF-8, nothing was enqueued');
      }
    }
  }
  return JsonText.parse(text, '--payload');
}

function* splitBytes(buf: Buffer, separator: number): Generator<Buffer> {
  let start = 0;
  for (let i = buf.indexOf(separator); i !== -1; i = buf.indexOf(separator, start)) {
    yield buf.subarray(start, i);
    start = i + 1;
  }
  if (start < buf.length) yield buf.subarray(start);
}

/** Lines of a byte stream, without their "\n", as bytes (decoding is the caller's). */
async function* byteLines(input: NodeJS.ReadableStream): AsyncGenerator<Buffer> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of input) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    const buf = rest.length > 0 ? Buffer.concat([rest, bytes]) : bytes;
    let start = 0;
    for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, start)) {
      yield buf.subarray(start, i);
      start = i + 1;
    }
    rest = buf.subarray(start);
  }
  if (rest.length > 0) yield rest;
}

/**
 * Payloads of an NDJSON source, each the text of its line (with `envelope`,
 * JobSpecs: {"payload", "timeout"?} per line, the payload the text of its
 * member); a line that is not UTF-8, not JSON, or not storable throws with its
 * number (which aborts the COPY). Blank lines are skipped; a "\r" before the
 * "\n" is not part of the line.
 */
async function* ndjson(input: NodeJS.ReadableStream, name: string, envelope = false, keyed = false): AsyncGenerator<JsonText | JobSpec> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let n = 0;
  for await (const bytes of byteLines(input)) {
    n++;
    let line: string;
    try {
      line = decoder.decode(bytes);
    } catch {
      throw badInput(`${name} line ${n} is not valid UTF-8; save the file as UTF-8, nothing was enqueued`);
    }
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() === '') continue;
    const text = JsonText.parse(line, `${name} line ${n}`);
    if (!envelope) {
      yield text;
      continue;
    }
    const value: unknown = JSON.parse(text.text);
    const keys = value && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value) : null;
    if (!keys || !keys.includes('payload') || keys.some((k) => k !== 'payload' && k !== 'timeout' && k !== 'key')) {
      throw badInput(`${name} line ${n} is not {"payload": ..., "timeout": seconds, "key": "K"} (--envelope); nothing was enqueued`);
    }
    const payload = JsonText.trusted(objectMembers(text.text).get('payload')!);
    const { timeout, key } = value as { timeout?: unknown; key?: unknown };
    if (key !== undefined && !keyed) throw badInput(`${name} line ${n} has a key: give --key-mode skip or replace; nothing was enqueued`);
    if (key !== undefined && typeof key !== 'string') throw badInput(`${name} line ${n}: key must be a string; nothing was enqueued`);
    const spec: JobSpec = { payload };
    if (timeout !== undefined) spec.timeout = timeout as number;
    if (key !== undefined) spec.key = key;
    yield spec;
  }
}

async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const chunk of createReadStream(file)) {
    for (const byte of chunk as Buffer) if (byte === 10) n++;
  }
  return n;
}

async function enqueueFile(ctx: Context, argv: Args, opts: EnqueueOptions): Promise<void> {
  const file = argv.file!;
  const stdin = file === '-';
  if (!stdin && (!existsSync(file) || !statSync(file).isFile()))
    throw badInput(`--file ${file} does not exist or is not a file; give an NDJSON file or - for stdin`);
  const name = stdin ? 'stdin' : file;
  const source = () => (stdin ? ctx.stdin : createReadStream(file));
  if (argv.dryRun) {
    let count = 0;
    for await (const payload of ndjson(source(), name, argv.envelope, opts.keyMode !== undefined)) {
      void payload;
      count++;
    }
    const step =
      opts.keyMode === undefined
        ? {
            seq: 1,
            action: 'enqueue',
            statement: `COPY qmaint.jobs (queue, payload${opts.timeout !== undefined || argv.envelope ? ', timeout_ms' : ''}) FROM STDIN`,
            lockLevel: 'ROW EXCLUSIVE on qmaint.jobs',
            reason: `${count} jobs on queue ${argv.queue}, in one transaction`,
          }
        : {
            seq: 1,
            action: 'enqueue',
            statement: `COPY pg_temp.qmaint_enqueue_stage (n, key, payload, timeout_ms) FROM STDIN; INSERT INTO qmaint.jobs ... (keyless lines); SELECT ... FROM qmaint.enqueue_keyed(...) (keyed lines, mode ${opts.keyMode})`,
            lockLevel: 'ROW EXCLUSIVE on qmaint.jobs and qmaint.job_keys',
            reason: `${count} jobs on queue ${argv.queue}, in one transaction; a key held by a live job: ${opts.keyMode}`,
          };
    ctx.out.emit({ ok: true, dryRun: true, valid: count, steps: [step] }, () => ctx.out.plan([step]));
    return;
  }
  const db = await ctx.migratedDb({ max: 2 });
  const total = stdin ? 0 : await countLines(file);
  const bar = stdin ? null : ctx.out.progress(total, 'enqueue');
  let shown = 0;
  let keys: Record<KeyOutcome, number> | null = null;
  const count = await enqueueMany(db, argv.queue, ndjson(source(), name, argv.envelope, opts.keyMode !== undefined), {
    ...opts,
    specs: argv.envelope,
    onKeys: (counts) => {
      keys = counts;
    },
    onProgress: (sent) => {
      bar?.tick(sent - shown);
      shown = sent;
    },
  }).catch(refusedPayload);
  bar?.finish();
  const k = keys as Record<KeyOutcome, number> | null;
  ctx.out.emit({ ok: true, queue: argv.queue, enqueued: count, ...(k ? { keys: k } : {}) }, () =>
    ctx.out.ok(`enqueued ${count} jobs on queue ${argv.queue}` + (k ? ` (keyed: ${k.inserted} inserted, ${k.replaced} replaced, ${k.skipped} skipped)` : '')),
  );
}

export default register;
