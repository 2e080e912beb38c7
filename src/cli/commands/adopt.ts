import { adopt, type AdoptResult } from '../../adopt/index.js';
import { revertAdoption, type RevertResult } from '../../adopt/revert.js';
import { badInput } from '../../errors.js';
import { handler, type Context } from '../context.js';
import type { Register } from '../register.js';

interface AdoptArgs {
  table: string;
  column?: string;
  interval?: string;
  revert: boolean;
  statusColumn?: string;
  liveValues?: string;
  keyColumns?: string;
  touchColumn?: string;
  retention?: string;
  premake?: number;
  lockTimeout?: string;
  lockRetries?: number;
  dryRun: boolean;
}

const list = (value: string | undefined): string[] | undefined =>
  value === undefined
    ? undefined
    : value
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');

function print(ctx: Context, result: AdoptResult): number {
  const out = ctx.out;
  if (!result.dryRun && !result.ran) {
    out.emit({ ok: true, skipped: true, message: result.message, holder: result.holder }, () => out.warn(result.message));
    return 0;
  }
  const { steps, ...rest } = result;
  out.emit({ ok: true, ...rest, steps }, () => {
    const c = result.carried;
    out.heading(`-- adopt ${result.table}: first partition ${result.legacy} up to ${result.bound}, then ${result.runway.join(', ')}`);
    out.line(
      `carried over: keys ${c.keyConstraints.join('; ') || 'none'}; indexes ${c.indexes.join(', ') || 'none'}; foreign keys ${c.foreignKeys.join('; ') || 'none'}`,
    );
    out.line(`  sequences ${c.sequences.join(', ') || 'none'}; ${c.grants} grant(s); views ${c.views.join(', ') || 'none'}`);
    if (c.allTablesPublications.length > 0) out.line(`  publications FOR ALL TABLES (unchanged): ${c.allTablesPublications.join(', ')}`);
    if (result.dryRun) out.plan(steps);
    else out.ok(`adopted ${result.table} in ${result.ms} ms; its policy is recorded (partitions rotate, vacuum tune and health manage it from now on)`);
  });
  return 0;
}

function printRevert(ctx: Context, result: RevertResult): number {
  const out = ctx.out;
  if (!result.dryRun && !result.ran) {
    out.emit({ ok: true, skipped: true, message: result.message, holder: result.holder }, () => out.warn(result.message));
    return 0;
  }
  out.emit({ ok: true, ...result }, () => {
    out.heading(
      `-- revert ${result.table}: ${result.legacy} takes back its name and ${result.rowsToMerge} newer row(s); dropped: ${result.dropped.join(', ') || 'none'}`,
    );
    if (result.dryRun) out.plan(result.steps);
    else out.ok(`${result.table} is a plain table again (${result.ms} ms); its partition policy is removed`);
  });
  return 0;
}

const register: Register = (y) => {
  y.command(
    'adopt',
    'put an existing, unpartitioned job table behind time-range partitions while it is in use',
    (b) =>
      b
        .option('table', { type: 'string', demandOption: true, description: 'the table, schema.table' })
        .option('column', { type: 'string', description: 'its time column (timestamptz), the partition key (required unless --revert)' })
        .option('interval', { type: 'string', description: "width of one partition, e.g. '1 day' (required unless --revert)" })
        .option('revert', {
          type: 'boolean',
          default: false,
          description: 'undo an adoption while its first partition (the old table) still exists: it takes back its name and the newer rows',
        })
        .option('status-column', { type: 'string', description: 'the column saying whether a row is live (default: status)' })
        .option('live-values', { type: 'string', description: 'comma-separated values meaning live; the first is the waiting state (default: queued,running)' })
        .option('key-columns', {
          type: 'string',
          description: "comma-separated columns identifying a row (default: the primary key's, without the time column)",
        })
        .option('touch-column', {
          type: 'string',
          description: 'column set to now() when maintenance moves a row (default: updated_at if present; "" for none)',
        })
        .option('retention', { type: 'string', description: 'how long a partition is kept after its upper bound (default: 7 days)' })
        .option('premake', { type: 'number', description: 'partitions made ahead (default: 3)' })
        .option('lock-timeout', { type: 'string', description: "lock_timeout of every statement, and the policy's lockTimeout (default: 2s)" })
        .option('lock-retries', { type: 'number', description: 'retries of a statement that hit lock_timeout (default: the lockRetries setting)' })
        .option('dry-run', { type: 'boolean', default: false, description: 'run the checks and print every statement with its lock level; change nothing' }),
    handler<AdoptArgs>(async (ctx, argv) => {
      const loaded = ctx.settings({ lockTimeout: argv.lockTimeout, lockRetries: argv.lockRetries });
      if (argv.premake !== undefined && !Number.isInteger(argv.premake)) throw badInput(`--premake must be a whole number, got ${argv.premake}`);
      const lockTimeout = loaded.origin.lockTimeout === 'default' ? undefined : loaded.values.lockTimeout;
      const retries = loaded.origin.lockRetries === 'default' ? undefined : loaded.values.lockRetries;
      if (argv.revert) {
        const db = await ctx.migratedDb({ applicationName: 'qmaint adopt' });
        return printRevert(ctx, await revertAdoption(db, { table: argv.table, lockTimeout, retries, dryRun: argv.dryRun, onEvent: ctx.out.stepPrinter() }));
      }
      if (argv.column === undefined || argv.interval === undefined)
        throw badInput('name the time column and the partition width: --column COLUMN --interval INTERVAL');
      const db = await ctx.migratedDb({ applicationName: 'qmaint adopt' });
      const result = await adopt(db, {
        table: argv.table,
        column: argv.column,
        interval: argv.interval,
        statusColumn: argv.statusColumn,
        liveValues: list(argv.liveValues),
        keyColumns: list(argv.keyColumns),
        touchColumn: argv.touchColumn === undefined ? undefined : argv.touchColumn === '' ? null : argv.touchColumn,
        retention: argv.retention,
        premake: argv.premake,
        lockTimeout,
        retries,
        now: ctx.now,
        dryRun: argv.dryRun,
        onEvent: ctx.out.stepPrinter(),
      });
      return print(ctx, result);
    }),
  );
};

export default register;
