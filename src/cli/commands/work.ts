import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { checkConnectionUrl } from '../../config.js';
import { formatDurationMs } from '../../duration.js';
import { badInput } from '../../errors.js';
import { Consumer, type Handler } from '../../queue/consumer.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { handler } from '../context.js';
import { metricsOptions, startMetrics } from '../metrics.js';
import { duration } from '../format.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import type { Register } from '../register.js';

interface Args {
  queue: string;
  handler: string;
  concurrency?: number;
  batch?: number;
  lease?: string;
  leaseSeconds?: number;
  pollMax?: string;
  pollMaxMs?: number;
  timeout?: string;
  drain: boolean;
  mode: 'lease' | 'transaction';
  listen: boolean;
  listenUrl?: string;
  shutdown?: string;
  shutdownSeconds?: number;
  metricsPort?: number;
  metricsHost: string;
}

const LEASE: DurationFlag = { flag: 'lease', min: 1000, max: 86_400_000, step: 1000, old: { flag: 'lease-seconds', unit: 's' } };
const POLL_MAX: DurationFlag = { flag: 'poll-max', min: 10, max: 600_000, old: { flag: 'poll-max-ms', unit: 'ms' } };
const TIMEOUT: DurationFlag = { flag: 'timeout', min: 1, max: 2_147_483_000, bare: 's' };
const SHUTDOWN: DurationFlag = { flag: 'shutdown', min: 0, max: 86_400_000, old: { flag: 'shutdown-seconds', unit: 's' } };

/**
 * Import the handler module; anything wrong with it is bad input (exit 2), in
 * one line. An optional `close` export is called once the consumer stopped,
 * so a module holding pools or timers lets the process exit.
 */
export async function loadHandler(file: string): Promise<{ handler: Handler; close?: () => unknown }> {
  const full = path.resolve(file);
  if (!existsSync(full)) throw badInput(`handler module ${file} not found; give the path of a module whose default export is async (job) => {}`);
  let mod: { default?: unknown; close?: unknown };
  try {
    mod = (await import(pathToFileURL(full).href)) as { default?: unknown; close?: unknown };
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    throw badInput(`handler module ${file} failed to load (${message}); fix the module`);
  }
  if (typeof mod.default !== 'function') throw badInput(`handler module ${file} has no default export function; export default async (job) => {}`);
  const close = typeof mod.close === 'function' ? (mod.close as () => unknown) : undefined;
  return { handler: mod.default as Handler, ...(close ? { close } : {}) };
}

