// The failover run behind test/failover/ledger.test.ts and `npm run failover`.
//
// On the rig of scripts/pg15-ha.sh (a primary and a streaming standby, synchronous
// or not), with every process given the multi-host URL
// (postgres://primary,standby/db?target_session_attrs=read-write):
//   - producers (scripts/failover/producer.mjs) enqueue one job at a time and
//     print each acknowledged job;
//   - consumers are `qmaint work` child processes whose handler
//     (scripts/failover/ledger-handler.mjs) writes one failover_ledger row per execution;
//   - two `qmaint schedule run` daemons compete for the leader lock;
// then the primary is stopped with -m immediate and the standby promoted, the
// producers go on for a while, and the run waits (bounded) for the queue to
// drain on the new primary. The report counts the acknowledged enqueues the new
// primary lacks, the executions of one job more than once (and whether the
// outage explains them), the daemons that took the leader lock after the
// failover, and the LISTEN sessions on the new primary.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { connect, type Db } from '../../src/db.js';
import { migrate } from '../../src/migrate.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(ROOT, 'bin', 'qmaint.js');
const RIG = path.join(ROOT, 'scripts', 'pg15-ha.sh');
export const QUEUE = 'failover';
const run = promisify(execFile);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Rig {
  dir: string;
  sync: boolean;
  /** Both nodes, target_session_attrs=read-write. */
  url: string;
  standbyUrl: string;
}

/** The rig from the environment scripts/pg15-ha.sh prints, or null when it is not there. */
export function rigFromEnv(env: NodeJS.ProcessEnv = process.env): Rig | null {
  const { QMAINT_TEST_HA_DIR: dir, QMAINT_TEST_HA_URL: url, QMAINT_TEST_HA_STANDBY_URL: standbyUrl, QMAINT_TEST_HA_SYNC: sync } = env;
  if (!dir || !url || !standbyUrl) return null;
  return { dir, url, standbyUrl, sync: sync === '1' };
}

export interface FailoverOptions {
  producers: number;
  consumers: number;
  leaseSeconds: number;
  /** Before the kill, between the kill and the promotion, and after the promotion until the producers stop. */
  beforeMs: number;
  outageMs: number;
  afterMs: number;
  drainTimeoutMs: number;
  log?: (line: string) => void;
}

export const TEST_OPTIONS: FailoverOptions = {
  producers: 2,
  consumers: 3,
  leaseSeconds: 5,
  beforeMs: 5_000,
  outageMs: 1_000,
  afterMs: 5_000,
  drainTimeoutMs: 90_000,
};

export interface FailoverReport {
  sync: boolean;
  /** Enqueues the producers saw acknowledged, and how many of those the new primary lacks. */
  acknowledged: number;
  acknowledgedBeforeKill: number;
  lost: number;
  /** The first few lost ones, with how long before the kill each was acknowledged (ms). */
  lostSample: { n: number; msBeforeKill: number }[];
  /** Acknowledged in the last second before the kill: the async window's population. */
  acknowledgedLastSecond: number;
  /** Jobs of the queue on the new primary, and those not completed when the run ended. */
  jobs: number;
  notCompleted: number;
  /** Jobs executed more than once; "unexplained": the execution before held no lease across the outage. */
  duplicates: number;
  unexplainedDuplicates: { jobId: string; ats: number[] }[];
  /** Completed jobs without a ledger row (a completion without an execution). */
  unhandled: number;
  /** Jobs that needed more than one attempt (what leases and the rescuer brought back). */
  retried: number;
  /** "this daemon leads" lines after the kill, over both daemons, and the leader the new primary shows. */
  leaderTakeovers: number;
  leaderOnNewPrimary: boolean;
  /** Sessions LISTENing on the new primary, and the consumers alive. */
  listeners: number;
  consumersAlive: number;
  drained: boolean;
  timings: { killAt: number; promotedAt: number; firstAckAfterPromotionMs: number | null; drainMs: number };
}

interface Child {
  child: ChildProcess;
  stderr: string;
  lines: { at: number; text: string }[];
  exited: Promise<number | null>;
}

export class FailoverRun {
  private readonly children: Child[] = [];
  private readonly log: (line: string) => void;
  private t0 = 0;

