import type pg from 'pg';
import type { Db } from '../db.js';
import { QmaintError, sqlState } from '../errors.js';
import { CLAIM_SQL, claimQuery, LOW_WATER_SQL, type ClaimParams } from '../queue/claim.js';
import {
  DEFAULT_DEQUEUE_THRESHOLDS,
  judgePlan,
  rowsClaimed,
  worstVerdict,
  type DequeueThresholds,
  type ExplainDocument,
  type PartitionInfo,
  type PartitionState,
  type RuleResult,
  type Verdict,
} from './plan.js';

export interface ExplainOptions {
  /** Queue to explain; default: the queue of the oldest due job, else "default". */
  queue?: string;
  batch: number;
  leaseSeconds: number;
  /** statement_timeout for the whole explain (PostgreSQL interval text). */
  statementTimeout: string;
  thresholds?: DequeueThresholds;
  /**
   * true: EXPLAIN ANALYZE the claim (it runs, then rolls back); false: plan it
   * only, through qmaint.explain_claim() (what a role without UPDATE on
   * qmaint.jobs can do); default: ANALYZE when this role may update jobs.
   */
  analyze?: boolean;
}

export interface DequeueReport {
  queue: string;
  /** How the queue was picked. */
  queueSource: 'given' | 'oldest_due' | 'default';
  batch: number;
  /** The low-water mark the claim carried (null: none, i.e. -infinity). */
  lowWater: string | null;
  /** false: planned only (no ANALYZE), so only the plan-time rules were judged and nothing was claimed. */
  analyzed: boolean;
  /** Jobs the claim would have taken (rolled back); 0 when not analyzed. */
  claimed: number;
  planningMs: number;
  executionMs: number;
  verdict: Verdict;
  rules: RuleResult[];
  partitions: PartitionInfo[];
  /** The EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) document, or EXPLAIN (FORMAT JSON, SUMMARY) when not analyzed. */
  explain: ExplainDocument;
}

const WORKER_ID = 'qmaint-explain';

/**
 * EXPLAIN ANALYZE the consumer's claim statement (claimQuery, with the
 * low-water mark read the way the consumer reads it) inside BEGIN ... ROLLBACK
 * under statement_timeout: the claim really runs, so the plan and its numbers
 * are real, and then nothing it did survives. Judged by the plan rules.
 * Without ANALYZE the same statement is only planned, by
 * qmaint.explain_claim(), and judged by the rules a plan alone can answer.
 */
export async function explainDequeue(db: Db, options: ExplainOptions): Promise<DequeueReport> {
  const thresholds = options.thresholds ?? DEFAULT_DEQUEUE_THRESHOLDS;
  return db.withClient(async (client) => {
    await client.query('BEGIN');
    try {
      await client.query(`SELECT set_config('statement_timeout', $1, true)`, [options.statementTimeout]);
      const lowWater = await readLowWater(client);
      const picked = options.queue !== undefined ? { queue: options.queue, source: 'given' as const } : await pickQueue(client, lowWater);
      const partitions = await partitionContext(client);
      const params = { queue: picked.queue, batch: options.batch, leaseSeconds: options.leaseSeconds, workerId: WORKER_ID, lowWater };
      const analyzed = options.analyze ?? (await mayUpdateJobs(client));
      const doc = analyzed ? await explainAnalyze(client, params) : await explainPlanOnly(client, params);
      const rules = judgePlan(doc, { partitions }, thresholds);
      return {
        queue: picked.queue,
        queueSource: picked.source,
        batch: options.batch,
        lowWater: lowWater ? lowWater.toISOString() : null,
        analyzed,
        claimed: rowsClaimed(doc),
        planningMs: doc['Planning Time'] ?? 0,
        executionMs: doc['Execution Time'] ?? 0,
        verdict: worstVerdict(rules.map((r) => r.verdict)),
        rules,
        partitions,
        explain: doc,
      };
    } catch (err) {
      if (sqlState(err) === '57014') {
        throw new QmaintError('critical', `the claim did not finish within statement_timeout ${options.statementTimeout}: dequeue is critically slow; run qmaint health to find out why (claim_index, xmin_horizon, dead_tuples)`, { cause: err });
      }
      throw err;
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
    }
  });
}

