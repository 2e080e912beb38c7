import { badInput } from '../../errors.js';
import { runVacuum, planVacuumRun } from '../../vacuum/run.js';
import { vacuumStatus, type PartitionVacuumStatus, type XminHolder } from '../../vacuum/status.js';
import { tune, tuneServerSide, type TunePlan } from '../../vacuum/tune.js';
import { bytes, duration, elapsed } from '../format.js';
import { handler, type Context } from '../context.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import type { Output } from '../output.js';
import type { Register } from '../register.js';

interface TuneArgs {
  dryRun: boolean;
  sample?: string;
  sampleSeconds?: number;
  serverSide: boolean;
  lockTimeout?: string;
  lockRetries?: number;
}

interface StatusArgs {
  bloat: string;
}

interface RunArgs {
  partition?: string;
  freeze: boolean;
  analyze: boolean;
  dryRun: boolean;
  lockTimeout?: string;
  lockRetries?: number;
}

const latest = (a: string | null, b: string | null) => (a === null ? b : b === null ? a : a > b ? a : b);
const shortTime = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

function lockSettings(ctx: Context, argv: { lockTimeout?: string; lockRetries?: number }) {
  const { values, origin } = ctx.settings({ lockTimeout: argv.lockTimeout, lockRetries: argv.lockRetries });
  // Left at its default, the retries are qmaint.lock_retries(), the server-side executor's number.
  return { lockTimeout: String(values.lockTimeout), retries: origin.lockRetries === 'default' ? undefined : Number(values.lockRetries) };
}

function showTunePlan(out: Output, plan: TunePlan): void {
  for (const m of plan.measurements) {
    const churn = m.measured
      ? `${m.deadPerSec!.toFixed(1)} dead tuples/s over ${m.samples} samples (${shortTime(m.windowStart)} .. ${shortTime(m.windowEnd)})`
      : 'churn not measured yet (no earlier sample)';
    out.line(
      `${out.c.bold(m.parentTable)}: ${churn}; autovacuum_naptime ${m.naptimeSeconds}s => hot vacuum threshold ${m.vacuumThreshold}, analyze threshold ${m.analyzeThreshold}`,
    );
  }
  out.table(
    [
      { key: 'partition', header: 'partition' },
      { key: 'state', header: 'state' },
      { key: 'profile', header: 'profile' },
      { key: 'frozen', header: 'frozen' },
      { key: 'changes', header: 'current -> proposed' },
    ],
    plan.targets.map((t) => ({
      partition: t.partition,
      state: t.state,
      profile: t.profile,
      frozen: t.profile === 'cold' ? (t.frozen ? 'yes' : 'no') : '',
      changes:
        t.changes.length === 0
          ? out.c.dim('unchanged')
          : t.changes.map((c) => `${c.parameter.replace(/^autovacuum_/, '')}: ${c.current ?? 'default'} -> ${c.proposed ?? 'default'}`).join('\n'),
    })),
  );
}

const SAMPLE: DurationFlag = { flag: 'sample', min: 0, max: 600_000, old: { flag: 'sample-seconds', unit: 's' } };

