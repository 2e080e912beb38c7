// Prometheus metrics: a registry per process (prom-client), a consumer's counters, the database's gauges, and the HTTP server.
export { createMetrics, METRIC_PREFIX } from './registry.js';
export type { MetricsOptions } from './registry.js';
export { attachConsumerMetrics, CLAIM_LATENCY_BUCKETS, HANDLER_BUCKETS } from './consumer.js';
export { attachDatabaseMetrics, collectSamples, renderPrometheus, METRICS } from './database.js';
export type { DatabaseMetricsOptions, Sample } from './database.js';
export { serveMetrics } from './server.js';
export type { HealthBody, MetricsServer, MetricsServerOptions } from './server.js';
