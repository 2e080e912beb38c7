import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { attachConsumerMetrics, attachDatabaseMetrics, createMetrics, serveMetrics } from '../../src/index.js';
import { cancelJobs } from '../../src/queue/admin.js';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { accepts, CLI, cleanEnv, eventually, freshDatabase, parsePrometheus, runCli, type ParsedMetrics } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-metrics-'));
// A payload with "boom" always throws; one with "flaky" throws on its first attempt only.
const handler = path.join(dir, 'handler.mjs');
writeFileSync(
  handler,
  `export default async (job) => {
  if (job.payload.boom) throw new Error('boom');
  if (job.payload.flaky && job.retryCount === 0) throw new Error('flaky');
  await new Promise((r) => setTimeout(r, 5));
};
`,
);

/** The value of the one sample of `name` whose labels include `labels` (undefined: none). */
function value(m: ParsedMetrics, name: string, labels: Record<string, string> = {}): number | undefined {
  return m.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function scrape(port: number, host = '127.0.0.1'): Promise<ParsedMetrics> {
  const res = await fetch(`http://${host}:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}

describe('qmaint work --metrics-port', () => {
  it('serves per-queue counters, histograms and process metrics on 127.0.0.1; a port in use exits 2', async () => {
    await enqueueMany(
      t.db,
      'mq',
      Array.from({ length: 5 }, (_, i) => ({ i })),
    );
    const boom = await enqueue(t.db, 'mq', { boom: true }, { maxRetries: 0 });
    const flaky = await enqueue(t.db, 'mq', { flaky: true }, { maxRetries: 3 });
    const child = spawn(process.execPath, [CLI, 'work', '--queue', 'mq', '--handler', handler, '--metrics-port', '0', '--poll-max', '100ms', '--json'], {
      env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const announced = await eventually(() => /serving \/metrics and \/healthz on 127\.0\.0\.1:(\d+)/.exec(stderr), 20_000);
      const port = Number(announced[1]);
      // 5 + boom + flaky twice claimed; flaky retried once then completed; boom failed for good.
      const m = await eventually(async () => {
        const scraped = await scrape(port);
        return value(scraped, 'qmaint_jobs_completed_total', { queue: 'mq' }) === 6 ? scraped : undefined;
      }, 20_000);
      expect(value(m, 'qmaint_jobs_claimed_total', { queue: 'mq' })).toBe(8);
      expect(value(m, 'qmaint_jobs_retried_total', { queue: 'mq' })).toBe(1);
      expect(value(m, 'qmaint_jobs_failed_total', { queue: 'mq' })).toBe(1);
      expect(m.types.get('qmaint_jobs_claimed_total')).toBe('counter');
      expect(m.types.get('qmaint_handler_duration_seconds')).toBe('histogram');
      expect(value(m, 'qmaint_handler_duration_seconds_count', { queue: 'mq', result: 'ok' })).toBe(6);
      expect(value(m, 'qmaint_handler_duration_seconds_count', { queue: 'mq', result: 'error' })).toBe(2);
      expect(value(m, 'qmaint_handler_duration_seconds_bucket', { queue: 'mq', result: 'ok', le: '+Inf' })).toBe(6);
      expect(value(m, 'qmaint_handler_duration_seconds_sum', { queue: 'mq', result: 'ok' })).toBeGreaterThan(0);
      expect(m.types.get('qmaint_claim_latency_seconds')).toBe('histogram');
      expect(value(m, 'qmaint_claim_latency_seconds_count', { queue: 'mq' })).toBe(8);
      // The retried job waited out its backoff (about a second) before its second claim.
      expect(value(m, 'qmaint_claim_latency_seconds_sum', { queue: 'mq' })).toBeGreaterThan(0);
      expect(value(m, 'qmaint_local_buffer_jobs', { state: 'waiting' })).toBe(0);
      expect(value(m, 'qmaint_local_buffer_jobs', { state: 'running' })).toBe(0);
      expect(m.types.get('qmaint_leases_lost_total')).toBe('counter');
      expect(value(m, 'qmaint_process_cpu_user_seconds_total')).toBeGreaterThan(0);
      expect(value(m, 'qmaint_process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(m.types.get('qmaint_nodejs_eventloop_lag_seconds')).toBe('gauge');
      // Every sample belongs to a family with a TYPE, and every name carries the prefix.
      for (const s of m.samples) {
        expect(s.name).toMatch(/^qmaint_/);
        expect(m.types.has(s.name) || m.types.has(s.name.replace(/_(bucket|sum|count)$/, '')), s.name).toBe(true);
      }
      const { rows } = await t.db.query<{ id: string; status: string }>(`SELECT id, status::text FROM qmaint.jobs WHERE id = ANY ($1::bigint[])`, [
        [boom, flaky],
      ]);
      expect(Object.fromEntries(rows.map((r) => [r.id, r.status]))).toEqual({ [boom]: 'failed', [flaky]: 'completed' });

      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ ok: true, queues: ['mq'], stopping: false, held: { waiting: 0, running: 0 } });
      expect((await fetch(`http://127.0.0.1:${port}/nothing`)).status).toBe(404);

      // 127.0.0.1 only: another address of this machine is refused (when it has one).
      const external = Object.values(os.networkInterfaces())
        .flat()
        .find((a) => a && a.family === 'IPv4' && !a.internal);
      if (external) expect(await accepts(external.address, port)).toBe(false);

      // A second worker cannot have the port: exit 2, one line, and it claims nothing.
      await enqueue(t.db, 'other', { i: 1 });
      const r = await runCli(['work', '--queue', 'other', '--handler', handler, '--metrics-port', String(port), '--drain'], { env });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`cannot serve /metrics on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\); give --metrics-host an address`));
      const other = await t.db.query<{ status: string }>(`SELECT status::text FROM qmaint.jobs WHERE queue = 'other'`);
      expect(other.rows.map((x) => x.status)).toEqual(['queued']);

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(JSON.parse(stdout)).toMatchObject({ ok: true, completed: 6, metrics: { host: '127.0.0.1', port } });
      // The server closed with the worker.
      expect(await accepts('127.0.0.1', port)).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });

  it('refuses a --metrics-port that is not a port, with exit 2', async () => {
    for (const port of ['70000', '1.5', '-1']) {
      const r = await runCli(['work', '--queue', 'mq', '--handler', handler, `--metrics-port=${port}`], { env });
      expect(r.code, port).toBe(2);
      expect(r.stderr).toMatch(/--metrics-port .* must be a whole number from 0 to 65535/);
    }
    // A module that fails to load after the server is bound: exit 2, and the process ends (the server closed with the command).
    const r = await runCli(['work', '--queue', 'mq', '--handler', path.join(dir, 'missing.mjs'), '--metrics-port', '0'], { env, timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/serving \/metrics and \/healthz on 127\.0\.0\.1:\d+\n.*handler module .*missing\.mjs not found/);
  });
});