/** May this role run the claim (UPDATE on some column of qmaint.jobs)? */
async function mayUpdateJobs(client: pg.PoolClient): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>(`SELECT has_any_column_privilege('qmaint.jobs', 'UPDATE') AS ok`);
  return rows[0]?.ok === true;
}

async function explainAnalyze(client: pg.PoolClient, params: ClaimParams): Promise<ExplainDocument> {
  const { text, values } = claimQuery(params);
  // Plan once without running it so catalog caches are warm, as they are
  // in a long-lived consumer; the judged planning time is the second one.
  await client.query(`EXPLAIN (FORMAT JSON) ${text}`, values);
  const result = await client.query<{ 'QUERY PLAN': ExplainDocument[] }>(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`, values);
  return result.rows[0]!['QUERY PLAN'][0]!;
}

/** The statement explain_claim() runs for a plan without ANALYZE (also what --dry-run prints). */
export const EXPLAIN_CLAIM_SQL = 'SELECT qmaint.explain_claim($1, $2, $3, $4, $5, $6) AS plan';

async function explainPlanOnly(client: pg.PoolClient, params: ClaimParams): Promise<ExplainDocument> {
  const values = [CLAIM_SQL, params.queue, params.lowWater ?? null, params.batch, params.workerId, params.leaseSeconds];
  // Warm the caches first here too; the second plan is the one judged.
  await client.query(EXPLAIN_CLAIM_SQL, values);
  const { rows } = await client.query<{ plan: ExplainDocument[] }>(EXPLAIN_CLAIM_SQL, values);
  return rows[0]!.plan[0]!;
}

/** The low-water mark as the consumer reads it; -infinity means no bound. */
async function readLowWater(client: pg.PoolClient): Promise<Date | null> {
  const { rows } = await client.query<{ low_water: Date | number | null }>(LOW_WATER_SQL);
  const value = rows[0]?.low_water;
  return value instanceof Date && Number.isFinite(value.getTime()) ? value : null;
}

/** The queue whose oldest due job has waited longest, else "default". */
async function pickQueue(client: pg.PoolClient, lowWater: Date | null): Promise<{ queue: string; source: 'oldest_due' | 'default' }> {
  const { rows } = await client.query<{ queue: string }>(
    `SELECT queue FROM qmaint.jobs
      WHERE status = 'queued' AND run_at <= now() AND created_at >= $1
      ORDER BY run_at LIMIT 1`,
    [lowWater ?? '-infinity'],
  );
  return rows[0] ? { queue: rows[0].queue, source: 'oldest_due' } : { queue: 'default', source: 'default' };
}

/** Each partition of qmaint.jobs: state, size, its claim index, dead and live rows. */
export async function partitionContext(client: pg.ClientBase): Promise<PartitionInfo[]> {
  const { rows } = await client.query<{
    name: string;
    qualified: string;
    state: PartitionState;
    is_default: boolean;
    pages: number;
    claim_index: string | null;
    dead: number;
    live: number;
  }>(
    `SELECT c.relname AS name, n.nspname || '.' || c.relname AS qualified, s.state, s.is_default,
            (pg_relation_size(s.partition) / current_setting('block_size')::int)::int AS pages,
            ci.relname AS claim_index,
            coalesce(st.n_dead_tup, 0)::float8 AS dead, coalesce(st.n_live_tup, 0)::float8 AS live
       FROM qmaint.partition_states('qmaint.jobs', now()) s
       JOIN pg_class c ON c.oid = s.partition
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_stat_user_tables st ON st.relid = s.partition
       LEFT JOIN LATERAL (
         SELECT ic.relname
           FROM pg_inherits ih
           JOIN pg_index x ON x.indexrelid = ih.inhrelid
           JOIN pg_class ic ON ic.oid = x.indexrelid
          WHERE ih.inhparent = to_regclass('qmaint.jobs_claim_idx') AND x.indrelid = s.partition
            AND x.indisvalid AND x.indisready
          LIMIT 1) ci ON true
      ORDER BY s.lower_bound`,
  );
  return rows.map((r) => ({
    name: r.name,
    qualified: r.qualified,
    state: r.state,
    isDefault: r.is_default,
    pages: r.pages,
    claimIndex: r.claim_index,
    deadTuples: r.dead,
    liveTuples: r.live,
  }));
}