async function tuneCommand(ctx: Context, argv: TuneArgs): Promise<void> {
  const sampleMs = readDuration(ctx.out, SAMPLE, argv.sample, argv.sampleSeconds) ?? 10_000;
  const { lockTimeout, retries } = lockSettings(ctx, argv);
  const db = await ctx.migratedDb({ max: 3 });
  const out = ctx.out;
  if (argv.serverSide) {
    if (argv.dryRun) throw badInput('--server-side runs qmaint.vacuum_tune_all() and has no --dry-run; use --dry-run without --server-side to see the plan');
    const result = await tuneServerSide(db, ctx.now);
    out.emit({ ok: true, serverSide: true, result }, () => {
      if (result.skipped) out.warn(`skipped: ${String(result.reason)}`);
      else
        out.ok(
          `vacuum_tune_all: ${String(result.applied)} partition(s) re-profiled, ${String(result.tracked)} newly drained tracked${(result.gave_up as unknown[]).length > 0 ? `; gave up on ${(result.gave_up as unknown[]).length} (lock_timeout)` : ''}`,
        );
    });
    return;
  }
  let bar: ReturnType<Output['progress']> | undefined;
  let shown = 0;
  const result = await tune(db, {
    now: ctx.now,
    dryRun: argv.dryRun,
    sampleSeconds: sampleMs / 1000,
    lockTimeout,
    retries,
    onWait: (s) => {
      out.note(`no churn sample stored in the last hour: sampling pg_stat_user_tables for ${duration(s)} (--sample 2s shortens it, --sample 0s skips it)`);
      bar = out.ttyProgress(Math.ceil(s), 'sampling churn, seconds');
    },
    onWaitProgress: (elapsed, total) => {
      const seconds = Math.ceil(elapsed / 1000);
      if (seconds > shown) bar?.tick(seconds - shown);
      shown = Math.max(shown, seconds);
      if (elapsed >= total) bar?.finish();
    },
    onStoredSample: (at) => {
      if (at !== null)
        out.note(`churn measured from the stored sample of ${shortTime(at)} (${duration((ctx.now.getTime() - Date.parse(at)) / 1000)} ago); no wait`);
    },
    onEvent: out.stepPrinter(),
  });
  if (!result.ran) {
    const h = result.holder;
    out.emit({ ok: true, skipped: true, holder: h }, () =>
      out.warn(`another maintenance run holds the lock${h ? ` (pid ${h.pid}, ${h.applicationName ?? 'unknown'})` : ''}; nothing done`),
    );
    return;
  }
  const { plan, executed } = result;
  const doc = { ok: true, dryRun: argv.dryRun, now: plan.now, measurements: plan.measurements, partitions: plan.targets, steps: plan.steps, executed };
  out.emit(doc, () => {
    showTunePlan(out, plan);
    if (argv.dryRun) {
      out.line();
      out.plan(plan.steps);
    } else {
      const changed = executed.filter((e) => e.action === 'profile').length;
      const frozen = executed.filter((e) => e.action === 'freeze').length;
      out.ok(`${changed} partition(s) re-profiled, ${frozen} frozen, ${executed.length} step(s) run`);
    }
  });
}

function holderRows(out: Output, holders: XminHolder[]): void {
  if (holders.length === 0) {
    out.ok('nothing holds the xmin horizon back');
    return;
  }
  out.table(
    [
      { key: 'kind', header: 'holder' },
      { key: 'who', header: 'pid / name', wrap: true },
      { key: 'xminAge', header: 'xmin age (xids)', align: 'right' },
      { key: 'age', header: 'age', align: 'right' },
      { key: 'state', header: 'state', priority: 2 },
      {
        key: 'query',
        header: 'query',
        wrap: true,
        priority: 1,
        format: (v) =>
          String(v ?? '')
            .replace(/\s+/g, ' ')
            .slice(0, 50),
      },
    ],
    holders.map((h) => ({ ...h, who: [h.pid === null ? null : `pid ${h.pid}`, h.name].filter(Boolean).join(' '), age: duration(h.ageSeconds) })),
  );
}

