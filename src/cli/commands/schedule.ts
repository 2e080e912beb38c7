import type { Argv } from 'yargs';
import { checkConnectionUrl, redactDeep, redactSecrets } from '../../config.js';
import type { Db } from '../../db.js';
import { formatDurationMs } from '../../duration.js';
import { badInput, QmaintError } from '../../errors.js';
import {
  applyChanges,
  installChanges,
  jobRuns,
  locatePgCron,
  planInstall,
  planUninstall,
  queueJobs,
  type JobChange,
  type PgCronSite,
  checkJobPrefix,
} from '../../schedule/pgcron.js';
import type { DaemonEvent } from '../../schedule/daemon.js';
import { currentLeader } from '../../schedule/leader.js';
import { recentRuns } from '../../schedule/runs.js';
import { schedulesFrom, TASK_PURPOSE, TASKS, type CronDialect, type Schedules } from '../../schedule/tasks.js';
import { refillTicks } from '../../cron/index.js';
import { handler, type Context } from '../context.js';
import { elapsed, timestamp } from '../format.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import { cliMessage, cliText } from '../exit.js';
import type { Output } from '../output.js';
import type { Register } from '../register.js';

interface CronFlags {
  rotateCron?: string;
  vacuumCron?: string;
  rescueCron?: string;
  healthCron?: string;
  recurringCron?: string;
}

