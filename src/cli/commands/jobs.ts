import { cancelJobs, checkIds, checkLimit, checkStatus, listJobPages, planJobAction, retryJobs, type JobRow } from '../../queue/admin.js';
import { stringifyJson } from '../../json.js';
import { timestamp } from '../format.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { handler, type Context } from '../context.js';
import type { Register } from '../register.js';

interface ActionArgs {
  ids?: (string | number)[];
  queue?: string;
  dryRun: boolean;
}

async function act(ctx: Context, action: 'retry' | 'cancel', argv: ActionArgs): Promise<void> {
  const sel = { ids: checkIds(argv.ids), queue: argv.queue === undefined ? undefined : checkQueueName(argv.queue) };
  const db = await ctx.migratedDb({ max: 2 });
  const out = ctx.out;
  if (argv.dryRun) {
    const plan = await planJobAction(db, action, sel, ctx.now);
    const step = { seq: 1, action, statement: plan.statement, lockLevel: plan.lockLevel, reason: `${plan.reason}: ${plan.matching} match now` };
    out.emit({ ok: true, dryRun: true, matching: plan.matching, steps: [step] }, () => out.plan([step]));
    return;
  }
  const ids = action === 'retry' ? await retryJobs(db, sel, ctx.now) : await cancelJobs(db, sel, ctx.now);
  const verb = action === 'retry' ? 'put back in the queue' : 'cancelled';
  out.emit({ ok: true, action, count: ids.length, ids }, () =>
    ids.length === 0
      ? out.warn(`no job matched (${action === 'retry' ? 'only failed jobs can be retried' : 'only queued jobs can be cancelled'})`)
      : out.ok(`${ids.length} job(s) ${verb}: ${ids.slice(0, 20).join(', ')}${ids.length > 20 ? ', ...' : ''}`),
  );
}

/** Job rows a table shows at most: rendering is what costs at 100000 rows. */
const TABLE_ROWS = 1000;

/**
 * --json: one document, written as the pages arrive ({"ok", "jobs", "next"}: next is the
 * --after of the following page, null when this was the last); --json-lines: one job per line.
 */
async function streamJobs(ctx: Context, filter: Parameters<typeof listJobPages>[1] & { limit: number }, lines: boolean): Promise<void> {
  const db = await ctx.migratedDb({ max: 2 });
  const write = (text: string) => ctx.out.raw(text);
  let count = 0;
  let last: string | null = null;
  if (!lines) write('{\n  "ok": true,\n  "jobs": [');
  for await (const page of listJobPages(db, filter, { payloadAs: 'text' })) {
    for (const job of page) {
      write(lines ? stringifyJson(job) + '\n' : `${count === 0 ? '' : ','}\n    ${stringifyJson(job, 2).replace(/\n/g, '\n    ')}`);
      count++;
      last = job.id;
    }
  }
  if (!lines) write(`${count === 0 ? '' : '\n  '}],\n  "next": ${count === filter.limit ? JSON.stringify(last) : 'null'}\n}\n`);
}

const register: Register = (y) => {
  y.command('jobs', 'list, retry and cancel jobs', (b) =>
    b
      .command(
        'list',
        'list jobs, newest first',
        (c) =>
          c
            .option('queue', { type: 'string', description: 'only this queue' })
            .option('status', { type: 'string', description: 'queued, running, completed or failed' })
            .option('id', { type: 'array', string: true, description: 'only these job ids' })
            .option('limit', { type: 'number', default: 50, description: `at most this many (tables show at most ${TABLE_ROWS})` })
            .option('after', { type: 'string', description: 'the page after this job id (the last id of the previous page)' })
            .option('json-lines', { type: 'boolean', default: false, description: 'one job per line (NDJSON), streamed' }),
        handler<{ queue?: string; status?: string; id?: string[]; limit: number; after?: string; jsonLines: boolean }>(async (ctx, argv) => {
          const filter = {
            queue: argv.queue === undefined ? undefined : checkQueueName(argv.queue),
            status: checkStatus(argv.status),
            ids: checkIds(argv.id),
            limit: checkLimit(argv.limit),
            after: argv.after === undefined ? undefined : checkIds([argv.after])![0],
          };
          const db = await ctx.migratedDb({ max: 2 });
          const out = ctx.out;
          if (argv.jsonLines || out.json) return streamJobs(ctx, filter, argv.jsonLines);
          const shown = Math.min(filter.limit, TABLE_ROWS);
          const jobs: JobRow[] = [];
          for await (const page of listJobPages(db, { ...filter, limit: shown }, { payloadAs: 'text' })) jobs.push(...page);
          if (jobs.length === 0) return out.line('no jobs match');
          out.table(
            [
              { key: 'id', header: 'id', align: 'right' },
              { key: 'queue', header: 'queue' },
              { key: 'status', header: 'status' },
              { key: 'priority', header: 'prio', align: 'right', priority: 2 },
              { key: 'tries', header: 'retries', align: 'right', priority: 3 },
              { key: 'runAt', header: 'run at (UTC)', wrap: true, format: (v) => timestamp(v as string) },
              {
                key: 'lastError',
                header: 'last error',
                wrap: true,
                priority: 1,
                format: (_v, r) => (r.lastError ? r.lastError.split('\n')[0]!.slice(0, 120) : ''),
              },
            ],
            jobs.map((j) => ({ ...j, tries: `${j.retryCount}/${j.maxRetries}` })),
          );
          if (jobs.length === shown) {
            const cut = filter.limit > TABLE_ROWS ? `tables stop at ${TABLE_ROWS} rows; use --json or --json-lines (streamed) for bulk output. ` : '';
            out.line(out.dim(out.wrap(`${cut}Next page: --after ${jobs[jobs.length - 1]!.id}`)));
          }
        }),
      )
      .command(
        'retry [ids..]',
        'put failed jobs back in the queue (by id, or all failed jobs of --queue)',
        (c) =>
          c
            .positional('ids', { type: 'string', array: true })
            .option('queue', { type: 'string' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL and how many jobs match; change nothing' }),
        handler<ActionArgs>((ctx, argv) => act(ctx, 'retry', argv)),
      )
      .command(
        'cancel [ids..]',
        'cancel queued jobs (they end failed) by id, or all queued jobs of --queue',
        (c) =>
          c
            .positional('ids', { type: 'string', array: true })
            .option('queue', { type: 'string' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL and how many jobs match; change nothing' }),
        handler<ActionArgs>((ctx, argv) => act(ctx, 'cancel', argv)),
      )
      .demandCommand(1, 'name a jobs subcommand: list, retry or cancel'),
  );
};

export default register;