function partitionRows(out: Output, parts: PartitionVacuumStatus[]): void {
  out.table(
    [
      { key: 'partition', header: 'partition' },
      { key: 'state', header: 'state' },
      { key: 'liveTuples', header: 'live', align: 'right', priority: 5 },
      { key: 'deadTuples', header: 'dead', align: 'right', priority: 2 },
      { key: 'dead', header: 'dead %', align: 'right' },
      { key: 'vacuumed', header: 'last vacuum (manual/auto)', wrap: true, priority: 1 },
      { key: 'analyzed', header: 'last analyze (manual/auto)', wrap: true, priority: 6 },
      { key: 'size', header: 'table + index', align: 'right', priority: 3 },
      { key: 'bloatText', header: 'bloat', align: 'right', priority: 1 },
      { key: 'relfrozenxidAge', header: 'xid age', align: 'right', priority: 4 },
    ],
    parts.map((p) => ({
      ...p,
      dead: (p.deadRatio * 100).toFixed(1),
      vacuumed: `${shortTime(latest(p.lastVacuum, p.lastAutovacuum))} (${p.vacuumCount}/${p.autovacuumCount})`,
      analyzed: `${shortTime(latest(p.lastAnalyze, p.lastAutoanalyze))} (${p.analyzeCount}/${p.autoanalyzeCount})`,
      size: `${bytes(p.tableBytes)} + ${bytes(p.indexBytes)}`,
      bloatText: p.bloat.bytes === null ? 'n/a' : `${bytes(p.bloat.bytes)} (${p.bloat.percent}%)${p.bloat.method === 'estimate' ? ' est.' : ''}`,
    })),
  );
}

async function statusCommand(ctx: Context, argv: StatusArgs): Promise<void> {
  if (!['auto', 'approx', 'estimate'].includes(argv.bloat)) throw badInput(`--bloat ${JSON.stringify(argv.bloat)} must be auto, approx or estimate`);
  const db = await ctx.migratedReadDb({ max: 2 });
  const status = await vacuumStatus(db, { now: ctx.now, bloat: argv.bloat as 'auto' | 'approx' | 'estimate' });
  const out = ctx.out;
  out.emit({ ok: true, ...status }, () => {
    partitionRows(out, status.partitions);
    out.line(
      out.c.dim(
        status.bloatMethod === 'estimate'
          ? `bloat: statistics-based estimate (${status.bloatNote ?? 'pgstattuple unavailable'})`
          : 'bloat: pgstattuple_approx (dead tuples + free space)',
      ),
    );
    out.line();
    out.heading(`xmin horizon (oldest holder ${status.horizon.oldestXminAge ?? 0} transactions back; database frozen xid age ${status.databaseFrozenXidAge})`);
    holderRows(out, status.horizon.holders);
    const r = status.replication;
    out.line();
    out.heading(`replication (${r.inRecovery ? 'this server is a standby' : 'this server is a primary'})`);
    if (r.slots.length === 0 && r.standbys.length === 0) out.line('no replication slots, no standbys streaming from this server');
    for (const s of r.slots) {
      const held = s.retainedWalBytes === null ? '' : `, holds ${bytes(s.retainedWalBytes)} of WAL`;
      const xmin = s.xminAge === null ? '' : `, xmin ${s.xminAge} transactions back`;
      const line = `slot ${s.name} (${s.type}): ${s.active ? 'active' : 'INACTIVE'}${held}${xmin}`;
      out.line(s.active ? line : out.c.yellow(line));
    }
    for (const s of r.standbys) {
      out.line(
        `standby ${s.name}: ${s.state}, ${s.syncState}, replay lag ${s.replayLagMs === null ? 'none' : `${Math.round(s.replayLagMs)} ms`}${s.replayLagBytes === null ? '' : ` (${bytes(s.replayLagBytes)})`}`,
      );
    }
  });
}

