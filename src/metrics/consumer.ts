/**
 * A consumer's counters, histograms and buffer gauge, fed by its events from
 * outside: the consumer knows nothing of metrics.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Consumer, ConsumerEvents } from '../queue/consumer.js';

/** Buckets of qmaint_handler_duration_seconds: from 5 ms to the one-hour default of a job's timeout range. */
export const HANDLER_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** Buckets of qmaint_claim_latency_seconds: from 10 ms to an hour of waiting. */
export const CLAIM_LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/** The consumer metrics of one registry, shared by every consumer attached to it. */
interface Families {
  claimed: Counter<'queue'>;
  completed: Counter<'queue'>;
  retried: Counter<'queue'>;
  failed: Counter<'queue'>;
  cancelled: Counter<'queue'>;
  timedOut: Counter<'queue'>;
  leasesLost: Counter<'queue'>;
  rescued: Counter<'outcome'>;
  dbErrors: Counter<'step'>;
  handlerSeconds: Histogram<'queue' | 'result'>;
  claimLatency: Histogram<'queue'>;
  /** Attached consumers and how to detach each; the buffer gauge sums over them. */
  consumers: Map<Consumer, () => void>;
}

const families = new WeakMap<Registry, Families>();

function familiesOf(registry: Registry): Families {
  const known = families.get(registry);
  if (known) return known;
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) => new Counter<L>({ name, help, labelNames, registers });
  const consumers = new Map<Consumer, () => void>();
  const made: Families = {
    claimed: counter('qmaint_jobs_claimed_total', 'Jobs claimed by consumers of this process, by queue', ['queue']),
    completed: counter('qmaint_jobs_completed_total', 'Jobs whose completion was recorded, by queue', ['queue']),
    retried: counter('qmaint_jobs_retried_total', 'Failed attempts recorded with retries left: the job went back to the queue, by queue', ['queue']),
    cancelled: counter(
      'qmaint_jobs_cancelled_total',
      'Running jobs cancelled while this process held them (their handlers aborted, results dropped), by queue',
      ['queue'],
    ),
    failed: counter('qmaint_jobs_failed_total', 'Failed attempts recorded with no retry left: the job failed for good, by queue', ['queue']),
    timedOut: counter('qmaint_jobs_timed_out_total', "Attempts whose handler outlived the job's timeout (each also counts as retried or failed), by queue", [
      'queue',
    ]),
    leasesLost: counter(
      'qmaint_leases_lost_total',
      'Attempts that lost their job (lease ran out, job rescued or claimed again): their result was dropped, by queue',
      ['queue'],
    ),
    rescued: counter('qmaint_jobs_rescued_total', "Jobs whose lease ran out, put back (requeued) or failed by this process's rescuer, any queue", ['outcome']),
    dbErrors: counter('qmaint_consumer_db_errors_total', 'Consumer steps that failed on the database and are retried, by step', ['step']),
    handlerSeconds: new Histogram({
      name: 'qmaint_handler_duration_seconds',
      help: 'Time handlers ran, by queue and result (ok, error: threw, timed out or was aborted)',
      labelNames: ['queue', 'result'],
      buckets: HANDLER_BUCKETS,
      registers,
    }),
    claimLatency: new Histogram({
      name: 'qmaint_claim_latency_seconds',
      help: 'Time from when a job was ready to run (its run_at, server clock) to its claim (this host clock), by queue',
      labelNames: ['queue'],
      buckets: CLAIM_LATENCY_BUCKETS,
      registers,
    }),
    consumers,
  };
  new Gauge({
    name: 'qmaint_local_buffer_jobs',
    help: "Jobs held by this process's consumers: claimed and waiting for a handler slot, or running",
    labelNames: ['state'],
    registers,
    collect() {
      let waiting = 0;
      let running = 0;
      for (const c of consumers.keys()) {
        waiting += c.held.waiting;
        running += c.held.running;
      }
      this.set({ state: 'waiting' }, waiting);
      this.set({ state: 'running' }, running);
    },
  });
  families.set(registry, made);
  return made;
}

/**
 * Count what `consumer` does in `registry`'s metrics: jobs claimed,
 * completed, retried and failed per queue, timeouts, lost leases, rescues,
 * database errors, handler durations, claim latency, and the jobs it holds
 * (see docs/metrics.md for each metric). Several consumers can share one
 * registry; attaching the same consumer twice counts it once.
 *
 * @param consumer - the consumer to observe
 * @param registry - where the metrics live (e.g. from {@link createMetrics})
 * @returns a function that stops observing the consumer (its counts stay)
 * @throws Error (prom-client's) when `registry` already holds another metric of one of these names
 * @example
 * const registry = createMetrics();
 * attachConsumerMetrics(consumer, registry);
 * app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()));
 */
export function attachConsumerMetrics(consumer: Consumer, registry: Registry): () => void {
  const m = familiesOf(registry);
  const attached = m.consumers.get(consumer);
  if (attached) return attached;
  const off: (() => void)[] = [];
  const on = <K extends keyof ConsumerEvents>(event: K, listener: (...args: ConsumerEvents[K]) => void) => {
    // EventEmitter's listener type is conditional on K, which TypeScript cannot resolve for a generic K.
    const untyped = listener as Parameters<typeof consumer.on<K>>[1];
    consumer.on<K>(event, untyped);
    off.push(() => consumer.off<K>(event, untyped));
  };
  on('job-claimed', (job) => {
    m.claimed.inc({ queue: job.queue });
    // run_at is the server's clock, now this host's: a skew below zero counts as no wait.
    m.claimLatency.observe({ queue: job.queue }, Math.max(0, (Date.now() - job.runAt.getTime()) / 1000));
  });
  on('completed', (job) => m.completed.inc({ queue: job.queue }));
  on('failed', (job, _error, outcome) => (outcome.status === 'failed' ? m.failed : m.retried).inc({ queue: job.queue }));
  on('timeout', (job) => m.timedOut.inc({ queue: job.queue }));
  on('cancelled', (job) => m.cancelled.inc({ queue: job.queue }));
  on('lease-lost', (job) => m.leasesLost.inc({ queue: job.queue }));
  on('rescued', (r) => {
    m.rescued.inc({ outcome: 'requeued' }, r.requeued);
    m.rescued.inc({ outcome: 'failed' }, r.failed);
  });
  // "fail (job 12 left to its lease)" counts as fail: one series per step, not per job.
  on('db-error', (_err, during) => m.dbErrors.inc({ step: during.replace(/\s*\(.*$/s, '') }));
  on('handled', (job, seconds, error) => m.handlerSeconds.observe({ queue: job.queue, result: error === null ? 'ok' : 'error' }, seconds));
  const detach = () => {
    for (const f of off.splice(0)) f();
    m.consumers.delete(consumer);
  };
  m.consumers.set(consumer, detach);
  return detach;
}
