// The fault-injection harness behind test/chaos/ledger.test.ts and `npm run chaos`.
//
// It starts a private embedded PostgreSQL (its own temp dir and free port, so
// restarting it disturbs no one else), migrates it, applies a policy of
// one-minute partitions with a one-minute retention (archived, so retired rows
// can still be checked), and then, on a virtual clock that runs one minute per
// `tickMs`:
//   - a producer enqueues the jobs in waves stamped with the virtual time,
//     recording every id in chaos_enqueued in the same statement;
//   - consumers are child processes running the built `qmaint work` with
//     scripts/chaos/ledger-handler.mjs, which writes one chaos_ledger row per
//     handler execution (with the worker's pid);
//   - rotation runs in a loop (`rotate` of the library, now = the virtual time),
//     so partitions are created, stragglers moved and partitions retired under load;
//   - consumers are killed with SIGKILL (and replaced), and their connections
//     (the consumer's own and the handler's ledger pool) are terminated with
//     pg_terminate_backend;
//   - the server is restarted once, right after a wave landed (the busy queue
//     has work) while the consumers of a second queue have nothing to do; that
//     queue gets its jobs once the server is back.
// Then it waits (bounded) for the queues to drain, stops the consumers with
// SIGTERM and checks the invariants. Everything it starts is stopped in
// `cleanup()`, which also runs on process exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, quoteIdent, type Db } from '../../src/db.js';
import { ensureEmbedded, stopEmbedded } from '../../src/embedded.js';
import { migrate } from '../../src/migrate.js';
import { applyPolicies, rotate } from '../../src/partitions/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(ROOT, 'bin', 'qmaint.js');
const HANDLER = path.join(ROOT, 'scripts', 'chaos', 'ledger-handler.mjs');
const POLICY = path.join(ROOT, 'scripts', 'chaos', 'policy.json');

/** The queue that is busy when the server restarts. */
export const BUSY_QUEUE = 'chaos';
/** The queue whose consumers are idle when the server restarts; its jobs come after. */
export const IDLE_QUEUE = 'chaos_idle';
/** High enough that repeated kills never fail a job for good: every job must end completed. */
const MAX_RETRIES = 100;

