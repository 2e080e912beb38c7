import type { Argv } from 'yargs';
import { parseQualifiedName, type Db } from '../../db.js';
import { badInput } from '../../errors.js';
import {
  applyPolicies,
  compact,
  createUntil,
  detach,
  drop,
  listPartitions,
  planRotate,
  policyPaths,
  rotate,
  summarize,
  type MaintainOptions,
  type PartitionInfo,
  type Preview,
  type RunResult,
} from '../../partitions/index.js';
import { bytes, timestamp } from '../format.js';
import { handler, parseTimestamp, type Context } from '../context.js';
import type { Register } from '../register.js';

interface CommonArgs {
  table?: string;
  dryRun?: boolean;
  lockTimeout?: string;
  lockRetries?: number;
}

const maintenanceOptions = <T>(b: Argv<T>) =>
  b
    .option('table', { type: 'string', description: 'only this managed table (schema.table); default: every table with a policy' })
    .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL with its lock level; change nothing' })
    .option('lock-timeout', { type: 'string', description: "lock_timeout of every statement (default: the policy's lockTimeout)" })
    .option('lock-retries', { type: 'number', description: 'retries of a statement that hit lock_timeout (default: the lockRetries setting)' });

function options(ctx: Context, argv: CommonArgs): MaintainOptions & { dryRun: boolean } {
  if (argv.table !== undefined) parseQualifiedName(argv.table, '--table');
  const loaded = ctx.settings({ lockTimeout: argv.lockTimeout, lockRetries: argv.lockRetries });
  return {
    now: ctx.now,
    table: argv.table,
    dryRun: !!argv.dryRun,
    // The policy's lockTimeout applies unless a flag, env or config file says otherwise.
    lockTimeout: loaded.origin.lockTimeout === 'default' ? undefined : loaded.values.lockTimeout,
    // Left at its default, the retries are qmaint.lock_retries(), the server-side executor's number.
    retries: loaded.origin.lockRetries === 'default' ? undefined : loaded.values.lockRetries,
    onEvent: ctx.out.stepPrinter(),
  };
}

function printPreview(ctx: Context, preview: Preview, what: string): void {
  const out = ctx.out;
  out.emit({ ok: true, dryRun: true, pooled: preview.pooled, tables: preview.tables }, () => {
    if (preview.pooled) out.line(out.dim('-- through a transaction pooler: one transaction, plain DETACH (see docs/partitions.md)'));
    for (const t of preview.tables) {
      out.heading(`-- ${what}${t.table ? ` for ${t.table}` : ''}`);
      out.plan(t.steps);
    }
  });
}

function printResult(ctx: Context, result: RunResult | Preview, what: string): number {
  if (!('ran' in result)) {
    printPreview(ctx, result, what);
    return 0;
  }
  const out = ctx.out;
  if (!result.ran) {
    out.emit({ ok: true, skipped: true, pooled: result.pooled, message: result.message, holder: result.holder }, () => out.warn(result.message));
    return 0;
  }
  out.emit({ ok: true, skipped: false, pooled: result.pooled, summary: summarize(result), tables: result.tables }, () => out.line(summarize(result)));
  return 0;
}

function stateLabel(p: PartitionInfo): string {
  const base = p.state === 'warm' ? 'past, live jobs' : p.state;
  const marks = [p.expired ? 'expired' : '', p.detachPending ? 'detach pending' : '', p.retiring ? 'retiring' : ''].filter(Boolean);
  return marks.length > 0 ? `${base} (${marks.join(', ')})` : base;
}

async function db(ctx: Context): Promise<Db> {
  return ctx.migratedDb({ applicationName: 'qmaint partitions' });
}

