import { checkConnectionUrl } from '../../config.js';
import { formatDurationMs } from '../../duration.js';
import { badInput } from '../../errors.js';
import { Consumer, type ConsumerOptions } from '../../queue/consumer.js';
import { resolveOptions } from '../../queue/consumer/options.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { handler } from '../context.js';
import { metricsOptions, startMetrics } from '../metrics.js';
import { loadHandler, loadTasks } from '../modules.js';
import { duration } from '../format.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import type { Register } from '../register.js';

interface Args {
  queue?: string;
  handler?: string;
  tasks?: string;
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

const register: Register = (y) => {
  y.command(
    'work',
    'run a consumer that claims and handles jobs of one queue (--queue, --handler) or several (--tasks)',
    (b) =>
      b
        .option('queue', { type: 'string', description: 'queue to consume (with --handler)' })
        .option('handler', { type: 'string', description: 'module whose default export is async (job) => {} (with --queue)' })
        .option('tasks', {
          type: 'string',
          description: 'module whose default export maps queue names to handlers or { handler, concurrency }: one consumer works them all',
        })
        .option('concurrency', {
          type: 'number',
          description: 'handlers running at once, across all queues (setting concurrency, default 10; with --tasks whose queues all set one: their sum)',
        })
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
      if (argv.tasks !== undefined && (argv.queue !== undefined || argv.handler !== undefined)) {
        throw badInput('give either --tasks, or --queue and --handler, not both');
      }
      if (argv.tasks === undefined && (argv.queue === undefined || argv.handler === undefined)) {
        throw badInput('name the work: --queue and --handler (one queue), or --tasks MODULE (several)');
      }
      if (argv.queue !== undefined) checkQueueName(argv.queue);
      if (argv.listenUrl !== undefined) checkConnectionUrl(argv.listenUrl, '--listen-url');
      const lease = readDuration(ctx.out, LEASE, argv.lease, argv.leaseSeconds);
      const pollMax = readDuration(ctx.out, POLL_MAX, argv.pollMax, argv.pollMaxMs);
      const timeout = readDuration(ctx.out, TIMEOUT, argv.timeout);
      const shutdownMs = readDuration(ctx.out, SHUTDOWN, argv.shutdown, argv.shutdownSeconds) ?? 30_000;
      const loaded = ctx.settings({
        concurrency: argv.concurrency,
        batch: argv.batch,
        leaseSeconds: lease === undefined ? undefined : lease / 1000,
        pollMaxMs: pollMax,
        jobTimeoutSeconds: timeout === undefined ? undefined : timeout / 1000,
      });
      const settings = loaded.values;
      // Bound before anything connects: a port that cannot be bound is bad input (exit 2), and nothing changed.
      const metrics = await startMetrics(ctx, argv.metricsPort, argv.metricsHost);
      const mod = argv.tasks !== undefined ? await loadTasks(argv.tasks) : await loadHandler(argv.handler!);
      const work: Pick<ConsumerOptions, 'queue' | 'handler' | 'queues'> = 'tasks' in mod ? { queues: mod.tasks } : { queue: argv.queue!, handler: mod.handler };
      const options: ConsumerOptions = {
        ...work,
        // With --tasks and no concurrency set anywhere, the library's default applies (the sum of the queues' own, else 10).
        concurrency: 'tasks' in mod && loaded.origin.concurrency === 'default' ? undefined : settings.concurrency,
        batch: settings.batch,
        leaseSeconds: settings.leaseSeconds,
        pollMaxMs: settings.pollMaxMs,
        timeout: settings.jobTimeoutSeconds,
        drain: argv.drain,
        mode: argv.mode,
        listen: argv.listen ? (argv.listenUrl ?? true) : false,
      };
      // Checked before connecting: a bad queue name or concurrency in the tasks module is bad input, and nothing is touched.
      const resolved = resolveOptions(options);
      const out = ctx.out;
      const db = await ctx.migratedDb({ max: argv.mode === 'transaction' ? resolved.concurrency + 2 : 5, applicationName: 'qmaint-work' });
      const consumer = new Consumer(db, options);
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
      consumer.on('cancelled', (job) => out.note(`job ${job.id} was cancelled while it ran; its signal was aborted and its result is dropped`));
      consumer.on('listening', (ok) => out.debug(ok ? 'listening for NOTIFY' : 'LISTEN failed; polling'));
      // Only when debug lines are shown: otherwise a line per job would be made for nothing.
      if (out.verbose) consumer.on('completed', (job) => out.debug(`job ${job.id} completed`));
      metrics?.attach(consumer);
      let stoppedBy: NodeJS.Signals | null = null;
      const onSignal = (signal: NodeJS.Signals) => {
        stoppedBy = signal;
        out.note(`${signal}: stopping (running handlers get ${formatDurationMs(shutdownMs)}; unstarted jobs go back to the queue)`);
        void consumer.stop({ deadlineMs: shutdownMs });
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const what =
          resolved.queues.length === 1 && argv.queue !== undefined
            ? `queue ${argv.queue}`
            : `queues ${resolved.queues.map((q) => (q.concurrency < resolved.concurrency ? `${q.name} (${q.concurrency})` : q.name)).join(', ')}`;
        out.note(`working ${what} as ${consumer.workerId} (concurrency ${resolved.concurrency}, ${argv.mode} mode)`);
        await consumer.start();
        const report = await consumer.done;
        const doc = {
          ok: true,
          queue: argv.queue ?? null,
          queues: consumer.queues,
          workerId: consumer.workerId,
          drained: argv.drain && stoppedBy === null,
          signal: stoppedBy,
          ...consumer.stats,
          ...report,
          metrics: metrics && { host: metrics.host, port: metrics.port },
        };
        out.emit(doc, () =>
          out.ok(
            `${consumer.stats.completed} completed, ${consumer.stats.willRetry} will retry, ${consumer.stats.failedForGood} failed for good, ${report.returned} returned to the queue, ${report.abandoned} left to their leases${consumer.stats.cancelled > 0 ? `, ${consumer.stats.cancelled} cancelled while running` : ''}`,
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
