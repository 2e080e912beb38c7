import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { cronAdd } from '../../src/cron/index.js';
import { currentLeader } from '../../src/schedule/leader.js';
import { CLI, cleanEnv, eventually, freshDatabase, parsePrometheus, ROOT, runCli } from '../helpers.js';

interface Event {
  time: string;
  level: string;
  event: string;
  message: string;
  task?: string;
  tick?: string;
  role?: string;
  attempt?: number;
  status?: string;
  runId?: number | null;
  port?: number;
}

/** A `qmaint schedule run --json-lines` child process and the JSON lines it logged. */
class DaemonProcess {
  readonly events: Event[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly child: ChildProcessWithoutNullStreams;
  private stderr = '';

  constructor(url: string, args: string[]) {
    this.child = spawn(process.execPath, [CLI, 'schedule', 'run', '--json-lines', '--verbose', '--database-url', url, '--leader-interval', '200ms', ...args], {
      env: cleanEnv(),
      cwd: ROOT,
    });
    let buffer = '';
    this.child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) this.events.push(JSON.parse(line) as Event);
      }
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => resolve({ code, signal })));
    running.add(this);
  }

  get pid(): number {
    return this.child.pid!;
  }

  waitFor(predicate: (e: Event) => boolean, timeoutMs = 15_000): Promise<Event> {
    return eventually(() => this.events.find(predicate), timeoutMs, 25).catch(() => {
      throw new Error(`daemon ${this.pid} did not log the expected event; stderr: ${this.stderr}\nevents: ${this.events.map((e) => e.message).join('\n')}`);
    });
  }

  runs(): Event[] {
    return this.events.filter((e) => e.event === 'run');
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}

