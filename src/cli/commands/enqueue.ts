import { createReadStream, existsSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { badInput } from '../../errors.js';
import { checkQueueName, enqueue, enqueueMany, type EnqueueOptions, type JobSpec } from '../../queue/enqueue.js';
import { handler, type Context } from '../context.js';
import type { Register } from '../register.js';

interface Args {
  queue: string;
  payload?: string;
  file?: string;
  runAt?: string;
  priority?: number;
  maxRetries?: number;
  timeout?: number;
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
        .option('timeout', { type: 'number', description: 'seconds one attempt may run before its signal aborts and it fails (default: the consumer\'s, 900)' })
        .option('envelope', { type: 'boolean', default: false, description: 'with --file: each line is {"payload": ..., "timeout": S} (timeout optional, overrides --timeout)' })
        .option('dry-run', { type: 'boolean', default: false, description: 'check the input and print the SQL; enqueue nothing' })
        .conflicts('payload', 'file'),
    handler<Args>(async (ctx, argv) => {
      checkQueueName(argv.queue);
      const opts = options(ctx, argv);
      if (argv.file !== undefined) return enqueueFile(ctx, argv, opts);
      if (argv.envelope) throw badInput('--envelope describes the lines of --file; give --file F');
      if (argv.payload === undefined) throw badInput('give the job with --payload JSON, or many jobs with --file F (NDJSON, - for stdin)');
      const payload = parseJson(argv.payload, '--payload');
      if (argv.dryRun) {
        const lit = pg.escapeLiteral;
        const sql = `SELECT qmaint.enqueue(${lit(argv.queue)}, ${lit(JSON.stringify(payload))}::jsonb, ${opts.runAt ? lit(opts.runAt.toISOString()) : 'NULL'}, ${opts.priority ?? 0}, ${opts.maxRetries ?? 5}, ${opts.createdAt ? lit(opts.createdAt.toISOString()) : 'NULL'})`;
        const steps = [{ seq: 1, action: 'enqueue', statement: sql, lockLevel: 'ROW EXCLUSIVE on qmaint.jobs', reason: `one job on queue ${argv.queue}` }];
        if (opts.timeout !== undefined) {
          steps.push({ seq: 2, action: 'set timeout', statement: `UPDATE qmaint.jobs SET timeout_ms = ${Math.round(opts.timeout * 1000)} WHERE id = <the id above>`, lockLevel: 'ROW EXCLUSIVE on qmaint.jobs', reason: 'same transaction as the enqueue' });
        }
        ctx.out.emit({ ok: true, dryRun: true, steps }, () => ctx.out.plan(steps));
        return;
      }
      const db = await ctx.migratedDb({ max: 2 });
      const id = await enqueue(db, argv.queue, payload, opts);
      ctx.out.emit({ ok: true, queue: argv.queue, enqueued: 1, id }, () => ctx.out.ok(`enqueued job ${id} on queue ${argv.queue}`));
    }),
  );
};

function options(ctx: Context, argv: Args): EnqueueOptions {
  const opts: EnqueueOptions = {};
  if (argv.runAt !== undefined) {
    const d = /^\d{4}-\d{2}-\d{2}/.test(argv.runAt) ? new Date(argv.runAt) : new Date(NaN);
    if (Number.isNaN(d.getTime())) throw badInput(`--run-at ${JSON.stringify(argv.runAt)} is not an ISO timestamp; use e.g. 2026-01-31T12:00:00Z`);
    opts.runAt = d;
  }
  if (argv.priority !== undefined) opts.priority = argv.priority;
  if (argv.maxRetries !== undefined) opts.maxRetries = argv.maxRetries;
  if (argv.timeout !== undefined) opts.timeout = argv.timeout;
  // --now: the job is created "then" (it lands in that time's partition).
  if (ctx.nowGiven) opts.createdAt = ctx.now;
  return opts;
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badInput(`${where} is not valid JSON (${(err as Error).message}); nothing was enqueued`);
  }
}

/**
 * Payloads of an NDJSON source (with `envelope`, JobSpecs: {"payload", "timeout"?}
 * per line); a malformed line throws (which aborts the COPY). Blank lines are skipped.
 */
async function* ndjson(input: NodeJS.ReadableStream, name: string, envelope = false): AsyncGenerator<unknown> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    const value = parseJson(line, `${name} line ${n}`);
    if (!envelope) {
      yield value;
      continue;
    }
    const keys = value && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value) : null;
    if (!keys || !keys.includes('payload') || keys.some((k) => k !== 'payload' && k !== 'timeout')) {
      throw badInput(`${name} line ${n} is not {"payload": ..., "timeout": seconds} (--envelope); nothing was enqueued`);
    }
    const spec = value as JobSpec;
    yield spec.timeout === undefined ? { payload: spec.payload } : { payload: spec.payload, timeout: spec.timeout };
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
  if (!stdin && (!existsSync(file) || !statSync(file).isFile())) throw badInput(`--file ${file} does not exist or is not a file; give an NDJSON file or - for stdin`);
  const name = stdin ? 'stdin' : file;
  const source = () => (stdin ? ctx.stdin : createReadStream(file));
  if (argv.dryRun) {
    let count = 0;
    for await (const payload of ndjson(source(), name, argv.envelope)) {
      void payload;
      count++;
    }
    const step = { seq: 1, action: 'enqueue', statement: `COPY qmaint.jobs (queue, payload${opts.timeout !== undefined || argv.envelope ? ', timeout_ms' : ''}) FROM STDIN`, lockLevel: 'ROW EXCLUSIVE on qmaint.jobs', reason: `${count} jobs on queue ${argv.queue}, in one transaction` };
    ctx.out.emit({ ok: true, dryRun: true, valid: count, steps: [step] }, () => ctx.out.plan([step]));
    return;
  }
  const db = await ctx.migratedDb({ max: 2 });
  const total = stdin ? 0 : await countLines(file);
  const bar = stdin ? null : ctx.out.progress(total, 'enqueue');
  let shown = 0;
  const count = await enqueueMany(db, argv.queue, ndjson(source(), name, argv.envelope), {
    ...opts,
    specs: argv.envelope,
    onProgress: (sent) => {
      bar?.tick(sent - shown);
      shown = sent;
    },
  });
  bar?.finish();
  ctx.out.emit({ ok: true, queue: argv.queue, enqueued: count }, () => ctx.out.ok(`enqueued ${count} jobs on queue ${argv.queue}`));
}

export default register;