interface PgCronFlags extends CronFlags {
  pgCron: boolean;
  cronDatabaseUrl?: string;
  jobPrefix: string;
  dryRun: boolean;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function cronOptions(b: Argv<any>, dialect: CronDialect) {
  const example = dialect === 'node-cron' ? ' (6 fields = with seconds)' : '';
  for (const task of TASKS) {
    b.option(`${task}-cron`, { type: 'string', description: `schedule of ${task}: ${TASK_PURPOSE[task]}; cron, UTC${example}, or "off"` });
  }
  return b;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function pgCronOptions(b: Argv<any>) {
  return b
    .option('pg-cron', { type: 'boolean', default: true, description: 'act on pg_cron jobs (the only backend that installs; the daemon needs none)' })
    .option('cron-database-url', {
      type: 'string',
      description: 'connection to the database pg_cron lives in (default: same server, database from cron.database_name)',
    })
    .option('job-prefix', { type: 'string', default: 'qmaint', description: 'jobs are named PREFIX-rotate, PREFIX-vacuum, ...' })
    .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL, change nothing' });
}

function schedules(ctx: Context, argv: CronFlags, dialect: CronDialect): Schedules {
  return schedulesFrom(
    ctx.settings({
      rotateCron: argv.rotateCron,
      vacuumCron: argv.vacuumCron,
      rescueCron: argv.rescueCron,
      healthCron: argv.healthCron,
      recurringCron: argv.recurringCron,
    }),
    dialect,
  );
}

function requirePgCron(argv: PgCronFlags, verb: string): void {
  if (!argv.pgCron) throw badInput(`only pg_cron jobs can be ${verb}ed (the node-cron daemon needs no install: run qmaint schedule daemon); drop --no-pg-cron`);
  if (argv.cronDatabaseUrl !== undefined) checkConnectionUrl(argv.cronDatabaseUrl, '--cron-database-url');
}

const register: Register = (y) => {
  y.command('schedule', 'maintenance on a schedule: pg_cron jobs in the database, or the node-cron daemon', (b) =>
    b
      .command(
        'install',
        'create or update the pg_cron jobs (qmaint-rotate, -vacuum, -rescue, -health)',
        (c) => cronOptions(pgCronOptions(c), 'pg_cron'),
        handler<PgCronFlags>(install),
      )
      .command('uninstall', 'remove the pg_cron jobs of this database', (c) => pgCronOptions(c), handler<PgCronFlags>(uninstall))
      .command(
        'list',
        "pg_cron jobs with their last runs, the daemon's leader, and recent maintenance runs",
        (c) =>
          c
            .option('cron-database-url', {
              type: 'string',
              description: 'connection to the database pg_cron lives in (default: same server, database from cron.database_name)',
            })
            .option('limit', { type: 'number', default: 5, description: 'runs shown per job, and per task and runner' }),
        handler<{ cronDatabaseUrl?: string; limit: number }>(list),
      )
      .command(
        ['daemon', 'run'],
        'the node-cron daemon: runs the tasks on their schedules; with several daemons one leads (run: the old name)',
        (c) =>
          cronOptions(c, 'node-cron')
            .option('metrics-port', { type: 'number', description: 'serve /metrics (Prometheus) and /healthz on this port (0: any free port)' })
            .option('metrics-host', { type: 'string', default: '127.0.0.1', description: 'address the metrics server listens on (0.0.0.0: every interface)' })
            .options(durationOptions(LEADER_INTERVAL, 'how often a standby tries to take over, bounding takeover time (default 2s)'))
            .option('retries', { type: 'number', default: 3, description: 'retries of a failed run, with backoff, before the next tick' })
            .options(durationOptions(RETRY_BASE, 'first retry delay; doubles each retry, ±50% jitter (default 1s)'))
            .options(durationOptions(EXIT_AFTER, 'stop by itself after this long'))
            .option('json-lines', { type: 'boolean', default: false, description: 'one JSON event per line on stdout as they happen (NDJSON)' }),
        handler<RunFlags>(run),
      )
      .demandCommand(1, 'name a schedule command: install, uninstall, list or daemon'),
  );
};

// ---------------------------------------------------------------------------
// install / uninstall

async function install(ctx: Context, argv: PgCronFlags): Promise<void> {
  requirePgCron(argv, 'install');
  const prefix = checkJobPrefix(argv.jobPrefix);
  const wanted = schedules(ctx, argv, 'pg_cron');
  const db = await ctx.migratedDb();
  const site = await siteOrProblem(db, argv);
  if ('problem' in site) {
    // Dry run without a usable pg_cron: show what would run once it is set up.
    const changes = installChanges({ queueDatabase: site.queueDatabase, inDatabase: true }, wanted, prefix, []);
    reportChanges(ctx.out, changes, { dryRun: true, problem: site.problem, where: `pg_cron (not usable yet) for database ${site.queueDatabase}` });
    return;
  }
  try {
    const planned = await planInstall(site, wanted, prefix);
    const changes = argv.dryRun ? planned : await applyChanges(site, planned);
    // pg_cron's recurring task enqueues stored ticks only: store them ahead now (qmaint cron refill).
    if (!argv.dryRun && wanted.recurring !== null) await refillTicks(db, ctx.now);
    reportChanges(ctx.out, changes, {
      dryRun: argv.dryRun,
      where: `pg_cron ${site.version} in ${site.cronDatabase}, running in database ${site.queueDatabase}`,
      site,
    });
  } finally {
    await site.close();
  }
}

async function uninstall(ctx: Context, argv: PgCronFlags): Promise<void> {
  requirePgCron(argv, 'uninstall');
  const prefix = checkJobPrefix(argv.jobPrefix);
  const db = await ctx.db();
  const site = await siteOrProblem(db, argv);
  if ('problem' in site) {
    // Dry run without a usable pg_cron: there is no job to remove; say why.
    if (!argv.dryRun) throw site.error;
    reportChanges(ctx.out, [], { dryRun: true, problem: site.problem, where: `pg_cron (not usable here) for database ${site.queueDatabase}` });
    return;
  }
  try {
    const planned = await planUninstall(site, prefix);
    const changes = argv.dryRun ? planned : await applyChanges(site, planned);
    reportChanges(ctx.out, changes, { dryRun: argv.dryRun, where: `pg_cron ${site.version} in ${site.cronDatabase}, database ${site.queueDatabase}`, site });
  } finally {
    await site.close();
  }
}

type SiteOrProblem = PgCronSite | { problem: { reason: string; steps: string[]; message: string }; error: QmaintError; queueDatabase: string };

/** The pg_cron site, or (for --dry-run only) why it cannot be used. */
async function siteOrProblem(db: Db, argv: { cronDatabaseUrl?: string; dryRun: boolean }, tolerate = argv.dryRun): Promise<SiteOrProblem> {
  try {
    return await locatePgCron(db, argv.cronDatabaseUrl);
  } catch (err) {
    if (!tolerate || !(err instanceof QmaintError) || (err.code !== 'config' && err.code !== 'permission')) throw err;
    const details = (err.details ?? {}) as { reason?: string; steps?: string[] };
    const queueDatabase = (await db.query<{ d: string }>('SELECT current_database() AS d')).rows[0]!.d;
    const problem = { reason: cliText(err, details.reason ?? err.message), steps: (details.steps ?? []).map((s) => cliText(err, s)), message: cliMessage(err) };
    return { problem, error: err, queueDatabase };
  }
}

const ACTION_REASON: Record<JobChange['action'], string> = {
  create: 'new job',
  update: 'job exists with another schedule or command: updated in place (same jobid)',
  unchanged: 'job is already as wanted',
  remove: 'schedule is off: remove the job',
  absent: 'no such job',
};

function reportChanges(
  out: Output,
  changes: JobChange[],
  info: { dryRun: boolean; where: string; problem?: { reason: string; steps: string[]; message: string }; site?: PgCronSite },
): void {
  const jobs = changes.map((c) => ({
    task: c.task,
    name: c.name,
    schedule: c.schedule,
    action: c.action,
    jobid: c.jobid,
    statement: c.statement,
    lockLevel: c.lockLevel,
  }));
  const doc = {
    ok: true,
    dryRun: info.dryRun,
    ...(info.site
      ? { pgCron: { version: info.site.version, cronDatabase: info.site.cronDatabase, database: info.site.queueDatabase, connection: info.site.display } }
      : {}),
    ...(info.problem ? { ready: false, problem: info.problem } : {}),
    jobs,
  };
  out.emit(doc, () => {
    if (info.problem) out.warn(`pg_cron cannot be used here yet: ${info.problem.message}`);
    if (info.dryRun) {
      out.line(out.dim(`-- ${info.where}; all statements run in one transaction`));
      const steps = changes
        .filter((c) => c.statement)
        .map((c, i) => ({ seq: i + 1, action: c.action, statement: c.statement!, lockLevel: c.lockLevel, reason: `${c.name}: ${ACTION_REASON[c.action]}` }));
      out.plan(steps);
      return;
    }
    out.ok(info.where);
    out.table(
      [
        { key: 'name', header: 'job' },
        { key: 'schedule', header: 'schedule', format: (v) => (v === null ? out.dim('off') : String(v)) },
        { key: 'action', header: 'change' },
        { key: 'jobid', header: 'jobid', align: 'right', format: (v) => (v === null ? '' : String(v)) },
      ],
      jobs,
    );
  });
}

// ---------------------------------------------------------------------------
// list

async function list(ctx: Context, argv: { cronDatabaseUrl?: string; limit: number }): Promise<void> {
  if (!Number.isInteger(argv.limit) || argv.limit < 1 || argv.limit > 1000) throw badInput(`--limit ${argv.limit} must be a whole number from 1 to 1000`);
  if (argv.cronDatabaseUrl !== undefined) checkConnectionUrl(argv.cronDatabaseUrl, '--cron-database-url');
  const db = await ctx.migratedDb();
  const out = ctx.out;
  const pgCron = await pgCronListing(db, argv);
  const leader = await currentLeader(db);
  const runs = await recentRuns(db, { limit: argv.limit });
  const doc = { ok: true, database: db.target.database, pgCron, daemon: { leader }, runs };
  out.emit(doc, () => {
    if (pgCron.available) {
      out.heading(
        `pg_cron ${pgCron.version} (jobs kept in ${pgCron.cronDatabase}): ${pgCron.jobs.length} job(s) run qmaint maintenance in ${db.target.database}`,
      );
      out.table(
        [
          { key: 'name', header: 'job' },
          { key: 'schedule', header: 'schedule' },
          { key: 'active', header: 'active', format: (v) => (v ? 'yes' : out.c.yellow('no')) },
          {
            key: 'lastRun',
            header: 'last pg_cron run',
            format: (_v, r) => (r.runs[0] ? `${r.runs[0].startedAt ?? '?'} ${verdictOf(out, r.runs[0].status)}` : out.dim('not yet')),
          },
          { key: 'lastRun', header: 'message', wrap: true, priority: 1, format: (_v, r) => oneLine(r.runs[0]?.message ?? '') },
        ],
        pgCron.jobs.map((j) => ({ ...j, lastRun: null })),
      );
    } else {
      out.line(`pg_cron: ${out.dim(`not in use here (${pgCron.reason})`)}`);
    }
    out.line();
    out.line(
      leader
        ? `Daemon: the leader is pid ${leader.pid} (${leader.applicationName ?? '?'}${leader.clientAddress ? ` from ${leader.clientAddress}` : ''}), connected since ${leader.since ?? '?'}`
        : `Daemon: ${out.dim('no daemon leads this database right now')}`,
    );
    out.line();
    out.heading(`Recent maintenance runs (last ${argv.limit} per task and runner)`);
    if (runs.length === 0) {
      out.line(out.dim('none recorded yet'));
      return;
    }
    out.table(
      [
        { key: 'startedAt', header: 'started (UTC)', wrap: true, format: (v) => timestamp(v as string) },
        { key: 'task', header: 'task' },
        { key: 'runner', header: 'runner' },
        { key: 'node', header: 'node', format: (_v, r) => r.node ?? out.dim('?') },
        { key: 'status', header: 'status', format: (_v, r) => verdictOf(out, r.status) },
        {
          key: 'finishedAt',
          header: 'took',
          align: 'right',
          format: (_v, r) => (r.finishedAt ? elapsed(Date.parse(r.finishedAt) - Date.parse(r.startedAt)) : ''),
        },
        { key: 'message', header: 'message', wrap: true, priority: 1, format: (_v, r) => oneLine(r.message ?? '') },
      ],
      runs,
    );
  });
}

type PgCronListing =
  | { available: false; reason: string }
  | {
      available: true;
      version: string;
      cronDatabase: string;
      jobs: {
        jobid: number;
        name: string;
        schedule: string;
        active: boolean;
        command: string;
        runs: { status: string | null; message: string | null; startedAt: string | null; finishedAt: string | null }[];
      }[];
    };

async function pgCronListing(db: Db, argv: { cronDatabaseUrl?: string; limit: number }): Promise<PgCronListing> {
  const site = await siteOrProblem(db, { cronDatabaseUrl: argv.cronDatabaseUrl, dryRun: false }, true);
  if ('problem' in site) return { available: false, reason: site.problem.reason };
  try {
    const jobs = await queueJobs(site);
    const runs = await jobRuns(
      site,
      jobs.map((j) => j.jobid),
      argv.limit,
    );
    return {
      available: true,
      version: site.version,
      cronDatabase: site.cronDatabase,
      jobs: jobs.map((j) => ({ jobid: j.jobid, name: j.name, schedule: j.schedule, active: j.active, command: j.command, runs: runs.get(j.jobid) ?? [] })),
    };
  } finally {
    await site.close();
  }
}

function verdictOf(out: Output, status: string | null): string {
  if (status === 'ok' || status === 'succeeded') return out.verdict('ok').replace('ok', status);
  if (status === 'skipped' || status === 'running' || status === 'starting') return out.c.yellow(status);
  return out.c.red(status ?? '?');
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 80 ? flat.slice(0, 79) + '…' : flat;
}

// ---------------------------------------------------------------------------
// run: the daemon

interface RunFlags extends CronFlags {
  metricsPort?: number;
  metricsHost: string;
  leaderInterval?: string;
  leaderIntervalMs?: number;
  retries: number;
  retryBase?: string;
  retryBaseMs?: number;
  exitAfter?: string;
  jsonLines: boolean;
}

const LEADER_INTERVAL: DurationFlag = { flag: 'leader-interval', min: 50, max: 600_000, old: { flag: 'leader-interval-ms', unit: 'ms' } };
const RETRY_BASE: DurationFlag = { flag: 'retry-base', min: 1, max: 3_600_000, old: { flag: 'retry-base-ms', unit: 'ms' } };
const EXIT_AFTER: DurationFlag = { flag: 'exit-after', min: 1, max: 2_147_483_647, bare: 's' };

function checkRunFlags(ctx: Context, argv: RunFlags): { leaderIntervalMs: number; retryBaseMs: number; exitAfterMs?: number } {
  if (ctx.nowGiven) throw badInput('qmaint schedule daemon works on the real clock; drop --now');
  const whole = (name: string, value: number | undefined, min: number, max: number) => {
    if (value !== undefined && (!Number.isInteger(value) || value < min || value > max))
      throw badInput(`--${name} ${value} must be a whole number from ${min} to ${max}`);
  };
  whole('metrics-port', argv.metricsPort, 0, 65535);
  whole('retries', argv.retries, 0, 100);
  return {
    leaderIntervalMs: readDuration(ctx.out, LEADER_INTERVAL, argv.leaderInterval, argv.leaderIntervalMs) ?? 2000,
    retryBaseMs: readDuration(ctx.out, RETRY_BASE, argv.retryBase, argv.retryBaseMs) ?? 1000,
    exitAfterMs: readDuration(ctx.out, EXIT_AFTER, argv.exitAfter),
  };
}

async function run(ctx: Context, argv: RunFlags): Promise<void> {
  const timing = checkRunFlags(ctx, argv);
  const wanted = schedules(ctx, argv, 'node-cron');
  if (TASKS.every((t) => wanted[t] === null))
    throw badInput('every task is off, so the daemon would have nothing to do; give at least one task a schedule (e.g. --rescue-cron "* * * * *")');
  const db = await ctx.migratedDb({ applicationName: 'qmaint-daemon', max: 8 });
  const summary = new RunSummary();
  const log = daemonLogger(ctx.out, argv.jsonLines, summary);
  // Loaded here: the daemon brings prom-client, which no other schedule command needs at start-up.
  const { Daemon } = await import('../../schedule/daemon.js');
  const daemon = new Daemon({
    db,
    schedules: wanted,
    log,
    leaderIntervalMs: timing.leaderIntervalMs,
    retries: argv.retries,
    retryBaseMs: timing.retryBaseMs,
    metricsPort: argv.metricsPort,
    metricsHost: argv.metricsHost,
  });
  let stop: (why: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals) => stop(`received ${signal}`);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const exitAfter = timing.exitAfterMs;
  const timer = exitAfter !== undefined ? setTimeout(() => stop(`--exit-after ${formatDurationMs(exitAfter)}`), exitAfter) : undefined;
  try {
    await daemon.start();
    const reason = await stopped;
    await daemon.stop(reason);
    if (ctx.out.json && !argv.jsonLines) ctx.out.emitJson({ ok: true, stoppedBy: reason, ...summary.doc() });
  } finally {
    clearTimeout(timer);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await daemon.stop('shutting down after an error');
  }
}

/** What --json prints when the daemon stops: runs counted per task and status, warnings and errors, the metrics address. */
class RunSummary {
  private readonly runs = new Map<string, number>();
  private warnings = 0;
  private errors = 0;
  private lastError: string | null = null;
  private metrics: { host: string; port: number } | null = null;

  add(event: DaemonEvent): void {
    if (event.event === 'run') {
      const key = `${String(event.task)}\u0000${String(event.status)}`;
      this.runs.set(key, (this.runs.get(key) ?? 0) + 1);
    }
    if (event.event === 'metrics') this.metrics = { host: String(event.host), port: Number(event.port) };
    if (event.level === 'warn') this.warnings++;
    if (event.level === 'error') {
      this.errors++;
      this.lastError = redactSecrets(event.message);
    }
  }

  doc() {
    const runs = [...this.runs].map(([key, count]) => {
      const [task, status] = key.split('\u0000');
      return { task: task!, status: status!, count };
    });
    return { runs, warnings: this.warnings, errors: this.errors, lastError: this.lastError, metrics: this.metrics };
  }
}

/**
 * --json-lines: every event as a JSON line; --json: counted for the one
 * document printed at exit; otherwise one readable line per event. Debug
 * events only with --verbose.
 */
function daemonLogger(out: Output, jsonLines: boolean, summary: RunSummary): (event: DaemonEvent) => void {
  return (event) => {
    summary.add(event);
    if (event.level === 'debug' && !out.verbose) return;
    if (jsonLines) {
      out.jsonLine(redactDeep(event));
      return;
    }
    if (out.json) return;
    const level = event.level === 'error' ? out.c.red(event.level) : event.level === 'warn' ? out.c.yellow(event.level) : out.dim(event.level);
    out.line(`${out.dim(event.time)} ${level.padEnd(5)} ${redactSecrets(event.message)}`);
  };
}

export default register;
