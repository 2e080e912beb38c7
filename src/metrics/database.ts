/**
 * The database's gauges (qmaint.metrics_samples: jobs, queues, partitions,
 * vacuum, maintenance runs), read once per scrape, and qmaint_up.
 */
import { Gauge, type Registry } from 'prom-client';
import type { Db } from '../db.js';

/** One Prometheus sample. */
export interface Sample {
  metric: string;
  labels: Record<string, string>;
  value: number;
}

type MetricType = 'gauge' | 'counter';

/**
 * HELP, TYPE and label names of every metric the database reports
 * (qmaint.metrics_samples), plus qmaint_up and the daemon's own two.
 */
export const METRICS: Record<string, { type: MetricType; help: string; labels: readonly string[] }> = {
  qmaint_up: { type: 'gauge', help: '1 when the last scrape could read the queue database, else 0', labels: [] },
  qmaint_jobs: { type: 'gauge', help: 'Live jobs by status (queued, running)', labels: ['status'] },
  qmaint_queue_jobs: { type: 'gauge', help: 'Live jobs by queue and status', labels: ['queue', 'status'] },
  qmaint_queue_paused: { type: 'gauge', help: '1 for a paused queue (qmaint queues pause), 0 for one that is not', labels: ['queue'] },
  qmaint_oldest_queued_seconds: { type: 'gauge', help: 'Age of the oldest job that is ready to run and still queued, by queue', labels: ['queue'] },
  qmaint_partitions_ahead: { type: 'gauge', help: 'Partitions made ahead that start after now, by parent table', labels: ['parent'] },
  qmaint_runway_seconds: { type: 'gauge', help: 'Seconds from now to the end of the unbroken run of partitions holding now', labels: ['parent'] },
  qmaint_partition_dead_tuples: {
    type: 'gauge',
    help: 'Dead tuples of hot and warm partitions (pg_stat_user_tables.n_dead_tup)',
    labels: ['parent', 'partition', 'state'],
  },
  qmaint_xmin_horizon_age_xids: {
    type: 'gauge',
    help: 'Age in transactions of the oldest xmin held by a session, replication slot or prepared transaction',
    labels: [],
  },
  qmaint_oldest_transaction_seconds: { type: 'gauge', help: 'Age of the oldest transaction that holds back the xmin horizon', labels: [] },
  qmaint_maintenance_last_run_timestamp_seconds: {
    type: 'gauge',
    help: 'Start of the last finished run of each maintenance task (any runner)',
    labels: ['task'],
  },
  qmaint_maintenance_last_run_duration_seconds: { type: 'gauge', help: 'Duration of the last finished run of each maintenance task', labels: ['task'] },
  qmaint_maintenance_last_run_status: {
    type: 'gauge',
    help: '1 for the status of the last finished run of each task (ok, skipped, failed, lock_timeout)',
    labels: ['task', 'status'],
  },
  qmaint_maintenance_last_success_timestamp_seconds: { type: 'gauge', help: 'Start of the last run of each task that ended ok', labels: ['task'] },
  qmaint_daemon_leader: { type: 'gauge', help: '1 when this daemon is the leader that runs the tasks', labels: [] },
  qmaint_daemon_task_runs_total: { type: 'counter', help: 'Task runs this daemon started, by task and status', labels: ['task', 'status'] },
};

/** The metrics qmaint.metrics_samples reports (all of METRICS but qmaint_up and the daemon's own). */
const DATABASE_METRICS = Object.keys(METRICS).filter((m) => m !== 'qmaint_up' && !m.startsWith('qmaint_daemon_'));

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
 * @deprecated qmaint serves its metrics through prom-client now: give
 * {@link attachDatabaseMetrics} a registry (see {@link createMetrics}) and
 * serve `registry.metrics()`. Kept for callers of {@link collectSamples}.
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

/** Options of {@link attachDatabaseMetrics}. */
export interface DatabaseMetricsOptions {
  /** statement_timeout of the query a scrape runs, in ms (default 10000). */
  timeoutMs?: number;
  /** Told about a scrape that could not read the database (qmaint_up is then 0); default: nothing. */
  onError?: (err: Error) => void;
}

/**
 * Serve the queue database's gauges from `registry`: each scrape reads
 * qmaint.metrics_samples once (under a statement_timeout) and sets
 * qmaint_up to 1. A scrape that cannot read the database does not fail: it
 * serves qmaint_up 0 and none of the database's gauges.
 *
 * @param db - the queue database
 * @param registry - where the gauges are registered (e.g. from {@link createMetrics})
 * @param options - the scrape's statement timeout, and where scrape errors go
 * @throws Error (prom-client's) when `registry` already holds a metric of the same name
 */
export function attachDatabaseMetrics(db: Db, registry: Registry, options: DatabaseMetricsOptions = {}): void {
  let inFlight: Promise<void> | null = null;
  // One query per scrape: every gauge's collect() waits for the same read.
  const refresh = (): Promise<void> =>
    (inFlight ??= read().finally(() => {
      inFlight = null;
    }));
  const gauge = (name: string) => {
    const meta = METRICS[name]!;
    return new Gauge({ name, help: meta.help, labelNames: [...meta.labels], registers: [registry], collect: refresh });
  };
  const up = gauge('qmaint_up');
  const gauges = new Map(DATABASE_METRICS.map((name) => [name, gauge(name)]));
  async function read(): Promise<void> {
    let samples: Sample[] | null = null;
    try {
      samples = await collectSamples(db, null, options.timeoutMs);
    } catch (err) {
      options.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
    for (const g of gauges.values()) {
      g.reset();
      g.remove({});
    }
    up.set(samples ? 1 : 0);
    for (const s of samples ?? []) {
      const g = gauges.get(s.metric);
      // A sample the table does not know (a newer SQL function than this code) is not served.
      if (!g || Object.keys(s.labels).some((l) => !METRICS[s.metric]!.labels.includes(l))) continue;
      g.set(s.labels, s.value);
    }
  }
}