export interface ChaosOptions {
  /** Jobs of the busy queue. */
  jobs: number;
  /** Jobs of the idle queue, enqueued once the server is back. */
  idleJobs: number;
  /** Consumers of the busy queue and of the idle queue (kept at this number: each kill is replaced). */
  busyConsumers: number;
  idleConsumers: number;
  /** `qmaint work` settings of every consumer. */
  concurrency: number;
  batch: number;
  leaseSeconds: number;
  /** Longest idle poll interval: short, so idle consumers query the server while it restarts. */
  pollMaxMs: number;
  /** How long the producer takes to enqueue the busy queue's jobs; kills and terminations run during it. */
  produceMs: number;
  /** Jobs per producer statement. */
  waveSize: number;
  /** Mean time between SIGKILLs (0: none). */
  killEveryMs: number;
  /** Mean time between pg_terminate_backend calls (0: none). */
  terminateEveryMs: number;
  /** Restart the server after this fraction of the waves (null: no restart). */
  restartAt: number | null;
  /** Real milliseconds per virtual minute (one partition). */
  tickMs: number;
  /** Longest wait for the queues to drain once the producer is done. */
  drainTimeoutMs: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export const TEST_OPTIONS: ChaosOptions = {
  jobs: 20_000,
  idleJobs: 500,
  busyConsumers: 4,
  idleConsumers: 4,
  concurrency: 8,
  batch: 25,
  leaseSeconds: 6,
  pollMaxMs: 100,
  produceMs: 20_000,
  waveSize: 500,
  killEveryMs: 2_500,
  terminateEveryMs: 250,
  restartAt: 0.6,
  tickMs: 2_000,
  drainTimeoutMs: 60_000,
};

export interface Kill {
  pid: number;
  queue: string;
  /** ms since the run started. */
  at: number;
}

export interface Termination {
  backendPid: number;
  /** The consumer process that owned the connection. */
  workerPid: number;
  application: string;
  at: number;
}

export interface Exit {
  pid: number;
  queue: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  /** The end of its stderr. */
  stderr: string;
}

export type DuplicateReason = 'killed' | 'terminated' | 'restart';

export interface Duplicate {
  jobId: string;
  executions: number;
  /** One per re-execution: why the execution before it did not complete, or null when nothing explains it. */
  reasons: (DuplicateReason | null)[];
  pids: number[];
  /** When each execution ran (ms since the start). */
  ats: number[];
  /** A consumer said it lost the lease of this job ("lost the lease of job …" on its stderr). */
  leaseLostNoted: boolean;
  /** The job's final retry_count and the first line of its last_error (the rescuer writes why it put the job back). */
  retryCount: number | null;
  lastError: string | null;
}

export interface RestartReport {
  /** ms since the start: the stop was asked for, the server was down, the server was up again. */
  stopAt: number;
  downAt: number;
  upAt: number;
  /** Queued and running jobs per queue just before the stop. */
  backlog: Record<string, { queued: number; running: number }>;
  /** Consumers alive (not killed) per queue when the server went down. */
  consumers: Record<string, number>;
  /** After upAt: first handler execution of the busy queue, last execution of the idle queue (ms after up). */
  busyResumedMs: number | null;
  idleDoneMs: number | null;
  /** From the server being up again to the queues drained. */
  drainMs: number | null;
}

export interface ChaosReport {
  options: Omit<ChaosOptions, 'log'>;
  serverVersion: string;
  enqueued: Record<string, number>;
  ledgerRows: number;
  kills: Kill[];
  terminations: Termination[];
  restart: RestartReport | null;
  rotation: { runs: number; errors: string[]; actions: Record<string, number> };
  duplicates: Duplicate[];
  /** Enqueued jobs not completed: vanished (no row anywhere), another status, or completed with no ledger row. */
  lost: { vanished: string[]; notCompleted: { id: string; status: string }[]; unhandled: string[] };
  /** Ledger rows of ids never enqueued. */
  phantoms: string[];
  /** What the consumers said on stderr: "database error during X: …" per X and message, and jobs whose lease they lost. */
  consumerNotes: { dbErrors: Record<string, number>; leaseLost: number };
  /** Queued or running jobs left at the end, per status (jobs and retired partitions). */
  live: Record<string, number>;
  /** Consumer exits the harness did not cause. */
  unexpectedExits: Exit[];
  /** Consumers that did not exit 0 within the deadline after SIGTERM. */
  stopFailures: Exit[];
  drained: boolean;
  /** Messages of steps that did not finish (a drain that timed out, a failed final check). */
  incidents: string[];
  timings: { setupMs: number; produceMs: number; drainMs: number; totalMs: number };
  /** Busy-queue jobs per second, from the first wave to the drained queue. */
  throughput: number;
  /** Every broken invariant in one line each; empty when the run proved what it should. */
  violations: string[];
}

interface Worker {
  pid: number;
  queue: string;
  child: ChildProcess;
  stderr: string;
  /** It said "working queue …": connected, migrated schema checked, consuming. */
  ready: boolean;
  fate: 'running' | 'killed' | 'stopping';
  exited: Promise<Exit>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const pick = <T>(items: T[]): T | undefined => items[Math.floor(Math.random() * items.length)];
/** A random wait around a mean (between half and one and a half of it). */
const around = (ms: number) => ms / 2 + Math.random() * ms;

export class ChaosRun {
  private readonly o: ChaosOptions;
  private readonly log: (line: string) => void;
  private home: string | null = null;
  private port = 0;
  private url = '';
  private db: Db | null = null;
  private readonly workers = new Set<Worker>();
  private readonly allExits: Promise<Exit>[] = [];
  private readonly leaseLost = new Set<string>();
  private t0 = 0;
  private clock0 = 0;
  private shuttingDown = false;
  private serverDown = false;
  /** No kills from just before the restart until the server is up (so every consumer is settled when it goes down). */
  private restarting = false;
  private readonly report: ChaosReport;
  /** If the process dies before cleanup(): no consumer and no server outlives it (the server gets an immediate shutdown). */
  private readonly onProcessExit = () => {
    for (const w of this.workers) w.child.kill('SIGKILL');
    const pidFile = this.home ? path.join(this.home, 'data', 'postmaster.pid') : null;
    if (pidFile && existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8').split('\n')[0]), 'SIGQUIT');
      } catch {
        // already gone
      }
    }
  };

  constructor(options: ChaosOptions) {
    this.o = options;
    this.log = options.log ?? (() => undefined);
    const shown: Partial<ChaosOptions> = { ...options };
    delete shown.log;
    this.report = {
      options: shown as Omit<ChaosOptions, 'log'>,
      serverVersion: '',
      enqueued: {},
      ledgerRows: 0,
      kills: [],
      terminations: [],
      restart: null,
      rotation: { runs: 0, errors: [], actions: {} },
      duplicates: [],
      lost: { vanished: [], notCompleted: [], unhandled: [] },
      phantoms: [],
      consumerNotes: { dbErrors: {}, leaseLost: 0 },
      live: {},
      unexpectedExits: [],
      stopFailures: [],
      drained: false,
      incidents: [],
      timings: { setupMs: 0, produceMs: 0, drainMs: 0, totalMs: 0 },
      throughput: 0,
      violations: [],
    };
  }

  private now(): number {
    return Date.now() - this.t0;
  }

  /** The virtual clock: one minute per tickMs from clock0 (a minute boundary, after the partitions migrate made). */
  private virtualNow(): Date {
    return new Date(this.clock0 + ((Date.now() - this.t0) * 60_000) / this.o.tickMs);
  }

