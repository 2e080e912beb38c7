/**
 * `qmaint work --metrics-port`: the worker's metrics server, bound before the
 * worker connects and closed when the command ends, however it ends.
 */
import { badInput } from '../errors.js';
import type { HealthBody } from '../metrics/server.js';
import type { Consumer } from '../queue/consumer.js';
import type { Context } from './context.js';

/** The --metrics-port and --metrics-host options of qmaint work. */
export const metricsOptions = {
  'metrics-port': { type: 'number', description: 'serve /metrics (Prometheus) and /healthz on this port (0: any free port)' },
  'metrics-host': { type: 'string', default: '127.0.0.1', description: 'address the metrics server listens on (0.0.0.0: every interface)' },
} as const;

/** A worker's metrics server: where it listens, and how its consumer is counted. */
export interface WorkMetrics {
  host: string;
  port: number;
  /** Count the consumer's jobs, and answer /healthz for it (503 once it stops). */
  attach(consumer: Consumer): void;
}

/**
 * Serve a fresh registry (with the process metrics) on host:port, announce it
 * on stderr, and close it when the command ends; null without a port.
 *
 * @throws QmaintError `bad_input` for a port that is not one, `config` when it cannot be bound (both exit 2)
 */
export async function startMetrics(ctx: Context, port: number | undefined, host: string): Promise<WorkMetrics | null> {
  if (port === undefined) return null;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw badInput(`--metrics-port ${port} must be a whole number from 0 to 65535`);
  // Loaded only with a port: prom-client adds about 70 ms to the start-up of every worker that serves no metrics.
  const [{ attachConsumerMetrics }, { createMetrics }, { serveMetrics }] = await Promise.all([
    import('../metrics/consumer.js'),
    import('../metrics/registry.js'),
    import('../metrics/server.js'),
  ]);
  const registry = createMetrics();
  let health: () => HealthBody = () => ({ ok: false, starting: true });
  const server = await serveMetrics(registry, {
    port,
    host,
    health: () => health(),
    onError: (err) => ctx.out.note(`serving /metrics: ${err.message}`),
  });
  ctx.onClose(() => server.close());
  ctx.out.note(`serving /metrics and /healthz on ${server.host}:${server.port}`);
  return {
    host: server.host,
    port: server.port,
    attach(consumer) {
      attachConsumerMetrics(consumer, registry);
      // Not ready from the signal on (the worker then stops: see work's own signal handler).
      let stopped = false;
      const onSignal = () => (stopped = true);
      const forget = () => void process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
      process.once('SIGTERM', onSignal).once('SIGINT', onSignal);
      ctx.onClose(forget);
      void consumer.done.then(() => {
        stopped = true;
        forget();
      });
      health = () => ({ ok: !stopped, queues: consumer.queues, workerId: consumer.workerId, stopping: stopped, held: consumer.held });
    },
  };
}
