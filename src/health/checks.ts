import type { Db } from '../db.js';
import { QmaintError } from '../errors.js';
import { explainDequeue, type DequeueReport } from './explain.js';
import { worstVerdict, type Verdict } from './plan.js';
import { thresholdError, type Thresholds } from './thresholds.js';

/** One check of a {@link HealthReport}. */
export interface HealthCheck {
  check: string;
  status: Verdict;
  observed: string;
  threshold: string;
  /** What to do when it fires; a short confirmation when it passes. */
  message: string;
}

/** Options of {@link runHealth}. */
export interface HealthOptions {
  /** The time the checks judge against (p_now). The claim itself runs at the server's now(). */
  now: Date;
  /** Thresholds of every check (see docs/health.md); unnamed ones keep their defaults. */
  thresholds: Thresholds;
  /** statement_timeout of the server-side checks and of the dequeue explain (PostgreSQL interval text, e.g. '10s'). */
  statementTimeout: string;
  /** Dequeue verdict: queue (default: the oldest due job's), batch and lease of the explained claim. */
  queue?: string;
  /** Jobs per claim of the explained claim (the consumer's batch, 100 by default). */
  batch: number;
  /** Lease of the explained claim, in seconds (the consumer's, 60 by default). */
  leaseSeconds: number;
}

/** What {@link runHealth} returns. */
export interface HealthReport {
  now: string;
  status: Verdict;
  counts: Record<Verdict, number>;
  /** One line monitoring can parse: qmaint-health status=... critical=N warn=N ok=N */
  summaryLine: string;
  checks: HealthCheck[];
  /** The full dequeue explain behind the "dequeue" check (absent when it timed out, or on a standby). */
  dequeue: DequeueReport | null;
  /** The server is a standby (in recovery): the checks of needPrimary do not describe the primary, and dequeue was not run. */
  inRecovery: boolean;
  /** Checks whose answer only the primary has: dequeue (the claim writes), and those that read the node's own statistics and sessions. */
  needPrimary: readonly string[];
}

/**
 * What only the primary can answer. dequeue plans the claim, an UPDATE; dead
 * tuples come from the node's own statistics (a standby counts none); the xmin
 * horizon and idle transactions are the node's own sessions. The rest read
 * replicated tables and catalogs, so a standby answers them as the primary
 * did as of its replay.
 */
export const NEED_PRIMARY = ['dequeue', 'dead_tuples', 'xmin_horizon', 'idle_in_transaction', 'replication_slots'] as const;

/** The server-side checks: qmaint.health_checks(p_now, p_thresholds) under statement_timeout. */
export async function serverChecks(db: Db, now: Date, thresholds: Record<string, string | number>, statementTimeout: string): Promise<HealthCheck[]> {
  try {
    return await db.transaction(async (client) => {
      await client.query(`SELECT set_config('statement_timeout', $1, true)`, [statementTimeout]);
      const { rows } = await client.query<{ check_name: string; status: Verdict; observed: string; threshold: string; message: string }>(
        'SELECT check_name, status, observed, threshold, message FROM qmaint.health_checks($1::timestamptz, $2::jsonb)',
        [now.toISOString(), JSON.stringify(thresholds)],
      );
      return rows.map((r) => ({ check: r.check_name, status: r.status, observed: r.observed, threshold: r.threshold, message: r.message }));
    });
  } catch (err) {
    throw thresholdError(err) ?? err;
  }
}

/** The explain of the claim, summed up as one check. */
export function dequeueCheck(report: DequeueReport): HealthCheck {
  const failing = report.rules.filter((r) => r.verdict !== 'ok');
  return {
    check: 'dequeue',
    status: report.verdict,
    observed: failing.length
      ? `queue '${report.queue}': ${failing.map((r) => `${r.rule} ${r.verdict} (${r.observed})`).join('; ')}`
      : report.analyzed
        ? `queue '${report.queue}': all ${report.rules.length} plan rules pass (${report.claimed} claimed in ${report.executionMs.toFixed(2)} ms, rolled back)`
        : `queue '${report.queue}': all ${report.rules.length} plan-only rules pass (planned, not run: this role may not update jobs)`,
    threshold: 'every plan rule of qmaint explain dequeue',
    message: failing[0]?.recommendation ?? 'the claim uses its index and skips drained partitions',
  };
}

export function summarize(checks: HealthCheck[]): { status: Verdict; counts: Record<Verdict, number>; summaryLine: string } {
  const counts: Record<Verdict, number> = { critical: 0, warn: 0, ok: 0 };
  for (const c of checks) counts[c.status]++;
  const status = worstVerdict(checks.map((c) => c.status));
  return { status, counts, summaryLine: `qmaint-health status=${status} critical=${counts.critical} warn=${counts.warn} ok=${counts.ok}` };
}

/**
 * Every health check: the server-side ones, then the dequeue verdict.
 *
 * @param db - the database
 * @param options - see {@link HealthOptions}
 * @returns every check with its verdict; a dequeue explain that timed out is a critical check, not an error
 * @throws {@link QmaintError} `bad_input` for an unknown or malformed threshold
 */
export async function runHealth(db: Db, options: HealthOptions): Promise<HealthReport> {
  const checks = await serverChecks(db, options.now, options.thresholds.server, options.statementTimeout);
  let dequeue: DequeueReport | null = null;
  const inRecovery = await isInRecovery(db);
  if (inRecovery) return { now: options.now.toISOString(), ...summarize(checks), checks, dequeue, inRecovery, needPrimary: NEED_PRIMARY };
  try {
    dequeue = await explainDequeue(db, {
      queue: options.queue,
      batch: options.batch,
      leaseSeconds: options.leaseSeconds,
      statementTimeout: options.statementTimeout,
      thresholds: options.thresholds.dequeue,
    });
    checks.push(dequeueCheck(dequeue));
  } catch (err) {
    if (!(err instanceof QmaintError && err.code === 'critical')) throw err;
    checks.push({
      check: 'dequeue',
      status: 'critical',
      observed: 'the claim timed out',
      threshold: `finishes within statement_timeout ${options.statementTimeout}`,
      message: err.message,
    });
  }
  return { now: options.now.toISOString(), ...summarize(checks), checks, dequeue, inRecovery, needPrimary: NEED_PRIMARY };
}

/** True on a standby (a server in recovery). */
export async function isInRecovery(db: Db): Promise<boolean> {
  const { rows } = await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
  return rows[0]!.r;
}
