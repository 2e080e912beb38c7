import { checkQueueName } from '../../queue/enqueue.js';
import { deadLetterStatement, listQueues, pauseQueue, pauseStatement, resumeQueue, setDeadLetter } from '../../queue/queues.js';
import { badInput } from '../../errors.js';
import { handler, type Context } from '../context.js';
import type { Register } from '../register.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';

interface PauseArgs {
  queue: string;
  dryRun: boolean;
}

async function pauseOrResume(ctx: Context, argv: PauseArgs, paused: boolean): Promise<void> {
  const st = pauseStatement(checkQueueName(argv.queue), paused);
  const out = ctx.out;
  if (argv.dryRun) {
    const steps = [{ seq: 1, action: paused ? 'pause' : 'resume', statement: st.literal, lockLevel: st.lockLevel, reason: st.reason }];
    out.emit({ ok: true, dryRun: true, steps }, () => out.plan(steps));
    return;
  }
  const db = await ctx.migratedDb({ max: 2 });
  const r = paused ? await pauseQueue(db, argv.queue) : await resumeQueue(db, argv.queue);
  out.emit({ ok: true, ...r }, () =>
    r.changed
      ? out.ok(`queue ${r.queue} ${paused ? 'paused: nothing is claimed from it' : 'resumed'}`)
      : out.warn(`queue ${r.queue} was already ${paused ? 'paused' : 'running'}`),
  );
}

/** The window of `queues list`'s completion rate: whole seconds, 1 s to a day. */
const WINDOW: DurationFlag = { flag: 'window', min: 1000, max: 86_400_000, step: 1000 };

const register: Register = (y) => {
  y.command('queues', 'list queues; pause, resume; dead-letter queues', (b) =>
    b
      .command(
        'list',
        'every queue: paused or not, dead-letter queue, depth (queued, ready, running) and completions per minute',
        (c) => c.options(durationOptions(WINDOW, 'how far back completions per minute are measured (default 5m)')),
        handler<{ window?: string }>(async (ctx, argv) => {
          const windowMs = readDuration(ctx.out, WINDOW, argv.window) ?? 300_000;
          const db = await ctx.migratedDb({ max: 2 });
          const queues = await listQueues(db, ctx.now, windowMs / 1000);
          const out = ctx.out;
          out.emit({ ok: true, queues }, () => {
            if (queues.length === 0) return out.line('no queues yet');
            out.table(
              [
                { key: 'queue', header: 'queue' },
                { key: 'state', header: 'state', format: (v) => (v === 'paused' ? out.c.yellow(String(v)) : String(v)) },
                { key: 'ready', header: 'ready', align: 'right' },
                { key: 'queued', header: 'queued', align: 'right' },
                { key: 'running', header: 'running', align: 'right' },
                { key: 'completedPerMinute', header: 'done/min', align: 'right' },
                { key: 'deadLetter', header: 'dead letter', format: (v) => (v === null ? '' : String(v)) },
              ],
              queues.map((q) => ({ ...q, state: q.paused ? 'paused' : 'active' })),
            );
          });
        }),
      )
      .command(
        'pause <queue>',
        'stop consumers claiming from a queue (running jobs finish)',
        (c) =>
          c
            .positional('queue', { type: 'string', demandOption: true, description: 'the queue to pause' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<PauseArgs>((ctx, argv) => pauseOrResume(ctx, argv, true)),
      )
      .command(
        'resume <queue>',
        'let consumers claim from a paused queue again',
        (c) =>
          c
            .positional('queue', { type: 'string', demandOption: true, description: 'the paused queue' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<PauseArgs>((ctx, argv) => pauseOrResume(ctx, argv, false)),
      )
      .command(
        'dead-letter <queue>',
        'name the queue that jobs failing for good move to (--to DLQ), or stop moving them (--clear)',
        (c) =>
          c
            .positional('queue', { type: 'string', demandOption: true, description: 'the queue whose failed jobs move' })
            .option('to', { type: 'string', description: 'the dead-letter queue' })
            .option('clear', { type: 'boolean', default: false, description: 'keep failed jobs in the queue again' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<{ queue: string; to?: string; clear: boolean; dryRun: boolean }>(async (ctx, argv) => {
          if ((argv.to === undefined) === !argv.clear) throw badInput('give --to DLQ (the dead-letter queue) or --clear');
          const st = deadLetterStatement(checkQueueName(argv.queue), argv.to ?? null);
          const out = ctx.out;
          if (argv.dryRun) {
            const steps = [{ seq: 1, action: 'dead-letter', statement: st.literal, lockLevel: st.lockLevel, reason: st.reason }];
            out.emit({ ok: true, dryRun: true, steps }, () => out.plan(steps));
            return;
          }
          const db = await ctx.migratedDb({ max: 2 });
          await setDeadLetter(db, argv.queue, argv.to ?? null);
          out.emit({ ok: true, queue: argv.queue, deadLetter: argv.to ?? null }, () => out.ok(st.reason));
        }),
      )
      .demandCommand(1, 'name a queues subcommand: list, pause, resume or dead-letter'),
  );
};

export default register;
