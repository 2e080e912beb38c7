import { cancelJobs, checkIds, checkLimit, checkStatus, listJobs, planJobAction, retryJobs } from '../../queue/admin.js';
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
            .option('limit', { type: 'number', default: 50, description: 'at most this many' }),
        handler<{ queue?: string; status?: string; id?: string[]; limit: number }>(async (ctx, argv) => {
          const filter = {
            queue: argv.queue === undefined ? undefined : checkQueueName(argv.queue),
            status: checkStatus(argv.status),
            ids: checkIds(argv.id),
            limit: checkLimit(argv.limit),
          };
          const db = await ctx.migratedReadDb({ max: 2 });
          const jobs = await listJobs(db, filter, { payloadAs: 'text' });
          const out = ctx.out;
          out.emit({ ok: true, jobs }, () => {
            if (jobs.length === 0) return out.line('no jobs match');
            out.table(
              [
                { key: 'id', header: 'id', align: 'right' },
                { key: 'queue', header: 'queue' },
                { key: 'status', header: 'status' },
                { key: 'priority', header: 'prio', align: 'right' },
                { key: 'tries', header: 'retries', align: 'right' },
                { key: 'runAt', header: 'run at (UTC)' },
                { key: 'lastError', header: 'last error', format: (_v, r) => (r.lastError ? r.lastError.split('\n')[0]!.slice(0, 60) : '') },
              ],
              jobs.map((j) => ({ ...j, tries: `${j.retryCount}/${j.maxRetries}` })),
            );
          });
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
