import { createTask, type ScheduledTask } from 'node-cron';
import type { Db } from '../db.js';
import { toQmaintError } from '../errors.js';
import { LeaderElection } from './leader.js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { attachDatabaseMetrics, METRICS } from '../metrics/database.js';
import { createMetrics } from '../metrics/registry.js';
import { serveMetrics, type MetricsServer } from '../metrics/server.js';
import { refillTicks } from '../cron/index.js';
import { runTask, type RunStatus } from './runs.js';
import { TASKS, type Schedules, type TaskName } from './tasks.js';

/** Severity of a {@link DaemonEvent}. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** One log record of the daemon (a JSON line with --json). */
export interface DaemonEvent {
  time: string;
  level: LogLevel;
  event: string;
  message: string;
  [key: string]: unknown;
}

/** Options of {@link Daemon}. */
export interface DaemonOptions {
  /** Pool on the queue database; tasks and metrics run through it. */
  db: Db;
  /** Each task's node-cron expression (read in UTC), or null for off. */
  schedules: Schedules;
  /** Receives every log record (ticks, runs, leadership changes, errors). */
  log: (event: DaemonEvent) => void;
  /** How often a standby tries to take over, and the leader checks its lock (default 2000). */
  leaderIntervalMs?: number;
  /** Retries of a failed run before waiting for the next tick (default 3). */
  retries?: number;
  /** First retry delay; doubles each time, with ±50% jitter (default 1000). */
  retryBaseMs?: number;
  /** Serve /metrics and /healthz on this port (0: any free port). */
  metricsPort?: number;
  /** Address /metrics listens on (default 127.0.0.1; 0.0.0.0 for every interface). */
  metricsHost?: string;
  /**
   * Where the daemon registers its metrics (the database's gauges, qmaint_up,
   * its leadership and task runs); default: a new registry with the process
   * metrics ({@link createMetrics}). /metrics serves this registry.
   */
  registry?: Registry;
  /** How long stop() waits for running tasks (default 30000). */
  stopTimeoutMs?: number;
}

type Outcome = RunStatus | 'error';

/**
 * The node-cron maintenance daemon. Every daemon schedules every task, but
 * only the leader (see LeaderElection) runs them, so with several daemons each
 * task runs once per tick. A task never overlaps itself: in this process a
 * tick that finds the previous run still going is skipped, and across
 * processes and pg_cron qmaint.run_task's per-task lock records 'skipped'.
 * Cron expressions are read in UTC, as pg_cron reads them.
 */
export class Daemon {
  private readonly leader: LeaderElection;
  private readonly cron: { task: TaskName; job: ScheduledTask }[] = [];
  private readonly running = new Map<TaskName, Promise<void>>();
  private readonly wakers = new Set<() => void>();
  private readonly runs: Counter<'task' | 'status'>;
  private readonly last = new Map<TaskName, { status: Outcome; at: string; message: string | null }>();
  private metrics: MetricsServer | null = null;
  /** The daemon's metrics, served at /metrics (see DaemonOptions.registry). */
  readonly registry: Registry;
  private stopping = false;

  /** A daemon that does nothing until {@link Daemon.start}. */
  constructor(private readonly options: DaemonOptions) {
    this.leader = new LeaderElection({
      newClient: () => options.db.newClient({ application_name: 'qmaint-daemon' }),
      intervalMs: options.leaderIntervalMs ?? 2000,
      onChange: (leading, reason) =>
        this.emit('info', 'leader', leading ? `this daemon leads and runs the tasks (${reason})` : `this daemon no longer leads (${reason})`, {
          role: leading ? 'leader' : 'standby',
        }),
      onError: (message) => this.emit('warn', 'leader_error', message),
    });
    this.registry = options.registry ?? createMetrics();
    attachDatabaseMetrics(options.db, this.registry, {
      onError: (err) => this.emit('debug', 'metrics_error', `a scrape could not read the database (qmaint_up 0): ${toQmaintError(err).message}`),
    });
    const registers = [this.registry];
    const help = (name: string) => METRICS[name]!.help;
    this.runs = new Counter({ name: 'qmaint_daemon_task_runs_total', help: help('qmaint_daemon_task_runs_total'), labelNames: ['task', 'status'], registers });
    const leader = this.leader;
    new Gauge({
      name: 'qmaint_daemon_leader',
      help: help('qmaint_daemon_leader'),
      registers,
      collect() {
        this.set(leader.isLeader ? 1 : 0);
      },
    });
  }

