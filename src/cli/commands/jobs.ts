import { cancelJobs, checkIds, checkLimit, checkStatus, listJobPages, planJobAction, retryJobs, type JobRow } from '../../queue/admin.js';
import { stringifyJson } from '../../json.js';
import { timestamp } from '../format.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { redriveJobs, redriveStatement } from '../../queue/queues.js';
import { handler, type Context } from '../context.js';
import type { Register } from '../register.js';

interface ActionArgs {
  ids?: (string | number)[];
  id?: (string | number)[];
  queue?: string;
  dryRun: boolean;
}

// Every jobs subcommand takes job ids the same two ways: as arguments (jobs retry 41 42) or as --id (jobs list --id 41 --id 42).
const IDS = { type: 'string', array: true, description: 'job ids (the id column of jobs list)' } as const;
const ID_OPTION = { type: 'array', string: true, description: 'a job id, the same as giving it as an argument (repeatable)' } as const;

/** Ids given as arguments and as --id, together (undefined when none). */
function idsOf(argv: { ids?: (string | number)[]; id?: (string | number)[] }): (string | number)[] | undefined {
  const all = [...(argv.ids ?? []), ...(argv.id ?? [])];
  return all.length > 0 ? all : undefined;
}

async function act(ctx: Context, action: 'retry' | 'cancel', argv: ActionArgs): Promise<void> {
  const sel = { ids: checkIds(idsOf(argv)), queue: argv.queue === undefined ? undefined : checkQueueName(argv.queue) };
  const db = await ctx.migratedDb({ max: 2 });
  const out = ctx.out;
  if (argv.dryRun) {
    const plan = await planJobAction(db, action, sel, ctx.now);
    const now = action === 'retry' ? `${plan.matching} match now` : `${plan.queued} queued and ${plan.running} running match now`;
    const step = { seq: 1, action, statement: plan.statement, lockLevel: plan.lockLevel, reason: `${plan.reason}: ${now}` };
    const counts = action === 'cancel' ? { queued: plan.queued, running: plan.running } : {};
    out.emit({ ok: true, dryRun: true, matching: plan.matching, ...counts, steps: [step] }, () => out.plan([step]));
    return;
  }
  const list = (ids: string[]) => `${ids.slice(0, 20).join(', ')}${ids.length > 20 ? ', ...' : ''}`;
  if (action === 'retry') {
    const ids = await retryJobs(db, sel, ctx.now);
    out.emit({ ok: true, action, count: ids.length, ids }, () =>
      ids.length === 0 ? out.warn('no job matched (only failed jobs can be retried)') : out.ok(`${ids.length} job(s) put back in the queue: ${list(ids)}`),
    );
    return;
  }
  const report = await cancelJobs(db, sel, ctx.now);
  const { ids, queued, running } = report;
  out.emit({ ok: true, action, count: ids.length, ids, queued, running: running.length, runningIds: running }, () =>
    ids.length === 0
      ? out.warn('no job matched (only queued and running jobs can be cancelled)')
      : out.ok(
          `${ids.length} job(s) cancelled (${queued} queued, ${running.length} running${running.length > 0 ? ': their consumers were told to abort them' : ''}): ${list(ids)}`,
        ),
  );
}

/** Job rows a table shows at most: rendering is what costs at 100000 rows. */
const TABLE_ROWS = 1000;

/**
 * --json: one document, written as the pages arrive ({"ok", "jobs", "next"}: next is the
 * --after of the following page, null when this was the last); --json-lines: one job per line.
 */
async function streamJobs(ctx: Context, filter: Parameters<typeof listJobPages>[1] & { limit: number }, lines: boolean): Promise<void> {
  const db = await ctx.migratedReadDb({ max: 2 });
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
        'list [ids..]',
        'list jobs, newest first',
        (c) =>
          c
            .positional('ids', { ...IDS, description: 'only these job ids' })
            .option('queue', { type: 'string', description: 'only this queue' })
            .option('status', { type: 'string', description: 'queued, running, completed, failed or cancelled' })
            .option('id', ID_OPTION)
            .option('limit', { type: 'number', default: 50, description: `at most this many (tables show at most ${TABLE_ROWS})` })
            .option('after', { type: 'string', description: 'the page after this job id (the last id of the previous page)' })
            .option('json-lines', { type: 'boolean', default: false, description: 'one job per line (NDJSON), streamed' }),
        handler<{ queue?: string; status?: string; ids?: string[]; id?: string[]; limit: number; after?: string; jsonLines: boolean }>(async (ctx, argv) => {
          const filter = {
            queue: argv.queue === undefined ? undefined : checkQueueName(argv.queue),
            status: checkStatus(argv.status),
            ids: checkIds(idsOf(argv)),
            limit: checkLimit(argv.limit),
            after: argv.after === undefined ? undefined : checkIds([argv.after])![0],
          };
          const db = await ctx.migratedReadDb({ max: 2 });
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
            .positional('ids', { ...IDS, description: 'failed jobs to retry' })
            .option('id', ID_OPTION)
            .option('queue', { type: 'string', description: 'only jobs of this queue; alone: every failed job of it' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL and how many jobs match; change nothing' }),
        handler<ActionArgs>((ctx, argv) => act(ctx, 'retry', argv)),
      )
      .command(
        'cancel [ids..]',
        'cancel queued and running jobs (they end cancelled) by id, or all of them in --queue',
        (c) =>
          c
            .positional('ids', { ...IDS, description: 'queued or running jobs to cancel' })
            .option('id', ID_OPTION)
            .option('queue', { type: 'string', description: 'only jobs of this queue; alone: every queued and running job of it' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL and how many jobs match; change nothing' }),
        handler<ActionArgs>((ctx, argv) => act(ctx, 'cancel', argv)),
      )
      .command(
        'redrive [ids..]',
        'put the failed jobs of a dead-letter queue back in a queue (all of them, or these ids)',
        (c) =>
          c
            .positional('ids', { type: 'string', array: true, description: 'only these job ids of the dead-letter queue' })
            .option('from', { type: 'string', demandOption: true, description: 'the dead-letter queue' })
            .option('to', { type: 'string', description: 'the queue they go back to (default: the one queue whose dead-letter queue --from is)' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<{ ids?: string[]; from: string; to?: string; dryRun: boolean }>(async (ctx, argv) => {
          const sel = { from: argv.from, to: argv.to, ids: checkIds(argv.ids) };
          const st = redriveStatement(sel, ctx.now);
          const out = ctx.out;
          if (argv.dryRun) {
            const steps = [{ seq: 1, action: 'redrive', statement: st.literal, lockLevel: st.lockLevel, reason: st.reason }];
            out.emit({ ok: true, dryRun: true, steps }, () => out.plan(steps));
            return;
          }
          const db = await ctx.migratedDb({ max: 2 });
          const ids = await redriveJobs(db, sel, ctx.now);
          out.emit({ ok: true, action: 'redrive', from: argv.from, count: ids.length, ids }, () =>
            ids.length === 0
              ? out.warn(`no failed job of ${argv.from} was put back`)
              : out.ok(`${ids.length} job(s) put back: ${ids.slice(0, 20).join(', ')}${ids.length > 20 ? ', ...' : ''}`),
          );
        }),
      )
      .demandCommand(1, 'name a jobs subcommand: list, retry, cancel or redrive'),
  );
};

export default register;