const register: Register = (y) => {
  y.command('partitions', 'partition policies, runway, retention by DETACH/DROP', (p) =>
    p
      .command(
        'apply [files..]',
        'validate policy files and write them into qmaint.partition_policy (default: partitions/*.json)',
        (b) =>
          b
            .positional('files', { type: 'string', array: true, description: 'policy files to apply (default: every partitions/*.json)' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL; change nothing' }),
        handler<{ files?: string[]; dryRun: boolean }>(async (ctx, argv) => {
          const paths = policyPaths(argv.files ?? []);
          const result = await applyPolicies(await db(ctx), paths, { dryRun: argv.dryRun });
          const out = ctx.out;
          out.emit({ ok: true, ...result }, () => {
            if (argv.dryRun) out.plan(result.statements.map((s, i) => ({ seq: i + 1, action: 'apply', ...s })));
            else for (const a of result.applied) out.ok(`${a.created ? 'created' : 'updated'} the policy of ${a.table} from ${a.file}`);
          });
        }),
      )
      .command(
        'list',
        'every partition: bounds, state, estimated rows, live jobs, size, autovacuum profile',
        (b) => b.option('table', { type: 'string', description: 'only this managed table' }),
        handler<{ table?: string }>(async (ctx, argv) => {
          const tables = await listPartitions(await ctx.migratedReadDb({ applicationName: 'qmaint partitions' }), { now: ctx.now, table: argv.table });
          const out = ctx.out;
          out.emit({ ok: true, now: ctx.now.toISOString(), tables }, () => {
            for (const t of tables) {
              out.heading(
                `${t.table}: interval ${t.interval}, retention ${t.retention}, runway ${t.runway}/${t.runwayTarget} ahead, low water ${t.lowWater ?? 'none'}`,
              );
              out.table<PartitionInfo>(
                [
                  { key: 'name', header: 'partition' },
                  { key: 'from', header: 'from (UTC)', wrap: true, format: (v, r) => (r.isDefault ? 'DEFAULT' : timestamp(v as string)) },
                  { key: 'to', header: 'to', wrap: true, priority: 2, format: (v) => timestamp(v as string | null) },
                  { key: 'state', header: 'state', wrap: true, format: (_v, r) => stateLabel(r) },
                  { key: 'estimatedRows', header: 'est. rows', align: 'right', priority: 4 },
                  { key: 'liveJobs', header: 'live jobs', align: 'right' },
                  { key: 'bytes', header: 'size', align: 'right', priority: 1, format: (v, r) => (r.bytesEstimated ? '~' : '') + bytes(Number(v)) },
                  { key: 'profile', header: 'profile', priority: 3 },
                ],
                t.partitions,
              );
              if (t.partitions.some((p) => p.bytesEstimated))
                out.line(out.dim('~ size from the catalog as of the last VACUUM or ANALYZE (drained partitions below the low-water mark)'));
            }
          });
        }),
      )
      .command(
        'plan',
        'the ordered DDL rotate would run, each statement with its lock level and reason',
        (b) => b.option('table', { type: 'string', description: 'only this managed table' }),
        handler<{ table?: string }>(async (ctx, argv) => {
          printPreview(ctx, await planRotate(await db(ctx), { now: ctx.now, table: argv.table }), 'rotate plan');
        }),
      )
      .command(
        'rotate',
        'make the runway, retire expired drained partitions, advance the low-water mark',
        (b) => maintenanceOptions(b),
        handler<CommonArgs>(async (ctx, argv) => {
          const opts = options(ctx, argv);
          const d = await db(ctx);
          if (opts.dryRun) return printResult(ctx, await planRotate(d, opts), 'rotate plan');
          return printResult(ctx, await rotate(d, opts), 'rotate');
        }),
      )
      .command(
        'create',
        'create the partitions from the one holding now through the one holding --until',
        (b) =>
          maintenanceOptions(b)
            .option('until', { type: 'string', demandOption: true, description: 'ISO timestamp the partitions must reach' })
            .option('max', { type: 'number', default: 1000, description: 'refuse to create more partitions than this' }),
        handler<CommonArgs & { until: string; max: number }>(async (ctx, argv) => {
          const until = parseTimestamp(argv.until, '--until');
          if (!Number.isInteger(argv.max) || argv.max < 1) throw badInput(`--max must be a whole number of at least 1, got ${argv.max}`);
          const opts = { ...options(ctx, argv), until, max: argv.max };
          return printResult(ctx, await createUntil(await db(ctx), opts), 'create');
        }),
      )
      .command(
        'detach <name>',
        'detach one past partition with no queued or running job and keep it as a table',
        (b) => maintenanceOptions(b).positional('name', { type: 'string', demandOption: true, description: 'schema.partition' }),
        handler<CommonArgs & { name: string }>(async (ctx, argv) => {
          parseQualifiedName(argv.name, 'partition');
          const opts = options(ctx, argv);
          return printResult(ctx, await detach(await db(ctx), argv.name, opts), 'detach');
        }),
      )
      .command(
        'drop <name>',
        'detach and drop one past partition with no queued or running job (or drop a table qmaint detached)',
        (b) => maintenanceOptions(b).positional('name', { type: 'string', demandOption: true, description: 'schema.partition' }),
        handler<CommonArgs & { name: string }>(async (ctx, argv) => {
          parseQualifiedName(argv.name, 'partition');
          const opts = options(ctx, argv);
          return printResult(ctx, await drop(await db(ctx), argv.name, opts), 'drop');
        }),
      )
      .command(
        'compact',
        'move queued jobs out of expired partitions, so retention can retire them',
        (b) => maintenanceOptions(b),
        handler<CommonArgs>(async (ctx, argv) => {
          const opts = options(ctx, argv);
          return printResult(ctx, await compact(await db(ctx), opts), 'compact');
        }),
      )
      .demandCommand(1, 'name a partitions command: apply, list, plan, rotate, create, detach, drop or compact'),
  );
};

export default register;