describe('the metrics library', () => {
  it('counts lost leases and timeouts, shares one registry between consumers, and detaches', async () => {
    const registry = createMetrics({ processMetrics: false });
    const options = { listen: false, pollMinMs: 20, pollMaxMs: 50, backoffBaseMs: 1, backoffCapMs: 5 } as const;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = new Consumer(t.db, { ...options, queue: 'lib-a', leaseSeconds: 1, handler: () => held });
    const quick = new Consumer(t.db, {
      ...options,
      queue: 'lib-b',
      timeout: 0.05,
      handler: (job) => new Promise((r) => job.signal.addEventListener('abort', r)),
    });
    attachConsumerMetrics(slow, registry);
    const detach = attachConsumerMetrics(quick, registry);
    expect(attachConsumerMetrics(quick, registry)).toBe(detach);
    const lost = await enqueue(t.db, 'lib-a', {});
    await slow.start();
    const text = async () => parsePrometheus(await registry.metrics());
    await eventually(async () => (await t.db.query(`SELECT 1 FROM qmaint.jobs WHERE id = $1 AND status = 'running'`, [lost])).rowCount === 1);
    expect(value(await text(), 'qmaint_local_buffer_jobs', { state: 'running' })).toBe(1);
    // Another attempt takes the job over: the heartbeat finds the lease lost.
    await t.db.query(`UPDATE qmaint.jobs SET attempt = attempt + 1 WHERE id = $1`, [lost]);
    await eventually(async () => value(await text(), 'qmaint_leases_lost_total', { queue: 'lib-a' }) === 1, 10_000);
    await enqueue(t.db, 'lib-b', {}, { maxRetries: 0 });
    await quick.start();
    await eventually(async () => value(await text(), 'qmaint_jobs_failed_total', { queue: 'lib-b' }) === 1, 10_000);
    const m = await text();
    expect(value(m, 'qmaint_jobs_timed_out_total', { queue: 'lib-b' })).toBe(1);
    expect(value(m, 'qmaint_jobs_claimed_total', { queue: 'lib-a' })).toBeGreaterThanOrEqual(1);
    expect(value(m, 'qmaint_jobs_claimed_total', { queue: 'lib-b' })).toBe(1);
    expect(value(m, 'qmaint_handler_duration_seconds_count', { queue: 'lib-b', result: 'error' })).toBe(1);
    expect(value(m, 'qmaint_handler_duration_seconds_sum', { queue: 'lib-b', result: 'error' })).toBeGreaterThanOrEqual(0.05);
    // Process metrics were not asked for.
    expect(m.samples.some((s) => s.name.startsWith('qmaint_process_'))).toBe(false);
    detach();
    await enqueue(t.db, 'lib-b', {}, { maxRetries: 0 });
    await eventually(async () => (await t.db.query(`SELECT 1 FROM qmaint.jobs WHERE queue = 'lib-b' AND status = 'failed'`)).rowCount === 2, 10_000);
    expect(value(await text(), 'qmaint_jobs_claimed_total', { queue: 'lib-b' })).toBe(1);
    // A running job cancelled in the database: its consumer (polling only) finds out at its next heartbeat.
    const doomed = await enqueue(t.db, 'lib-a', {});
    await eventually(async () => (await t.db.query(`SELECT 1 FROM qmaint.jobs WHERE id = $1 AND status = 'running'`, [doomed])).rowCount === 1);
    expect((await cancelJobs(t.db, { ids: [doomed] }, new Date())).running).toEqual([doomed]);
    await eventually(async () => value(await text(), 'qmaint_jobs_cancelled_total', { queue: 'lib-a' }) === 1, 10_000);
    release();
    await Promise.all([slow.stop(), quick.stop()]);
  });

  it("merges into an application's registry that has the standard process metrics, without a clash", async () => {
    const app = new Registry();
    collectDefaultMetrics({ register: app });
    const ours = createMetrics();
    const merged = Registry.merge([app, ours]);
    const names = (await merged.getMetricsAsJSON()).map((x) => x.name);
    expect(names).toContain('process_cpu_user_seconds_total');
    expect(names).toContain('qmaint_process_cpu_user_seconds_total');
  });

  it('serves the database gauges with qmaint_up; a scrape that cannot read the database serves qmaint_up 0 and none of them', async () => {
    const d = await freshDatabase();
    const registry = createMetrics({ processMetrics: false });
    const errors: Error[] = [];
    attachDatabaseMetrics(d.db, registry, { onError: (e) => errors.push(e) });
    const server = await serveMetrics(registry, { port: 0 });
    try {
      expect(server.host).toBe('127.0.0.1');
      let m = await scrape(server.port);
      expect(value(m, 'qmaint_up')).toBe(1);
      expect(value(m, 'qmaint_xmin_horizon_age_xids')).toBeGreaterThanOrEqual(0);
      expect(value(m, 'qmaint_partitions_ahead', { parent: 'qmaint.jobs' })).toBeGreaterThan(0);
      await d.db.query('ALTER FUNCTION qmaint.metrics_samples(timestamptz) RENAME TO metrics_samples_away');
      m = await scrape(server.port);
      expect(value(m, 'qmaint_up')).toBe(0);
      expect(m.samples.map((s) => s.name)).toEqual(['qmaint_up']);
      expect(errors[0]?.message).toMatch(/metrics_samples/);
      await d.db.query('ALTER FUNCTION qmaint.metrics_samples_away(timestamptz) RENAME TO metrics_samples');
      expect(value(await scrape(server.port), 'qmaint_up')).toBe(1);
      expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
