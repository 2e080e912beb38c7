import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Db } from '../db.js';
import { QmaintError } from '../errors.js';

/** One Prometheus sample. */
export interface Sample {
  metric: string;
  labels: Record<string, string>;
  value: number;
}

type MetricType = 'gauge' | 'counter';

/** HELP and TYPE of every metric qmaint serves. */
export const METRICS: Record<string, { type: MetricType; help: string }> = {
  qmaint_up: { type: 'gauge', help: '1 when the last scrape could read the queue database, else 0' },
  qmaint_jobs: { type: 'gauge', help: 'Live jobs by status (queued, running)' },
  qmaint_queue_jobs: { type: 'gauge', help: 'Live jobs by queue and status' },
  qmaint_oldest_queued_seconds: { type: 'gauge', help: 'Age of the oldest job that is ready to run and still queued, by queue' },
  qmaint_partitions_ahead: { type: 'gauge', help: 'Partitions made ahead that start after now, by parent table' },
  qmaint_runway_seconds: { type: 'gauge', help: 'Seconds from now to the end of the unbroken run of partitions holding now' },
  qmaint_partition_dead_tuples: { type: 'gauge', help: 'Dead tuples of hot and warm partitions (pg_stat_user_tables.n_dead_tup)' },
  qmaint_xmin_horizon_age_xids: { type: 'gauge', help: 'Age in transactions of the oldest xmin held by a session, replication slot or prepared transaction' },
  qmaint_oldest_transaction_seconds: { type: 'gauge', help: 'Age of the oldest transaction that holds back the xmin horizon' },
  qmaint_maintenance_last_run_timestamp_seconds: { type: 'gauge', help: 'Start of the last finished run of each maintenance task (any runner)' },
  qmaint_maintenance_last_run_duration_seconds: { type: 'gauge', help: 'Duration of the last finished run of each maintenance task' },
  qmaint_maintenance_last_run_status: { type: 'gauge', help: '1 for the status of the last finished run of each task (ok, skipped, failed, lock_timeout)' },
  qmaint_maintenance_last_success_timestamp_seconds: { type: 'gauge', help: 'Start of the last run of each task that ended ok' },
  qmaint_daemon_leader: { type: 'gauge', help: '1 when this daemon is the leader that runs the tasks' },
  qmaint_daemon_task_runs_total: { type: 'counter', help: 'Task runs this daemon started, by task and status' },
};

/**
 * The database's samples (qmaint.metrics_samples), as of now (default: the
 * server's clock), in one transaction under a statement_timeout so a scrape
 * never hangs on a busy server. SET LOCAL keeps it working through poolers.
 *
 * @param db - the database
 * @param now - the time the samples are for (default null: the server's clock)
 * @param timeoutMs - statement_timeout of the scrape (default 10000)
 */
export async function collectSamples(db: Db, now: Date | null = null, timeoutMs = 10_000): Promise<Sample[]> {
  const rows = await db.transaction(async (client) => {
    await client.query(`SELECT set_config('statement_timeout', $1, true)`, [`${timeoutMs}ms`]);
    const result = await client.query<{ metric: string; labels: Record<string, string>; value: number }>(
      'SELECT metric, labels, value FROM qmaint.metrics_samples($1)',
      [now],
    );
    return result.rows;
  });
  return rows.map((r) => ({ metric: r.metric, labels: r.labels, value: Number(r.value) }));
}

const escapeLabel = (value: string) => value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/**
 * Prometheus text exposition format 0.0.4: samples grouped by metric, each group with HELP and TYPE.
 *
 * @param samples - from {@link collectSamples}
 */
export function renderPrometheus(samples: Sample[]): string {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const list = groups.get(s.metric) ?? [];
    list.push(s);
    groups.set(s.metric, list);
  }
  const lines: string[] = [];
  for (const [metric, list] of groups) {
    const meta = METRICS[metric];
    if (meta) lines.push(`# HELP ${metric} ${meta.help}`, `# TYPE ${metric} ${meta.type}`);
    for (const s of list) {
      const labels = Object.entries(s.labels)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`)
        .join(',');
      lines.push(`${metric}${labels ? `{${labels}}` : ''} ${formatValue(s.value)}`);
    }
  }
  return lines.join('\n') + '\n';
}

export interface MetricsSource {
  /** Everything to serve at /metrics; throwing makes it serve qmaint_up 0 plus local samples. */
  samples(): Promise<Sample[]>;
  /** Samples that need no database (the daemon's own state). */
  localSamples(): Sample[];
  /** /healthz body; ok false answers 503. */
  health(): Promise<{ ok: boolean } & Record<string, unknown>>;
}

/**
 * An HTTP server with /metrics (Prometheus text) and /healthz (JSON) on host
 * (default 127.0.0.1: this machine only). Port 0 picks a free port.
 */
export async function startMetricsServer(
  source: MetricsSource,
  port: number,
  host = '127.0.0.1',
): Promise<{ host: string; port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      void serveMetrics(source, res);
    } else if (path === '/healthz') {
      void serveHealth(source, res);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new QmaintError(
          'config',
          `cannot serve /metrics on ${host}:${port} (${err.code ?? err.message}); give metricsHost an address of this machine (127.0.0.1, 0.0.0.0) and metricsPort a free port`,
          { cause: err, option: ['metricsHost', 'metricsPort'] },
        ),
      );
    });
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function serveMetrics(source: MetricsSource, res: http.ServerResponse): Promise<void> {
  let samples: Sample[];
  try {
    samples = [{ metric: 'qmaint_up', labels: {}, value: 1 }, ...(await source.samples())];
  } catch {
    samples = [{ metric: 'qmaint_up', labels: {}, value: 0 }];
  }
  samples.push(...source.localSamples());
  res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(renderPrometheus(samples));
}

async function serveHealth(source: MetricsSource, res: http.ServerResponse): Promise<void> {
  const body = await source.health().catch((err: Error) => ({ ok: false, error: err.message }));
  res.writeHead(body.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
}