  constructor(
    private readonly rig: Rig,
    private readonly o: FailoverOptions,
  ) {
    this.log = o.log ?? (() => undefined);
  }

  private now(): number {
    return Date.now() - this.t0;
  }

  private spawn(args: string[], env: Record<string, string> = {}): Child {
    const childEnv: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (k !== 'DATABASE_URL' && !k.startsWith('PG') && !k.startsWith('QMAINT_')) childEnv[k] = v;
    Object.assign(childEnv, { DATABASE_URL: this.rig.url, NO_COLOR: '1', QMAINT_CONNECT_TIMEOUT_MS: '2000' }, env);
    const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const c: Child = { child, stderr: '', lines: [], exited: new Promise((resolve) => child.on('close', (code) => resolve(code))) };
    const take = (d: Buffer) => {
      for (const text of d.toString().split('\n')) if (text) c.lines.push({ at: this.now(), text });
    };
    child.stdout.on('data', take);
    child.stderr.on('data', (d: Buffer) => {
      c.stderr = (c.stderr + d.toString()).slice(-8000);
      take(d);
    });
    this.children.push(c);
    return c;
  }

  async run(): Promise<FailoverReport> {
    this.t0 = Date.now();
    let db: Db | null = null;
    try {
      db = await connect({ databaseUrl: this.rig.url, max: 4, applicationName: 'failover-harness', connectTimeoutMs: 2000 });
      await migrate(db);
      await db.query(
        `CREATE TABLE IF NOT EXISTS failover_ledger (seq bigserial PRIMARY KEY, job_id bigint NOT NULL, n bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
      );
      const daemons = [0, 1].map(() => this.spawn([CLI, 'schedule', 'run', '--leader-interval-ms', '500']));
      const consumers = Array.from({ length: this.o.consumers }, () =>
        this.spawn([
          CLI,
          'work',
          '--queue',
          QUEUE,
          '--handler',
          path.join(ROOT, 'scripts', 'failover', 'ledger-handler.mjs'),
          '--concurrency',
          '4',
          '--batch',
          '10',
          '--lease-seconds',
          String(this.o.leaseSeconds),
          '--poll-max-ms',
          '500',
          '--shutdown-seconds',
          '10',
        ]),
      );
      for (let i = 0; i < 300 && !consumers.every((c) => c.lines.some((l) => l.text.includes('working queue '))); i++) await sleep(100);
      for (let i = 0; i < 100 && !daemons.some((d) => d.lines.some((l) => l.text.includes('this daemon leads'))); i++) await sleep(100);
      const producers = Array.from({ length: this.o.producers }, (_, k) =>
        this.spawn([path.join(ROOT, 'scripts', 'failover', 'producer.mjs')], { FAILOVER_PRODUCER_BASE: String((k + 1) * 10_000_000), FAILOVER_QUEUE: QUEUE }),
      );
      this.log(
        `${this.o.consumers} consumers, ${this.o.producers} producers, 2 daemons at work on ${this.rig.sync ? 'synchronous' : 'asynchronous'} replication`,
      );
      await sleep(this.o.beforeMs);

      const killAt = this.now();
      await run(RIG, ['kill-primary', this.rig.dir]);
      this.log(`primary stopped (-m immediate) at ${killAt} ms`);
      await sleep(this.o.outageMs);
      await run(RIG, ['promote', this.rig.dir]);
      const promotedAt = this.now();
      this.log(`standby promoted at ${promotedAt} ms`);
      await sleep(this.o.afterMs);
      for (const p of producers) p.child.kill('SIGTERM');
      await Promise.all(producers.map((p) => p.exited));

      const acks = new Map<number, number>();
      for (const p of producers) for (const l of p.lines) if (l.text.startsWith('ack ')) acks.set(Number(l.text.split(' ')[1]), l.at);
      this.log(`${acks.size} acknowledged enqueues; waiting for the queue to drain on the new primary`);

      // The harness's own pool follows the primary too: these queries run on the new one.
      const drainStart = this.now();
      let drained = false;
      while (this.now() - drainStart < this.o.drainTimeoutMs) {
        const { rows } = await db.query<{ live: number }>(
          `SELECT count(*)::int AS live FROM qmaint.jobs WHERE queue = $1 AND status IN ('queued', 'running')`,
          [QUEUE],
        );
        if (rows[0]!.live === 0) {
          drained = true;
          break;
        }
        await sleep(500);
      }
      const drainMs = this.now() - drainStart;
      // Leader and LISTEN sessions, while everything still runs.
      await sleep(1500);
      const { rows: leader } = await db.query<{ held: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                           AND classid = ((qmaint.daemon_leader_lock_key() >> 32) & 4294967295)::oid
                           AND objid = (qmaint.daemon_leader_lock_key() & 4294967295)::oid) AS held`,
      );
      const { rows: listening } = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN %' AND state = 'idle'`,
      );
      const consumersAlive = consumers.filter((c) => c.child.exitCode === null).length;
      for (const c of [...consumers, ...daemons]) c.child.kill('SIGTERM');
      await Promise.all([...consumers, ...daemons].map((c) => c.exited));

      const { rows: present } = await db.query<{ n: string }>(`SELECT DISTINCT (payload->>'n') AS n FROM qmaint.jobs WHERE queue = $1`, [QUEUE]);
      const presentN = new Set(present.map((r) => Number(r.n)));
      const lost = [...acks].filter(([n]) => !presentN.has(n));
      const { rows: counts } = await db.query<{ jobs: number; not_completed: number; retried: number; unhandled: number }>(
        `SELECT count(*)::int AS jobs,
                count(*) FILTER (WHERE status <> 'completed')::int AS not_completed,
                count(*) FILTER (WHERE attempt > 1)::int AS retried,
                count(*) FILTER (WHERE status = 'completed' AND NOT EXISTS (SELECT 1 FROM failover_ledger l WHERE l.job_id = j.id))::int AS unhandled
           FROM qmaint.jobs j WHERE queue = $1`,
        [QUEUE],
      );
      const { rows: dups } = await db.query<{ job_id: string; ats: Date[] }>(
        `SELECT job_id::text, array_agg(at ORDER BY at) AS ats FROM failover_ledger GROUP BY job_id HAVING count(*) > 1`,
      );
      // A re-execution is explained when the execution before it started before the
      // outage's reach ended: a lease taken before the kill may only expire after it.
      const reach = promotedAt + this.o.leaseSeconds * 1000 + 5000;
      const rel = (d: Date) => d.getTime() - this.t0;
      const unexplained = dups.map((d) => ({ jobId: d.job_id, ats: d.ats.map(rel) })).filter((d) => d.ats.slice(0, -1).some((at) => at > reach));
      const leaderLines = daemons.flatMap((d) => d.lines.filter((l) => l.at > killAt && l.text.includes('this daemon leads')));
      const afterPromotion = [...acks.values()].filter((at) => at > promotedAt);
      return {
        sync: this.rig.sync,
        acknowledged: acks.size,
        acknowledgedBeforeKill: [...acks.values()].filter((at) => at <= killAt).length,
        lost: lost.length,
        lostSample: lost.slice(0, 10).map(([n, at]) => ({ n, msBeforeKill: killAt - at })),
        acknowledgedLastSecond: [...acks.values()].filter((at) => at <= killAt && at > killAt - 1000).length,
        jobs: counts[0]!.jobs,
        notCompleted: counts[0]!.not_completed,
        duplicates: dups.length,
        unexplainedDuplicates: unexplained,
        unhandled: counts[0]!.unhandled,
        retried: counts[0]!.retried,
        leaderTakeovers: leaderLines.length,
        leaderOnNewPrimary: leader[0]!.held,
        listeners: listening[0]!.n,
        consumersAlive,
        drained,
        timings: { killAt, promotedAt, firstAckAfterPromotionMs: afterPromotion.length ? Math.min(...afterPromotion) - promotedAt : null, drainMs },
      };
    } finally {
      for (const c of this.children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
      await db?.close().catch(() => undefined);
    }
  }

  /** stderr of every child, for a failed run's report. */
  stderrs(): string {
    return this.children.map((c) => `--- ${c.child.spawnargs.slice(1, 3).join(' ')} (${c.child.pid})\n${c.stderr.trim()}`).join('\n');
  }
}