async function runCommand(ctx: Context, argv: RunArgs): Promise<void> {
  const { lockTimeout, retries } = lockSettings(ctx, argv);
  const db = await ctx.migratedDb({ max: 3 });
  const out = ctx.out;
  const options = { now: ctx.now, partition: argv.partition, freeze: argv.freeze, analyze: argv.analyze };
  if (argv.dryRun) {
    const steps = await planVacuumRun(db, options);
    out.emit({ ok: true, dryRun: true, steps }, () => out.plan(steps));
    return;
  }
  let bar: ReturnType<Output['progress']> | null = null;
  let shown = 0;
  let phase = '';
  const printStep = out.stepPrinter();
  const result = await runVacuum(db, {
    ...options,
    lockTimeout,
    retries,
    onEvent: (event) => {
      if (event.outcome === 'start') {
        bar?.finish();
        bar = null;
        shown = 0;
        phase = '';
      }
      printStep(event);
    },
    onProgress: (p) => {
      if (p.phase !== phase) {
        phase = p.phase;
        if (!out.json) out.note(`  ${p.partition}: ${p.phase}`);
      }
      if (p.heapBlocksTotal > 0) {
        bar ??= out.progress(p.heapBlocksTotal, `  ${p.partition} heap blocks`);
        if (p.heapBlocksScanned > shown) {
          bar.tick(p.heapBlocksScanned - shown);
          shown = p.heapBlocksScanned;
        }
      }
    },
  });
  (bar as ReturnType<Output['progress']> | null)?.finish();
  if (!result.ran) {
    const h = result.holder;
    out.emit({ ok: true, skipped: true, holder: h }, () => out.warn(`another maintenance run holds the lock${h ? ` (pid ${h.pid})` : ''}; nothing vacuumed`));
    return;
  }
  out.emit({ ok: true, vacuumed: result.vacuumed }, () => {
    out.table(
      [
        { key: 'partition', header: 'partition' },
        { key: 'deadTuplesBefore', header: 'dead before', align: 'right' },
        { key: 'deadTuplesAfter', header: 'dead after', align: 'right' },
        { key: 'ms', header: 'took', align: 'right', format: (v) => elapsed(Number(v)) },
      ],
      result.vacuumed,
    );
    out.ok(`${result.vacuumed.length} partition(s) vacuumed${argv.freeze ? ' and frozen' : ''}`);
  });
}

const lockOptions = {
  'lock-timeout': { type: 'string', description: 'lock_timeout for each statement (default: the lockTimeout setting)' },
  'lock-retries': { type: 'number', description: 'retries after a lock_timeout (default: the lockRetries setting)' },
} as const;

const register: Register = (y) => {
  y.command('vacuum', 'per-partition autovacuum profiles, bloat and xmin horizon', (b) =>
    b
      .command(
        'tune',
        "measure churn, derive the hot thresholds, and set each partition's autovacuum reloptions for its age",
        (c) =>
          c
            .option('dry-run', { type: 'boolean', default: false, description: 'show current and proposed settings and the SQL; change nothing' })
            .options(durationOptions(SAMPLE, 'without a churn sample stored in the last hour, sample pg_stat_user_tables this long (default 10s; 0: skip)'))
            .option('server-side', {
              type: 'boolean',
              default: false,
              description: 'run qmaint.vacuum_tune_all() in one transaction (what pg_cron runs; use through PgBouncer)',
            })
            .options(lockOptions),
        handler<TuneArgs>((ctx, argv) => tuneCommand(ctx, argv)),
      )
      .command(
        'status',
        'dead tuples, last (auto)vacuum and analyze, sizes, bloat and xid age per partition; what holds the xmin horizon back',
        (c) => c.option('bloat', { type: 'string', default: 'auto', description: 'auto (pgstattuple_approx when available), approx, or estimate' }),
        handler<StatusArgs>((ctx, argv) => statusCommand(ctx, argv)),
      )
      .command(
        'run [partition]',
        'VACUUM now, outside any transaction, with progress from pg_stat_progress_vacuum',
        (c) =>
          c
            .positional('partition', { type: 'string', description: 'one partition (schema.table); default every non-future partition' })
            .option('freeze', { type: 'boolean', default: false, description: 'VACUUM (FREEZE): freeze every row' })
            .option('analyze', { type: 'boolean', default: false, description: 'also ANALYZE' })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the VACUUM statements; run nothing' })
            .options(lockOptions),
        handler<RunArgs>((ctx, argv) => runCommand(ctx, argv)),
      )
      .demandCommand(1, 'name a vacuum subcommand: tune, status or run'),
  );
};

export default register;
