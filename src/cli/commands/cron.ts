import { JsonText } from '../../json.js';
import { cronAdd, cronAddStatement, cronList, cronRemove, checkCronName, parseMissed, refillTicks, type CronDefinition } from '../../cron/index.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

interface AddArgs {
  name: string;
  schedule: string;
  queue: string;
  payload?: string;
  tz: string;
  priority?: number;
  maxRetries?: number;
  missed: string;
  dryRun: boolean;
}

const register: Register = (y) => {
  y.command('cron', 'recurring jobs: add, list, remove, refill (enqueued by the recurring task of schedule daemon or pg_cron)', (b) =>
    b
      .command(
        'add <name>',
        'add or replace a recurring job',
        (c) =>
          c
            .positional('name', { type: 'string', demandOption: true, description: "the recurring job's name (letters, digits, . _ -)" })
            .option('schedule', {
              type: 'string',
              demandOption: true,
              description: 'cron expression, 5 fields (minute hour day month weekday) or @hourly etc.',
            })
            .option('queue', { type: 'string', demandOption: true, description: 'queue the jobs go to' })
            .option('payload', { type: 'string', description: 'payload of every job, as JSON (default {})' })
            .option('tz', { type: 'string', default: 'UTC', description: 'IANA time zone the schedule is read in' })
            .option('priority', { type: 'number', description: 'priority of the jobs (default 0)' })
            .option('max-retries', { type: 'number', description: 'retries of each job (default 5)' })
            .option('missed', { type: 'string', default: 'skip', description: 'after downtime: skip missed ticks, or backfill:N (enqueue up to N of them)' })
            .option('dry-run', { type: 'boolean', default: false, description: 'check and print the SQL; change nothing' }),
        handler<AddArgs>(async (ctx, argv) => {
          const def: CronDefinition = {
            name: checkCronName(argv.name),
            schedule: argv.schedule,
            queue: argv.queue,
            payload: argv.payload === undefined ? undefined : JsonText.parse(argv.payload, '--payload'),
            tz: argv.tz,
            priority: argv.priority,
            maxRetries: argv.maxRetries,
            missed: parseMissed(argv.missed),
          };
          const st = cronAddStatement(def);
          const out = ctx.out;
          if (argv.dryRun) {
            const steps = [
              { seq: 1, action: 'cron add', statement: st.text, lockLevel: 'ROW EXCLUSIVE on qmaint.cron_schedules and qmaint.cron_ticks', reason: st.reason },
            ];
            out.emit({ ok: true, dryRun: true, values: st.values, steps }, () => out.plan(steps));
            return;
          }
          const db = await ctx.migratedDb({ max: 2 });
          const r = await db.transaction((client) => cronAdd(client, def, ctx.now));
          const next = r.next.map((d) => d.toISOString());
          out.emit({ ok: true, name: r.name, created: r.created, next }, () => {
            out.ok(`${r.created ? 'added' : 'replaced'} recurring job ${r.name}: ${st.reason.replace(/^recurring job [^:]+: /, '')}`);
            out.line(`next runs: ${next.join(', ')}`);
          });
        }),
      )
      .command(
        'list',
        'recurring jobs with their next runs and a reading of the schedule',
        (c) => c.option('next', { type: 'number', default: 3, description: 'how many next runs to show' }),
        handler<{ next: number }>(async (ctx, argv) => {
          const db = await ctx.migratedDb({ max: 2 });
          const list = await cronList(db, ctx.now, Math.max(1, Math.min(20, Math.trunc(argv.next))));
          const out = ctx.out;
          out.emit({ ok: true, cron: list }, () => {
            if (list.length === 0) return out.line('no recurring jobs (qmaint cron add NAME --schedule EXPR --queue Q)');
            out.table(
              [
                { key: 'name', header: 'name' },
                { key: 'schedule', header: 'schedule' },
                { key: 'description', header: 'reads' },
                { key: 'tz', header: 'tz' },
                { key: 'queue', header: 'queue' },
                { key: 'missed', header: 'missed' },
                { key: 'nextRuns', header: 'next runs (UTC)' },
              ],
              list.map((c) => ({ ...c, nextRuns: c.next.join(' ') })),
            );
          });
        }),
      )
      .command(
        'remove <name>',
        'remove a recurring job (jobs it enqueued stay)',
        (c) =>
          c
            .positional('name', { type: 'string', demandOption: true, description: 'the recurring job to remove' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<{ name: string; dryRun: boolean }>(async (ctx, argv) => {
          const name = checkCronName(argv.name);
          const out = ctx.out;
          if (argv.dryRun) {
            const steps = [
              {
                seq: 1,
                action: 'cron remove',
                statement: `DELETE FROM qmaint.cron_schedules WHERE name = '${name}'`,
                lockLevel: 'ROW EXCLUSIVE on qmaint.cron_schedules and qmaint.cron_ticks',
                reason: `remove recurring job ${name} and its pending ticks`,
              },
            ];
            out.emit({ ok: true, dryRun: true, steps }, () => out.plan(steps));
            return;
          }
          const db = await ctx.migratedDb({ max: 2 });
          const removed = await cronRemove(db, name);
          out.emit({ ok: true, name, removed }, () => (removed ? out.ok(`removed recurring job ${name}`) : out.warn(`no recurring job named ${name}`)));
        }),
      )
      .command(
        'refill',
        'store the ticks of every recurring job for the next days (the daemon does this on its own; with pg_cron alone, run it at least weekly)',
        (c) =>
          c.option('dry-run', { type: 'boolean', default: false, description: 'count the ticks it would store, in a transaction rolled back; store nothing' }),
        handler<{ dryRun: boolean }>(async (ctx, argv) => {
          const db = await ctx.migratedDb({ max: 2 });
          if (argv.dryRun) {
            const added = await db.withClient(async (client) => {
              await client.query('BEGIN');
              try {
                return await refillTicks(client, ctx.now);
              } finally {
                await client.query('ROLLBACK');
              }
            });
            ctx.out.emit({ ok: true, dryRun: true, added }, () => ctx.out.ok(`would store ${added} new tick(s); nothing stored (--dry-run)`));
            return;
          }
          const added = await refillTicks(db, ctx.now);
          ctx.out.emit({ ok: true, added }, () => ctx.out.ok(`stored ${added} new tick(s)`));
        }),
      )
      .demandCommand(1, 'name a cron subcommand: add, list, remove or refill'),
  );
};

export default register;