  /** Whether this daemon holds the leader lock now (only the leader runs tasks). */
  get isLeader(): boolean {
    return this.leader.isLeader;
  }

  /** The port /metrics listens on, once started with metricsPort. */
  get metricsPort(): number | null {
    return this.metrics?.port ?? null;
  }

  /**
   * Serve metrics (when metricsPort is set), schedule every task that is not
   * off, and start competing for leadership.
   *
   * @throws {@link QmaintError} `config` when /metrics cannot listen on metricsHost:metricsPort
   */
  async start(): Promise<void> {
    if (this.options.metricsPort !== undefined) {
      this.metrics = await serveMetrics(this.registry, {
        port: this.options.metricsPort,
        host: this.options.metricsHost,
        health: () => this.health(),
        onError: (err) => this.emit('warn', 'metrics_error', `serving /metrics: ${err.message}`),
      });
      this.emit('info', 'metrics', `serving /metrics and /healthz on ${this.metrics.host}:${this.metrics.port}`, {
        host: this.metrics.host,
        port: this.metrics.port,
      });
    }
    const active = TASKS.filter((t) => this.options.schedules[t] !== null);
    for (const task of active) {
      const job = createTask(this.options.schedules[task]!, (ctx) => this.onTick(task, ctx.date), {
        name: `qmaint-${task}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
        timezone: 'Etc/UTC',
        logger: this.cronLogger(task),
      });
      this.cron.push({ task, job });
    }
    this.leader.start();
    for (const { job } of this.cron) await job.start();
    this.emit(
      'info',
      'started',
      `daemon started (pid ${process.pid}) with ${active.map((t) => `${t} "${this.options.schedules[t]}"`).join(', ') || 'no tasks'}`,
      {
        pid: process.pid,
        schedules: this.options.schedules,
      },
    );
  }

  /** Stop scheduling, let running tasks finish (bounded), release leadership, close the metrics server. */
  async stop(reason = 'stop requested'): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.emit('info', 'stopping', `stopping: ${reason}`);
    for (const { job } of this.cron) await job.destroy();
    for (const wake of this.wakers) wake();
    const timeout = this.options.stopTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      Promise.all(this.running.values()).then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeout))),
    ]);
    clearTimeout(timer);
    if (!finished) this.emit('warn', 'stop_timeout', `tasks still running after ${timeout} ms: ${[...this.running.keys()].join(', ')}; stopping anyway`);
    await this.leader.stop();
    await this.metrics?.close();
    this.emit('info', 'stopped', 'daemon stopped');
  }

  private onTick(task: TaskName, date: Date): void {
    const tick = date.toISOString();
    if (this.stopping) return;
    if (!this.leader.isLeader) {
      this.emit('debug', 'tick', `${task} tick ${tick}: standing by`, { task, tick, role: 'standby' });
      return;
    }
    if (this.running.has(task)) {
      this.emit('warn', 'overlap', `${task} tick ${tick} skipped: the previous ${task} run is still going`, { task, tick });
      return;
    }
    const run = this.runWithRetries(task, tick).finally(() => this.running.delete(task));
    this.running.set(task, run);
  }

  private async runWithRetries(task: TaskName, tick: string): Promise<void> {
    const retries = this.options.retries ?? 3;
    const base = this.options.retryBaseMs ?? 1000;
    for (let attempt = 1; ; attempt++) {
      const started = Date.now();
      let status: Outcome;
      let message: string | null;
      let runId: number | null = null;
      let details: unknown = null;
      try {
        // Recurring jobs: store the ticks ahead first (computed here, in TypeScript, with the
        // cron library); the task itself, like pg_cron's, only enqueues stored ticks.
        if (task === 'recurring') await refillTicks(this.options.db, new Date());
        const run = await runTask(this.options.db, task, 'daemon');
        ({ status, message, details } = run);
        runId = run.id;
      } catch (err) {
        status = 'error';
        message = toQmaintError(err).message;
      }
      this.record(task, status, message);
      const ms = Date.now() - started;
      const good = status === 'ok' || status === 'skipped';
      this.emit(good ? 'info' : 'error', 'run', runLine(task, status, ms, message, details), {
        task,
        tick,
        attempt,
        status,
        ms,
        runId,
        detail: message,
      });
      if (good) return;
      const delayMs = Math.round(base * 2 ** (attempt - 1) * (0.5 + Math.random()));
      const why = this.whyNotRetry(task, attempt, retries, delayMs);
      if (why) {
        this.emit('error', 'gave_up', `${task} gave up after ${attempt} attempt(s): ${why}`, { task, tick, attempts: attempt });
        return;
      }
      this.emit('warn', 'retry', `${task} retries in ${delayMs} ms (attempt ${attempt + 1} of ${retries + 1})`, { task, tick, attempt: attempt + 1, delayMs });
      await this.sleep(delayMs);
    }
  }

  /** A retry must not outlive the daemon, its leadership, or the task's next tick. */
  private whyNotRetry(task: TaskName, attempt: number, retries: number, delayMs: number): string | null {
    if (this.stopping) return 'the daemon is stopping';
    if (!this.leader.isLeader) return 'this daemon no longer leads';
    if (attempt > retries) return 'no retries left; the next tick tries again';
    const next = this.cron.find((c) => c.task === task)?.job.getNextRun();
    if (next && Date.now() + delayMs >= next.getTime()) return 'the next tick is due before the retry';
    return null;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  private record(task: TaskName, status: Outcome, message: string | null): void {
    this.runs.inc({ task, status });
    this.last.set(task, { status, at: new Date().toISOString(), message });
  }

  private emit(level: LogLevel, event: string, message: string, fields: Record<string, unknown> = {}): void {
    this.options.log({ time: new Date().toISOString(), level, event, message, ...fields });
  }

  private cronLogger(task: TaskName) {
    const forward = (level: LogLevel) => (msg: string | Error) => this.emit(level, 'cron', `${task}: ${msg instanceof Error ? msg.message : msg}`, { task });
    return { info: forward('debug'), debug: forward('debug'), warn: forward('warn'), error: forward('error') };
  }

  /** What /healthz answers: ok while the database answers and the daemon is not stopping. */
  private async health() {
    let database = 'ok';
    try {
      await this.options.db.query('SELECT 1');
    } catch (err) {
      database = toQmaintError(err).message;
    }
    return {
      ok: database === 'ok' && !this.stopping,
      role: this.leader.isLeader ? 'leader' : 'standby',
      database,
      stopping: this.stopping,
      tasks: Object.fromEntries(TASKS.map((t) => [t, { schedule: this.options.schedules[t], last: this.last.get(t) ?? null }])),
    };
  }
}

/**
 * The log line of one run. A health run that worked may still have found a
 * problem, so it says both: "health ran in 39 ms (run ok); 1 check critical:
 * runway". Other tasks: "rotate ok in 31 ms: qmaint.jobs: 1 create".
 */
function runLine(task: TaskName, status: Outcome, ms: number, message: string | null, details: unknown): string {
  const checks = task === 'health' && status === 'ok' ? healthChecks(details) : null;
  if (!checks) return `${task} ${status} in ${ms} ms${message ? `: ${message}` : ''}`;
  const named = (level: string) => checks.filter((c) => c.status === level).map((c) => c.check_name);
  const critical = named('critical');
  const warn = checks.filter((c) => c.status !== 'ok' && c.status !== 'critical').map((c) => c.check_name);
  const found = [
    critical.length ? `${critical.length} check${critical.length === 1 ? '' : 's'} critical: ${critical.join(', ')}` : '',
    warn.length ? `${warn.length} check${warn.length === 1 ? '' : 's'} warning: ${warn.join(', ')}` : '',
  ].filter(Boolean);
  return `health ran in ${ms} ms (run ok); ${found.length ? found.join('; ') : `all ${checks.length} checks ok`}`;
}

function healthChecks(details: unknown): { check_name: string; status: string }[] | null {
  const checks = (details as { checks?: unknown } | null)?.checks;
  if (!Array.isArray(checks)) return null;
  return (checks as unknown[]).filter((c): c is { check_name: string; status: string } => {
    const check = c as { check_name?: unknown; status?: unknown } | null;
    return typeof check?.check_name === 'string' && typeof check.status === 'string';
  });
}