const register: Register = (y) => {
  y.command(
    'work',
    'run a consumer that claims and handles jobs of one queue',
    (b) =>
      b
        .option('queue', { type: 'string', demandOption: true, description: 'queue to consume' })
        .option('handler', { type: 'string', demandOption: true, description: 'module whose default export is async (job) => {}' })
        .option('concurrency', { type: 'number', description: 'handlers running at once (setting concurrency, default 10)' })
        .option('batch', { type: 'number', description: 'jobs claimed per statement (setting batch, default 100)' })
        .options(durationOptions(LEASE, 'lease of a claimed job, whole seconds (setting leaseSeconds, default 60s)'))
        .options(durationOptions(POLL_MAX, 'longest idle poll interval (setting pollMaxMs, default 5s)'))
        .options(durationOptions(TIMEOUT, 'how long a handler may run when its job has no timeout of its own (setting jobTimeoutSeconds, default 15m)'))
        .option('drain', { type: 'boolean', default: false, description: 'exit 0 once no job of the queue is ready to run now' })
        .option('mode', {
          choices: ['lease', 'transaction'] as const,
          default: 'lease' as const,
          description: 'lease: claim in batches under a lease; transaction: one job per transaction (job.client)',
        })
        .option('listen', { type: 'boolean', default: true, description: 'wake on NOTIFY (--no-listen: poll only, e.g. behind PgBouncer)' })
        .option('listen-url', { type: 'string', description: 'direct PostgreSQL URL for LISTEN when --database-url goes through PgBouncer' })
        .options(durationOptions(SHUTDOWN, 'on SIGINT/SIGTERM, how long running handlers may finish (default 30s)'))
        .options(metricsOptions),
    handler<Args>(async (ctx, argv) => {
      checkQueueName(argv.queue);
      if (argv.listenUrl !== undefined) checkConnectionUrl(argv.listenUrl, '--listen-url');
      const lease = readDuration(ctx.out, LEASE, argv.lease, argv.leaseSeconds);
      const pollMax = readDuration(ctx.out, POLL_MAX, argv.pollMax, argv.pollMaxMs);
      const timeout = readDuration(ctx.out, TIMEOUT, argv.timeout);
      const shutdownMs = readDuration(ctx.out, SHUTDOWN, argv.shutdown, argv.shutdownSeconds) ?? 30_000;
      const settings = ctx.settings({
        concurrency: argv.concurrency,
        batch: argv.batch,
        leaseSeconds: lease === undefined ? undefined : lease / 1000,
        pollMaxMs: pollMax,
        jobTimeoutSeconds: timeout === undefined ? undefined : timeout / 1000,
      }).values;
      // Bound before anything connects: a port that cannot be bound is bad input (exit 2), and nothing changed.
      const metrics = await startMetrics(ctx, argv.metricsPort, argv.metricsHost);
      const mod = await loadHandler(argv.handler);
      const out = ctx.out;
      const db = await ctx.migratedDb({ max: argv.mode === 'transaction' ? settings.concurrency + 2 : 5, applicationName: 'qmaint-work' });
      const consumer = new Consumer(db, {
        queue: argv.queue,
        handler: mod.handler,
        concurrency: settings.concurrency,
        batch: settings.batch,
        leaseSeconds: settings.leaseSeconds,
        pollMaxMs: settings.pollMaxMs,
        timeout: settings.jobTimeoutSeconds,
        drain: argv.drain,
        mode: argv.mode,
        listen: argv.listen ? (argv.listenUrl ?? true) : false,
      });
      consumer.on('failed', (job, error, outcome) => {
        const what = outcome.status === 'failed' ? 'failed for good' : `will retry at ${outcome.runAt.toISOString()}`;
        // The first line of the stored error; a plain Error's name adds nothing.
        out.note(`job ${job.id} ${what}: ${error.split('\n')[0]!.replace(/^Error: /, '')}`);
      });
      consumer.on('db-error', (err, during) => out.note(`database error during ${during}: ${err.message} (retrying)`));
      consumer.on('lease-lost', (job) =>
        out.note(`lost the lease of job ${job.id} (attempt ${job.attempt}); its result is dropped, another attempt may run it`),
      );
      consumer.on('timeout', (job) => out.note(`job ${job.id} timed out after ${duration(job.timeout)}; its signal was aborted`));
      consumer.on('listening', (ok) => out.debug(ok ? 'listening for NOTIFY' : 'LISTEN failed; polling'));
      consumer.on('completed', (job) => out.debug(`job ${job.id} completed`));
      metrics?.attach(consumer, argv.queue);
      let stoppedBy: NodeJS.Signals | null = null;
      const onSignal = (signal: NodeJS.Signals) => {
        stoppedBy = signal;
        out.note(`${signal}: stopping (running handlers get ${formatDurationMs(shutdownMs)}; unstarted jobs go back to the queue)`);
        void consumer.stop({ deadlineMs: shutdownMs });
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        out.note(`working queue ${argv.queue} as ${consumer.workerId} (concurrency ${settings.concurrency}, ${argv.mode} mode)`);
        await consumer.start();
        const report = await consumer.done;
        const doc = {
          ok: true,
          queue: argv.queue,
          workerId: consumer.workerId,
          drained: argv.drain && stoppedBy === null,
          signal: stoppedBy,
          ...consumer.stats,
          ...report,
          metrics: metrics && { host: metrics.host, port: metrics.port },
        };
        out.emit(doc, () =>
          out.ok(
            `${consumer.stats.completed} completed, ${consumer.stats.willRetry} will retry, ${consumer.stats.failedForGood} failed for good, ${report.returned} returned to the queue, ${report.abandoned} left to their leases`,
          ),
        );
      } finally {
        await mod.close?.();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    }),
  );
};

export default register;
