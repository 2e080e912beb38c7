/**
 * The registry a qmaint process serves its metrics from: a fresh prom-client
 * Registry, never prom-client's global one, so an application that embeds
 * qmaint and uses prom-client itself never sees a name clash it did not ask
 * for. The application can serve it, merge it (`Registry.merge`), or hand its
 * own registry to the attach functions instead.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';

/** Prefix of every metric qmaint registers, the Node process metrics included. */
export const METRIC_PREFIX = 'qmaint_';

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /**
   * Register prom-client's Node process metrics (CPU, memory, event loop lag,
   * garbage collection, handles), named `qmaint_process_*` and
   * `qmaint_nodejs_*` (default true).
   */
  processMetrics?: boolean;
}

/**
 * A new, empty prom-client Registry for qmaint's metrics; attach a consumer
 * ({@link attachConsumerMetrics}) or the database's gauges
 * ({@link attachDatabaseMetrics}), then serve it ({@link serveMetrics}) or
 * merge it into the application's own.
 *
 * @param options - whether to add the Node process metrics (default true)
 * @example
 * const registry = createMetrics();
 * attachConsumerMetrics(consumer, registry);
 * const server = await serveMetrics(registry, { port: 9464 });
 */
export function createMetrics(options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  return registry;
}