  /** Run the whole scenario; always cleans up. The report lists every violated invariant. */
  async run(): Promise<ChaosReport> {
    if (!existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run npm run build first (the consumers are the built CLI)');
    process.once('exit', this.onProcessExit);
    this.t0 = Date.now();
    try {
      await this.setup();
      this.report.timings.setupMs = this.now();
      await this.scenario();
      await this.verify();
    } finally {
      await this.cleanup();
    }
    this.report.timings.totalMs = this.now();
    this.report.violations = violations(this.report);
    return this.report;
  }

  private async setup(): Promise<void> {
    this.home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-chaos-'));
    const server = await ensureEmbedded({ home: this.home, throwaway: true });
    this.port = server.port;
    this.url = server.url;
    this.report.serverVersion = server.version;
    this.log(`private PostgreSQL ${server.version} on 127.0.0.1:${server.port} (${this.home})`);
    this.db = await connect({ databaseUrl: this.url, max: 6, applicationName: 'chaos-harness' });
    // rotate() holds a pooled client (the session maintenance lock) across
    // statements; when the restart drops it between two of them, node-pg emits
    // 'error' on that checked-out client, which has no listener: the harness
    // would die. Swallow it here; the statement that follows fails and the
    // rotate loop records the failed run.
    const guarded = new WeakSet<object>();
    this.db.pool.on('acquire', (client) => {
      if (guarded.has(client)) return;
      guarded.add(client);
      client.on('error', () => undefined);
    });
    await migrate(this.db);
    await applyPolicies(this.db, [POLICY]);
    await this.db.query(`CREATE TABLE chaos_enqueued (job_id bigint PRIMARY KEY, queue text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
    await this.db.query(
      `CREATE TABLE chaos_ledger (seq bigserial PRIMARY KEY, job_id bigint NOT NULL, queue text NOT NULL, retry_count int NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    );
    // The virtual clock starts where the partitions migrate made (whole days) end,
    // so that rotation makes one-minute partitions from the first tick on.
    const { rows } = await this.db.query<{ end: Date | null }>(`SELECT max(upper_bound) AS end FROM qmaint.partitions_of('qmaint.jobs') WHERE NOT is_default`);
    const start = Math.max(Math.floor(Date.now() / 60_000) * 60_000, rows[0]?.end?.getTime() ?? 0);
    this.clock0 = start - ((Date.now() - this.t0) * 60_000) / this.o.tickMs;
    await this.rotateOnce();
    for (let i = 0; i < this.o.busyConsumers; i++) this.spawnWorker(BUSY_QUEUE);
    for (let i = 0; i < this.o.idleConsumers; i++) this.spawnWorker(IDLE_QUEUE);
    // The faults start once every consumer is at work (bounded: a slow start is no failure).
    for (let i = 0; i < 300 && this.alive().some((w) => !w.ready); i++) await sleep(100);
  }

  // ---------------------------------------------------------------------------
  // Consumers

  private spawnWorker(queue: string): void {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (k !== 'DATABASE_URL' && !k.startsWith('PG') && !k.startsWith('QMAINT_')) env[k] = v;
    Object.assign(env, { DATABASE_URL: this.url, NO_COLOR: '1' });
    const args = [
      CLI,
      'work',
      '--queue',
      queue,
      '--handler',
      HANDLER,
      '--concurrency',
      String(this.o.concurrency),
      '--batch',
      String(this.o.batch),
      '--lease-seconds',
      String(this.o.leaseSeconds),
      '--poll-max-ms',
      String(this.o.pollMaxMs),
      '--shutdown-seconds',
      '10',
    ];
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    if (child.pid === undefined) throw new Error('could not start a qmaint work process');
    const exited = new Promise<Exit>((resolve) => {
      child.on('close', (code, signal) => {
        this.workers.delete(worker);
        const exit: Exit = { pid: worker.pid, queue, code, signal, at: this.now(), stderr: gist(worker.stderr) };
        if (worker.fate === 'running') {
          this.report.unexpectedExits.push(exit);
          this.log(
            `consumer ${worker.pid} (${queue}) exited on its own: code ${code}, signal ${signal}; the end of its stderr:\n${worker.stderr.trim().split('\n').slice(-40).join('\n')}`,
          );
        } else if (worker.fate === 'stopping' && code !== 0) {
          this.report.stopFailures.push(exit);
        }
        // Keep the number of consumers: replace one that was killed or died.
        if (worker.fate !== 'stopping') void this.respawn(queue);
        resolve(exit);
      });
    });
    const worker: Worker = { pid: child.pid, queue, child, stderr: '', ready: false, fate: 'running', exited };
    child.stderr.on('data', (d: Buffer) => {
      const text = d.toString();
      worker.stderr = (worker.stderr + text).slice(-8000);
      this.notes(text);
      worker.ready ||= worker.stderr.includes('working queue ');
    });
    this.allExits.push(worker.exited);
    this.workers.add(worker);
  }

  /** Count what consumers report while they work (a chunk may split a line: only whole notes are matched). */
  private notes(text: string): void {
    const notes = this.report.consumerNotes;
    for (const m of text.matchAll(/^database error during (\w[\w-]*): (.*?) \(retrying\)$/gm)) {
      const key = `${m[1]}: ${m[2]!.replace(/\d+/g, 'N')}`;
      notes.dbErrors[key] = (notes.dbErrors[key] ?? 0) + 1;
    }
    for (const m of text.matchAll(/^lost the lease of job (\d+);/gm)) {
      notes.leaseLost++;
      this.leaseLost.add(m[1]!);
    }
  }

  /** A replacement starts once the server is up: a consumer that cannot connect at start exits 3 by design. */
  private async respawn(queue: string): Promise<void> {
    while (this.serverDown && !this.shuttingDown) await sleep(100);
    if (!this.shuttingDown) this.spawnWorker(queue);
  }

  private alive(queue?: string): Worker[] {
    return [...this.workers].filter((w) => w.fate === 'running' && (!queue || w.queue === queue));
  }

  private async killLoop(until: () => boolean): Promise<void> {
    if (this.o.killEveryMs <= 0) return;
    while (!until()) {
      await sleep(around(this.o.killEveryMs));
      if (until()) return;
      if (this.restarting) continue;
      const victim = pick(this.alive());
      if (!victim) continue;
      victim.fate = 'killed';
      victim.child.kill('SIGKILL');
      this.report.kills.push({ pid: victim.pid, queue: victim.queue, at: this.now() });
      this.log(`SIGKILL consumer ${victim.pid} (${victim.queue})`);
    }
  }

  private async terminateLoop(until: () => boolean): Promise<void> {
    if (this.o.terminateEveryMs <= 0) return;
    while (!until()) {
      await sleep(around(this.o.terminateEveryMs));
      if (until() || this.serverDown) continue;
      // Consumers at work only: one whose start-up check meets a dropped connection exits (1 or 3) by design.
      const worker = pick(this.alive().filter((w) => w.ready));
      if (!worker) continue;
      try {
        const ports = clientPorts(worker.pid, this.port);
        if (ports.length === 0) continue;
        const { rows } = await this.db!.query<{ pid: number; application_name: string }>(
          `SELECT pid, application_name FROM pg_stat_activity WHERE client_port = ANY ($1::int[]) AND backend_type = 'client backend'`,
          [ports],
        );
        const backend = pick(rows);
        if (!backend) continue;
        const at = this.now();
        const { rows: done } = await this.db!.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [backend.pid]);
        if (!done[0]?.ok) continue;
        this.report.terminations.push({ backendPid: backend.pid, workerPid: worker.pid, application: backend.application_name, at });
      } catch {
        // The server is restarting or the worker just died: try again at the next turn.
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Rotation, the producer, the restart

  private async rotateOnce(): Promise<void> {
    try {
      const result = await rotate(this.db!, { now: this.virtualNow(), mode: 'direct', lockTimeout: '1s' });
      this.report.rotation.runs++;
      if (result.ran) {
        for (const t of result.tables) for (const d of t.done) this.report.rotation.actions[d.action] = (this.report.rotation.actions[d.action] ?? 0) + 1;
      }
    } catch (err) {
      this.report.rotation.errors.push(`${this.now()} ms: ${(err as Error).message.split('\n')[0]}`);
    }
  }

  private async rotateLoop(until: () => boolean): Promise<void> {
    while (!until()) {
      await this.rotateOnce();
      await sleep(this.o.tickMs / 2);
    }
  }

  /** Enqueue jobs n..m of a queue stamped with the virtual time, recording their ids in the same statement; retried until it commits. */
  private async enqueueWave(queue: string, from: number, to: number, deadline: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.db!.query(
          `WITH j AS (SELECT qmaint.enqueue($1, jsonb_build_object('n', n), now(), 0, $2, $3) AS id FROM generate_series($4::int, $5::int) n)
           INSERT INTO chaos_enqueued (job_id, queue) SELECT id, $1 FROM j`,
          [queue, MAX_RETRIES, this.virtualNow(), from, to],
        );
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`could not enqueue ${queue} jobs ${from}..${to} after ${attempt + 1} attempts: ${(err as Error).message}`);
        await sleep(200);
      }
    }
  }

  /** Stop killing, and let every consumer get past its start-up (one that meets a stopped server exits 3 by design); bounded. */
  private async settleForRestart(): Promise<void> {
    this.restarting = true;
    for (let i = 0; i < 100 && this.alive().some((w) => !w.ready); i++) await sleep(100);
  }

  /** Restart the server right after a wave landed: the busy queue has work, the idle one none. */
  private async restart(): Promise<void> {
    const backlog: RestartReport['backlog'] = {};
    const { rows } = await this.db!.query<{ queue: string; queued: number; running: number }>(
      `SELECT queue, count(*) FILTER (WHERE status = 'queued')::int AS queued, count(*) FILTER (WHERE status = 'running')::int AS running
         FROM qmaint.jobs WHERE queue = ANY ($1) AND status IN ('queued', 'running') GROUP BY queue`,
      [[BUSY_QUEUE, IDLE_QUEUE]],
    );
    for (const q of [BUSY_QUEUE, IDLE_QUEUE]) backlog[q] = { queued: 0, running: 0 };
    for (const r of rows) backlog[r.queue] = { queued: r.queued, running: r.running };
    const consumers = { [BUSY_QUEUE]: this.alive(BUSY_QUEUE).length, [IDLE_QUEUE]: this.alive(IDLE_QUEUE).length };
    const stopAt = this.now();
    this.serverDown = true;
    this.log(`restarting the server (backlog ${JSON.stringify(backlog)})`);
    await stopEmbedded({ home: this.home! });
    const downAt = this.now();
    const server = await ensureEmbedded({ home: this.home!, throwaway: true });
    const upAt = this.now();
    this.serverDown = false;
    this.restarting = false;
    if (server.port !== this.port)
      throw new Error(`the restarted server came back on port ${server.port}, not ${this.port} (the port was taken meanwhile); the consumers cannot find it`);
    this.report.restart = { stopAt, downAt, upAt, backlog, consumers, busyResumedMs: null, idleDoneMs: null, drainMs: null };
    this.log(`server back after ${upAt - stopAt} ms`);
  }

  private async scenario(): Promise<void> {
    const waves = Math.max(1, Math.ceil(this.o.jobs / this.o.waveSize));
    const restartWave = this.o.restartAt === null ? -1 : Math.min(waves - 1, Math.floor(waves * this.o.restartAt));
    let producing = true;
    const chaosOver = () => !producing;
    let draining = true;
    const rotationOver = () => !draining;
    const start = this.now();
    const loops = [this.killLoop(chaosOver), this.terminateLoop(chaosOver)];
    const rotation = this.rotateLoop(rotationOver);
    const hardDeadline = Date.now() + this.o.produceMs + this.o.drainTimeoutMs;
    try {
      for (let w = 0; w < waves; w++) {
        const due = start + (w * this.o.produceMs) / waves;
        if (this.now() < due) await sleep(due - this.now());
        const from = w * this.o.waveSize + 1;
        if (w === restartWave) await this.settleForRestart();
        await this.enqueueWave(BUSY_QUEUE, from, Math.min(this.o.jobs, from + this.o.waveSize - 1), hardDeadline);
        if (w === restartWave) {
          await this.restart();
          if (this.o.idleJobs > 0) await this.enqueueWave(IDLE_QUEUE, 1, this.o.idleJobs, hardDeadline);
        }
      }
      if (restartWave < 0 && this.o.idleJobs > 0) await this.enqueueWave(IDLE_QUEUE, 1, this.o.idleJobs, hardDeadline);
      // Faults go on for the whole window, past the last wave.
      if (this.now() < start + this.o.produceMs) await sleep(start + this.o.produceMs - this.now());
      producing = false;
      await Promise.all(loops);
      this.report.timings.produceMs = this.now() - start;
      this.log(`producer done after ${this.report.timings.produceMs} ms; ${this.report.kills.length} kills, ${this.report.terminations.length} terminations`);
      const drainStart = this.now();
      this.report.drained = await this.waitForDrain(drainStart + this.o.drainTimeoutMs);
      this.report.timings.drainMs = this.now() - drainStart;
      const busyDone = this.now() - start;
      const handled = await this.db!.query<{ n: number }>('SELECT count(DISTINCT job_id)::int AS n FROM chaos_ledger WHERE queue = $1', [BUSY_QUEUE]);
      this.report.throughput = handled.rows[0]!.n / (busyDone / 1000);
      if (this.report.restart && this.report.drained) this.report.restart.drainMs = this.now() - this.report.restart.upAt;
    } finally {
      producing = false;
      draining = false;
      await Promise.all([...loops, rotation]);
    }
    // Dispose of anything a rotation interrupted by the restart left half retired.
    await this.rotateOnce();
    await this.stopWorkers();
  }

  /** Bounded: true once nothing is queued or running and every enqueued job has a ledger row. */
  private async waitForDrain(deadline: number): Promise<boolean> {
    let last = '';
    while (this.now() < deadline) {
      try {
        const { rows } = await this.db!.query<{ live: number; unhandled: number }>(
          `SELECT (SELECT count(*) FROM qmaint.jobs WHERE status IN ('queued', 'running'))::int AS live,
                  (SELECT count(*) FROM chaos_enqueued e WHERE NOT EXISTS (SELECT 1 FROM chaos_ledger l WHERE l.job_id = e.job_id))::int AS unhandled`,
        );
        const r = rows[0]!;
        last = `${r.live} jobs queued or running, ${r.unhandled} enqueued jobs never handled`;
        if (r.live === 0 && r.unhandled === 0) return true;
      } catch (err) {
        last = `the check failed: ${(err as Error).message}`;
      }
      await sleep(250);
    }
    const alive = this.alive()
      .map((w) => `${w.pid} (${w.queue})`)
      .join(', ');
    this.report.incidents.push(`not drained within ${this.o.drainTimeoutMs} ms after the producer finished: ${last}; consumers alive: ${alive || 'none'}`);
    return false;
  }

  private async stopWorkers(): Promise<void> {
    this.shuttingDown = true;
    const stopping = [...this.workers];
    for (const w of stopping) {
      if (w.fate === 'running') w.fate = 'stopping';
      w.child.kill('SIGTERM');
    }
    // --shutdown-seconds 10: a consumer that has not exited 5 s after that is stuck.
    const deadline = sleep(15_000).then(() => 'timeout' as const);
    for (const w of stopping) {
      if ((await Promise.race([w.exited, deadline])) === 'timeout') {
        this.report.stopFailures.push({
          pid: w.pid,
          queue: w.queue,
          code: null,
          signal: null,
          at: this.now(),
          stderr: `still running 15 s after SIGTERM\n${gist(w.stderr)}`,
        });
        w.child.kill('SIGKILL');
      }
    }
  }

  // ---------------------------------------------------------------------------
  // The invariants

  private async verify(): Promise<void> {
    const db = this.db!;
    // Rows of retired partitions: archived ones, and any detached table not yet moved.
    const { rows: tables } = await db.query<{ schema: string; name: string }>(
      `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND NOT c.relispartition
          AND (n.nspname = 'qmaint_archive' OR (n.nspname = 'qmaint' AND c.relname LIKE 'jobs\\_p%'))`,
    );
    const everyJob = [
      'SELECT id, status::text AS status, retry_count, last_error FROM qmaint.jobs',
      ...tables.map((t) => `SELECT id, status::text AS status, retry_count, last_error FROM ${quoteIdent(t.schema)}.${quoteIdent(t.name)}`),
    ].join(' UNION ALL ');
    const { rows: enqueued } = await db.query<{ queue: string; n: number }>('SELECT queue, count(*)::int AS n FROM chaos_enqueued GROUP BY 1 ORDER BY 1');
    for (const r of enqueued) this.report.enqueued[r.queue] = r.n;
    this.report.ledgerRows = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM chaos_ledger')).rows[0]!.n;

    const { rows: fates } = await db.query<{ id: string; status: string | null; handled: boolean }>(
      `SELECT e.job_id::text AS id, a.status, EXISTS (SELECT 1 FROM chaos_ledger l WHERE l.job_id = e.job_id) AS handled
         FROM chaos_enqueued e LEFT JOIN (${everyJob}) a ON a.id = e.job_id
        WHERE a.status IS DISTINCT FROM 'completed' OR NOT EXISTS (SELECT 1 FROM chaos_ledger l WHERE l.job_id = e.job_id)
        ORDER BY e.job_id`,
    );
    for (const f of fates) {
      if (f.status === null) this.report.lost.vanished.push(f.id);
      else if (f.status !== 'completed') this.report.lost.notCompleted.push({ id: f.id, status: f.status });
      else if (!f.handled) this.report.lost.unhandled.push(f.id);
    }
    this.report.phantoms = (
      await db.query<{ id: string }>(
        'SELECT DISTINCT job_id::text AS id FROM chaos_ledger l WHERE NOT EXISTS (SELECT 1 FROM chaos_enqueued e WHERE e.job_id = l.job_id) ORDER BY 1',
      )
    ).rows.map((r) => r.id);
    const { rows: live } = await db.query<{ status: string; n: number }>(
      `SELECT status, count(*)::int AS n FROM (${everyJob}) a WHERE status IN ('queued', 'running') GROUP BY 1`,
    );
    for (const r of live) this.report.live[r.status] = r.n;

    // Every re-execution must follow an execution that was disrupted: its worker was
    // killed, one of its worker's connections was terminated between that execution's
    // claim (at most a lease before its ledger row) and the re-execution, or the server
    // restarted in between.
    const { rows: dups } = await db.query<{ id: string; pids: number[]; ats: number[]; retry_count: number | null; last_error: string | null }>(
      `SELECT d.id, d.pids, d.ats, a.retry_count, split_part(a.last_error, E'\n', 1) AS last_error
         FROM (SELECT job_id, job_id::text AS id, array_agg(pid ORDER BY seq) AS pids, array_agg((extract(epoch FROM at) * 1000)::float8 ORDER BY seq) AS ats
                 FROM chaos_ledger GROUP BY job_id HAVING count(*) > 1) d
         LEFT JOIN (${everyJob}) a ON a.id = d.job_id
        ORDER BY d.job_id`,
    );
    const killed = new Set(this.report.kills.map((k) => k.pid));
    const restart = this.report.restart;
    const leaseMs = this.o.leaseSeconds * 1000;
    for (const d of dups) {
      const ats = d.ats.map((a) => a - this.t0);
      const reasons: (DuplicateReason | null)[] = [];
      for (let i = 0; i + 1 < d.pids.length; i++) {
        const pid = d.pids[i]!;
        const [ran, rerun] = [ats[i]!, ats[i + 1]!];
        if (killed.has(pid)) reasons.push('killed');
        else if (this.report.terminations.some((t) => t.workerPid === pid && t.at >= ran - leaseMs && t.at <= rerun)) reasons.push('terminated');
        else if (restart && ran <= restart.upAt && rerun >= restart.stopAt) reasons.push('restart');
        else reasons.push(null);
      }
      this.report.duplicates.push({
        jobId: d.id,
        executions: d.pids.length,
        reasons,
        pids: d.pids,
        ats: ats.map(Math.round),
        leaseLostNoted: this.leaseLost.has(d.id),
        retryCount: d.retry_count,
        lastError: d.last_error,
      });
    }

    if (restart) {
      const { rows } = await db.query<{ busy: number | null; idle: number | null }>(
        `SELECT (SELECT min(extract(epoch FROM at) * 1000) FROM chaos_ledger WHERE queue = $1 AND at >= to_timestamp($3 / 1000.0))::float8 AS busy,
                (SELECT max(extract(epoch FROM at) * 1000) FROM chaos_ledger WHERE queue = $2)::float8 AS idle`,
        [BUSY_QUEUE, IDLE_QUEUE, this.t0 + restart.upAt],
      );
      const upAbs = this.t0 + restart.upAt;
      restart.busyResumedMs = rows[0]!.busy === null ? null : Math.round(rows[0]!.busy - upAbs);
      restart.idleDoneMs = rows[0]!.idle === null ? null : Math.round(rows[0]!.idle - upAbs);
    }
  }

  /** Stop every consumer, the pool and the private server; remove its directory. Safe to call twice. */
  async cleanup(): Promise<void> {
    this.shuttingDown = true;
    for (const w of this.workers) w.child.kill('SIGKILL');
    await Promise.race([Promise.all(this.allExits), sleep(10_000)]);
    process.off('exit', this.onProcessExit);
    const db = this.db;
    this.db = null;
    await db?.close().catch(() => undefined);
    const home = this.home;
    this.home = null;
    if (home) {
      await stopEmbedded({ home }).catch((err: Error) => this.log(`could not stop the private server in ${home}: ${err.message}`));
      rmSync(home, { recursive: true, force: true });
    }
  }
}

/** The lines of a consumer's stderr that say what happened: errors, codes, emitters; no stack frames. */
function gist(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => /Error|error:|Emitted|code: '/.test(l) && !/^\s+at /.test(l));
  return lines.slice(-8).join('\n').trim();
}

/** Each broken invariant, one line each. */
export function violations(r: ChaosReport): string[] {
  const out: string[] = [];
  const some = (ids: string[]) => ids.slice(0, 10).join(', ') + (ids.length > 10 ? ', …' : '');
  if (r.lost.vanished.length > 0) out.push(`${r.lost.vanished.length} enqueued jobs vanished (no row anywhere): ${some(r.lost.vanished)}`);
  if (r.lost.notCompleted.length > 0)
    out.push(`${r.lost.notCompleted.length} enqueued jobs not completed: ${some(r.lost.notCompleted.map((j) => `${j.id} ${j.status}`))}`);
  if (r.lost.unhandled.length > 0) out.push(`${r.lost.unhandled.length} jobs completed with no handler execution in the ledger: ${some(r.lost.unhandled)}`);
  if (r.phantoms.length > 0) out.push(`${r.phantoms.length} ledger rows of jobs never enqueued: ${some(r.phantoms)}`);
  const unexplained = r.duplicates.filter((d) => d.reasons.includes(null));
  if (unexplained.length > 0)
    out.push(
      `${unexplained.length} duplicates not explained by a kill, a terminated connection or the restart: ${some(unexplained.map((d) => `${d.jobId} (pids ${d.pids.join(', ')} at ${d.ats.join(', ')} ms${d.leaseLostNoted ? ', lease lost' : ''}, retry_count ${d.retryCount}, last_error ${JSON.stringify(d.lastError)})`))}`,
    );
  const live = Object.entries(r.live);
  if (live.length > 0) out.push(`jobs left live: ${live.map(([s, n]) => `${n} ${s}`).join(', ')}`);
  for (const e of r.unexpectedExits)
    out.push(
      `consumer ${e.pid} (${e.queue}) exited on its own ${r.restart && e.at >= r.restart.stopAt ? `${e.at - r.restart.stopAt} ms after the restart began` : `at ${e.at} ms`}: code ${e.code}, signal ${e.signal}: ${e.stderr.split('\n').join(' | ')}`,
    );
  for (const e of r.stopFailures)
    out.push(`consumer ${e.pid} (${e.queue}) did not stop cleanly on SIGTERM: code ${e.code}: ${e.stderr.split('\n').join(' | ')}`);
  out.push(...r.incidents);
  return out;
}

/** What the run exercised, checked so that a run which injected nothing does not pass for a proof. */
export function coverageProblems(r: ChaosReport): string[] {
  const out: string[] = [];
  const o = r.options;
  if (o.killEveryMs > 0 && r.kills.length === 0) out.push('no consumer was killed');
  if (o.terminateEveryMs > 0 && r.terminations.length === 0) out.push('no connection was terminated');
  if (o.restartAt !== null) {
    if (!r.restart) out.push('the server was not restarted');
    else {
      if (r.restart.backlog[BUSY_QUEUE]!.queued + r.restart.backlog[BUSY_QUEUE]!.running === 0)
        out.push('the busy queue had no work when the server restarted');
      if (r.restart.backlog[IDLE_QUEUE]!.queued + r.restart.backlog[IDLE_QUEUE]!.running > 0) out.push('the idle queue had work when the server restarted');
      if (r.restart.consumers[IDLE_QUEUE] === 0) out.push('no idle consumer was alive when the server restarted');
    }
  }
  if (!(r.rotation.actions.create! > 0)) out.push('rotation created no partition');
  if (!(r.rotation.actions.archive! > 0)) out.push('rotation retired no partition');
  return out;
}

/** The report for people. */
export function formatReport(r: ChaosReport): string {
  const sec = (ms: number | null) => (ms === null ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);
  const reasons = new Map<string, number>();
  for (const d of r.duplicates) for (const why of d.reasons) reasons.set(why ?? 'UNEXPLAINED', (reasons.get(why ?? 'UNEXPLAINED') ?? 0) + 1);
  const byQueue = (queue: string) => r.kills.filter((k) => k.queue === queue).length;
  const apps = new Map<string, number>();
  for (const t of r.terminations) {
    const app = t.application.startsWith('chaos-ledger') ? 'handler ledger pool' : t.application || 'still connecting';
    apps.set(app, (apps.get(app) ?? 0) + 1);
  }
  const o = r.options;
  const lines = [
    `PostgreSQL ${r.serverVersion}, Node ${process.version}, ${os.cpus().length} cores`,
    `settings: ${o.busyConsumers}+${o.idleConsumers} consumers (concurrency ${o.concurrency}, batch ${o.batch}, lease ${o.leaseSeconds} s), produce ${sec(o.produceMs)}, kill every ~${sec(o.killEveryMs)}, terminate every ~${sec(o.terminateEveryMs)}, 1-minute partitions, 1 virtual minute per ${sec(o.tickMs)}`,
    `jobs enqueued: ${Object.entries(r.enqueued)
      .map(([q, n]) => `${n} ${q}`)
      .join(', ')}; handler executions ${r.ledgerRows}`,
    `kills (SIGKILL): ${r.kills.length} (${byQueue(BUSY_QUEUE)} busy, ${byQueue(IDLE_QUEUE)} idle)`,
    `connections terminated: ${r.terminations.length}${apps.size > 0 ? ` (${[...apps].map(([a, n]) => `${n} ${a}`).join(', ')})` : ''}`,
    r.restart
      ? `restart: 1, server down ${sec(r.restart.upAt - r.restart.stopAt)}; backlog then ${r.restart.backlog[BUSY_QUEUE]!.queued} queued + ${r.restart.backlog[BUSY_QUEUE]!.running} running (${BUSY_QUEUE}), ${r.restart.consumers[IDLE_QUEUE]} idle consumers; busy queue resumed ${sec(r.restart.busyResumedMs)} after, idle queue done ${sec(r.restart.idleDoneMs)} after, drained ${sec(r.restart.drainMs)} after`
      : 'restart: none',
    `rotation: ${r.rotation.runs} runs, ${
      Object.entries(r.rotation.actions)
        .map(([a, n]) => `${n} ${a}`)
        .join(', ') || 'nothing done'
    }; ${r.rotation.errors.length} failed runs`,
    `duplicates: ${r.duplicates.length} jobs ran more than once${reasons.size > 0 ? ` (re-executions after: ${[...reasons].map(([why, n]) => `${why} ${n}`).join(', ')})` : ''}`,
    `lost: ${r.lost.vanished.length + r.lost.notCompleted.length + r.lost.unhandled.length}; left live: ${Object.values(r.live).reduce((a, b) => a + b, 0)}; consumers that exited on their own: ${r.unexpectedExits.length}`,
    `throughput: ${Math.round(r.throughput)} jobs/s (busy queue, first wave to drained); setup ${sec(r.timings.setupMs)}, produce ${sec(r.timings.produceMs)}, drain after the producer ${sec(r.timings.drainMs)}, total ${sec(r.timings.totalMs)}`,
  ];
  for (const e of r.rotation.errors.slice(0, 5)) lines.push(`  rotate failed at ${e}`);
  const errors = Object.entries(r.consumerNotes.dbErrors).sort((a, b) => b[1] - a[1]);
  lines.push(`consumers reported: ${r.consumerNotes.leaseLost} lost leases, ${errors.reduce((n, [, c]) => n + c, 0)} database errors (retried)`);
  for (const [what, n] of errors.slice(0, 8)) lines.push(`  ${n} × ${what}`);
  return lines.join('\n');
}

/**
 * The local TCP ports of a process's connections to the server (Linux: its
 * socket inodes from /proc/PID/fd, matched in /proc/net/tcp), so a backend in
 * pg_stat_activity (client_port) can be traced to the consumer that owns it.
 */
function clientPorts(pid: number, serverPort: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9]!)) continue;
      const local = parseInt(f[1]!.split(':')[1]!, 16);
      const remote = parseInt(f[2]!.split(':')[1]!, 16);
      if (remote === serverPort) ports.push(local);
    }
  }
  return ports;
}