const running = new Set<DaemonProcess>();
afterEach(async () => {
  for (const d of running) {
    d.kill('SIGKILL');
    await d.exited;
  }
  running.clear();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isLeader = (e: Event) => e.event === 'leader' && e.role === 'leader';

describe('qmaint schedule run (the node-cron daemon)', () => {
  it('with two daemons each task runs once per tick: the leader runs it, the standby holds back', async () => {
    const t = await freshDatabase();
    const crons = [
      '--rescue-cron',
      '* * * * * *',
      '--health-cron',
      '* * * * * *',
      '--rotate-cron',
      '*/2 * * * * *',
      '--vacuum-cron',
      'off',
      '--recurring-cron',
      'off',
    ];
    const a = new DaemonProcess(t.url, crons);
    await a.waitFor(isLeader);
    const b = new DaemonProcess(t.url, crons);
    await b.waitFor((e) => e.event === 'started');
    // Let a few ticks pass with both daemons up.
    await b.waitFor((e) => e.event === 'tick' && e.task === 'rotate' && e.role === 'standby');
    await eventually(() => b.events.filter((e) => e.event === 'tick' && e.task === 'rescue').length >= 3, 10_000);
    a.kill('SIGTERM');
    b.kill('SIGTERM');
    expect((await a.exited).code).toBe(0);
    expect((await b.exited).code).toBe(0);

    expect(b.runs()).toEqual([]);
    expect(b.events.some(isLeader)).toBe(false);
    const standbyTicks = b.events.filter((e) => e.event === 'tick' && e.role === 'standby');
    expect(standbyTicks.length).toBeGreaterThanOrEqual(4);
    // The ledger: every tick the standby saw was run exactly once, by the leader.
    const firstTries = a.runs().filter((e) => e.attempt === 1);
    for (const tick of standbyTicks) {
      const ran = firstTries.filter((e) => e.task === tick.task && e.tick === tick.tick);
      expect(ran, `${tick.task} at ${tick.tick}`).toHaveLength(1);
    }
    const perTick = new Map<string, number>();
    for (const e of firstTries) perTick.set(`${e.task} ${e.tick}`, (perTick.get(`${e.task} ${e.tick}`) ?? 0) + 1);
    expect([...perTick.values()].every((n) => n === 1)).toBe(true);
    expect(a.runs().every((e) => e.status === 'ok' || e.status === 'skipped')).toBe(true);
    // ...and the database holds exactly the runs the leader logged.
    const { rows } = await t.db.query<{ id: string }>(`SELECT id FROM qmaint.maintenance_runs WHERE runner = 'daemon' ORDER BY id`);
    expect(rows.map((r) => Number(r.id))).toEqual(
      a
        .runs()
        .map((e) => e.runId)
        .sort((x, y) => x! - y!),
    );
  });

  it('a killed leader is replaced by the standby, which then runs the tasks; SIGTERM stops cleanly', async () => {
    const t = await freshDatabase();
    const crons = ['--rescue-cron', '* * * * * *', '--health-cron', 'off', '--rotate-cron', 'off', '--vacuum-cron', 'off', '--recurring-cron', 'off'];
    const a = new DaemonProcess(t.url, crons);
    await a.waitFor(isLeader);
    await a.waitFor((e) => e.event === 'run');
    const b = new DaemonProcess(t.url, crons);
    await b.waitFor((e) => e.event === 'tick' && e.role === 'standby');
    a.kill('SIGKILL');
    expect((await a.exited).signal).toBe('SIGKILL');
    const killedAt = Date.now();
    const takeover = await b.waitFor(isLeader, 10_000);
    const run = await b.waitFor((e) => e.event === 'run' && Date.parse(e.time) > killedAt);
    expect((await currentLeader(t.db))?.pid).toBeGreaterThan(0);
    const list = await runCli(['schedule', 'list', '--json', '--database-url', t.url]);
    expect(list.json<{ daemon: { leader: { applicationName: string } } }>().daemon.leader.applicationName).toBe('qmaint-daemon');
    expect(Date.parse(run.time)).toBeGreaterThanOrEqual(Date.parse(takeover.time));
    expect(run.status).toBe('ok');
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM qmaint.maintenance_runs WHERE id = $1`, [run.runId]);
    expect(rows[0]!.n).toBe(1);

    b.kill('SIGTERM');
    expect(await b.exited).toEqual({ code: 0, signal: null });
    expect(b.events.at(-1)?.event).toBe('stopped');
    // The leader lock went with it: nobody leads now.
    expect(await currentLeader(t.db)).toBeNull();
  });

  it('retries a failing task with backoff, and serves /healthz and Prometheus /metrics', async () => {
    const t = await freshDatabase();
    // rescue fails twice, then works.
    await t.db.query(`CREATE SEQUENCE public.rescue_calls`);
    await t.db.query(`ALTER FUNCTION qmaint.rescue_expired(timestamptz) RENAME TO rescue_expired_real`);
    await t.db.query(`CREATE FUNCTION qmaint.rescue_expired(p_now timestamptz DEFAULT now()) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('public.rescue_calls') <= 2 THEN RAISE EXCEPTION 'flaky rescue'; END IF;
        RETURN qmaint.rescue_expired_real(p_now);
      END $$`);
    await t.db.query(`SELECT setval('public.rescue_calls', 1, false)`);
    await t.db.query(`INSERT INTO qmaint.jobs (queue, status) VALUES ('mail', 'queued'), ('mail', 'queued'), ('mail', 'queued')`);
    const d = new DaemonProcess(t.url, [
      '--rescue-cron',
      '*/3 * * * * *',
      '--health-cron',
      'off',
      '--rotate-cron',
      'off',
      '--vacuum-cron',
      'off',
      '--recurring-cron',
      'off',
      '--retry-base',
      '100ms',
      '--metrics-port',
      '0',
      '--metrics-host',
      '127.0.0.1',
    ]);
    const { port } = await d.waitFor((e) => e.event === 'metrics');
    const ok = await d.waitFor((e) => e.event === 'run' && e.status === 'ok' && e.task === 'rescue');
    const sameTick = d.events.filter((e) => e.tick === ok.tick && e.task === 'rescue');
    expect(sameTick.map((e) => `${e.event}:${e.status ?? ''}:${e.attempt}`)).toEqual(['run:failed:1', 'retry::2', 'run:failed:2', 'retry::3', 'run:ok:3']);
    expect(sameTick.find((e) => e.event === 'run')!.message).toMatch(/flaky rescue/);
    const recorded = await t.db.query<{ status: string }>(`SELECT status FROM qmaint.maintenance_runs WHERE task = 'rescue' ORDER BY id`);
    expect(recorded.rows.map((r) => r.status)).toEqual(['failed', 'failed', 'ok']);

    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, role: 'leader', database: 'ok' });

    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const metrics = parsePrometheus(await res.text());
    const value = (name: string, labels: Record<string, string> = {}) =>
      metrics.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(value('qmaint_up')).toBe(1);
    expect(value('qmaint_daemon_leader')).toBe(1);
    expect(value('qmaint_jobs', { status: 'queued' })).toBe(3);
    expect(value('qmaint_queue_jobs', { queue: 'mail', status: 'queued' })).toBe(3);
    expect(value('qmaint_oldest_queued_seconds', { queue: 'mail' })).toBeGreaterThanOrEqual(0);
    expect(value('qmaint_partitions_ahead', { parent: 'qmaint.jobs' })).toBeGreaterThan(0);
    expect(value('qmaint_runway_seconds', { parent: 'qmaint.jobs' })).toBeGreaterThan(0);
    expect(value('qmaint_xmin_horizon_age_xids')).toBeGreaterThanOrEqual(0);
    expect(metrics.samples.some((s) => s.name === 'qmaint_partition_dead_tuples' && s.labels.state === 'hot')).toBe(true);
    expect(value('qmaint_maintenance_last_run_status', { task: 'rescue', status: 'ok' })).toBe(1);
    expect(value('qmaint_daemon_task_runs_total', { task: 'rescue', status: 'failed' })).toBe(2);
    expect(value('qmaint_daemon_task_runs_total', { task: 'rescue', status: 'ok' })).toBeGreaterThanOrEqual(1);
    for (const name of new Set(
      metrics.samples.map((s) => s.name).filter((n) => n.startsWith('qmaint_') && !n.startsWith('qmaint_process_') && !n.startsWith('qmaint_nodejs_')),
    ))
      expect(metrics.types.get(name), name).toMatch(/^(gauge|counter)$/);
    // The Node process metrics, under qmaint's prefix.
    expect(value('qmaint_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value('qmaint_process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(metrics.types.get('qmaint_nodejs_eventloop_lag_seconds')).toBe('gauge');

    expect((await fetch(`http://127.0.0.1:${port}/nothing`)).status).toBe(404);
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
  });

  it('runs the recurring task: stores ticks ahead, then enqueues the due one once', async () => {
    const t = await freshDatabase();
    // Added "two minutes ago": the tick of the last minute is stored and due (within the grace).
    await cronAdd(t.db, { name: 'minutely', schedule: '* * * * *', queue: 'daemon-cron' }, new Date(Date.now() - 90_000));
    const d = new DaemonProcess(t.url, [
      '--recurring-cron',
      '* * * * * *',
      '--rescue-cron',
      'off',
      '--health-cron',
      'off',
      '--rotate-cron',
      'off',
      '--vacuum-cron',
      'off',
    ]);
    await d.waitFor((e) => e.event === 'run' && e.task === 'recurring' && e.status === 'ok');
    await eventually(async () => (await t.db.query(`SELECT 1 FROM qmaint.jobs WHERE queue = 'daemon-cron'`)).rowCount! >= 1);
    // Several more runs within the same minute enqueue nothing more for that tick.
    await d.waitFor((e) => e.event === 'run' && e.task === 'recurring' && e.status === 'ok' && d.runs().filter((r) => r.task === 'recurring').length >= 3);
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    const { rows } = await t.db.query<{ jobs: number; enqueued: number; ahead: number }>(
      `SELECT (SELECT count(*)::int FROM qmaint.jobs WHERE queue = 'daemon-cron') AS jobs,
              (SELECT count(*)::int FROM qmaint.cron_ticks WHERE state = 'enqueued') AS enqueued,
              (SELECT count(*)::int FROM qmaint.cron_ticks WHERE state = 'pending' AND tick > now() + interval '6 days') AS ahead`,
    );
    expect(rows[0]!.jobs).toBe(rows[0]!.enqueued);
    expect(rows[0]!.ahead).toBeGreaterThan(0);
  });

  it('a task never overlaps itself: a tick that finds the last run still going is skipped', async () => {
    const t = await freshDatabase();
    await t.db.query(`ALTER FUNCTION qmaint.rescue_expired(timestamptz) RENAME TO rescue_expired_real`);
    await t.db.query(`CREATE FUNCTION qmaint.rescue_expired(p_now timestamptz DEFAULT now()) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(1.5); RETURN qmaint.rescue_expired_real(p_now); END $$`);
    const d = new DaemonProcess(t.url, [
      '--rescue-cron',
      '* * * * * *',
      '--health-cron',
      'off',
      '--rotate-cron',
      'off',
      '--vacuum-cron',
      'off',
      '--recurring-cron',
      'off',
    ]);
    const overlap = await d.waitFor((e) => e.event === 'overlap' && e.task === 'rescue');
    await d.waitFor((e) => e.event === 'run' && e.status === 'ok');
    await sleep(200);
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    expect(d.runs().some((e) => e.tick === overlap.tick)).toBe(false);
    const { rows } = await t.db.query<{ status: string }>(`SELECT status FROM qmaint.maintenance_runs`);
    expect(rows.every((r) => r.status === 'ok')).toBe(true);
  });
});
