import type pg from 'pg';
import type { Db, SqlValue } from '../db.js';
import { QmaintError, sqlState } from '../errors.js';
import { CLAIM_SQL, claimQuery, LOW_WATER_SQL } from '../queue/claim.js';
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

/** Options of {@link explainDequeue}. */
export interface ExplainOptions {
  /** Queue to explain; default: the queue of the oldest due job, else "default". */
  queue?: string;
  /** Jobs per claim, as the consumer claims them (its default is 100). */
  batch: number;
  /** Lease the claim would give, in seconds (the consumer's default is 60). */
  leaseSeconds: number;
  /** statement_timeout for the whole explain (PostgreSQL interval text). */
  statementTimeout: string;
  /** What the plan is judged by (default {@link DEFAULT_DEQUEUE_THRESHOLDS}). */
  thresholds?: DequeueThresholds;
  /**
   * true: EXPLAIN ANALYZE the claim (it runs, then rolls back); false: plan it
   * only, through qmaint.explain_claim() (what a role without UPDATE on
   * qmaint.jobs can do); default: ANALYZE when this role may update jobs.
   */
  analyze?: boolean;
}

/** What {@link explainDequeue} returns: the plan of the claim statement and the verdict of each rule. */
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

/** A claim's plan judged by the rules, with what both explain reports carry of it. */
function judged(doc: ExplainDocument, partitions: PartitionInfo[], thresholds: DequeueThresholds) {
  const rules = judgePlan(doc, { partitions }, thresholds);
  return {
    claimed: rowsClaimed(doc),
    planningMs: doc['Planning Time'] ?? 0,
    executionMs: doc['Execution Time'] ?? 0,
    verdict: worstVerdict(rules.map((r) => r.verdict)),
    rules,
    partitions,
    explain: doc,
  };
}

/** One statement explainDequeue runs: what for, the SQL, its parameters. */
export interface ExplainStatement {
  purpose: 'begin' | 'timeout' | 'low-water' | 'pick-queue' | 'partitions' | 'privilege' | 'warm-up' | 'explain' | 'rollback';
  sql: string;
  values: SqlValue[];
}

/** The lock the explain takes: with ANALYZE the claim really runs, then rolls back; without, it is only planned. */
export function explainLockLevel(analyze: boolean): string {
  return analyze
    ? 'ROW EXCLUSIVE on qmaint.jobs and row locks on the claimed jobs, released by the ROLLBACK'
    : 'ROW EXCLUSIVE on qmaint.jobs while it is planned (no row is locked), released by the ROLLBACK';
}

/** How explain_claim() plans the claim for a role without UPDATE: $1 the claim statement (checked by its hash), then its values. */
const EXPLAIN_CLAIM_SQL = 'SELECT qmaint.explain_claim($1, $2, $3, $4, $5, $6) AS plan';

/** May this role run the claim (UPDATE on some column of qmaint.jobs)? */
const PRIVILEGE_SQL = `SELECT has_any_column_privilege('qmaint.jobs', 'UPDATE') AS ok`;

/** The queue whose oldest due job has waited longest ($1: the low-water mark). */
const PICK_QUEUE_SQL = `SELECT queue FROM qmaint.jobs
  WHERE status = 'queued' AND run_at <= now() AND created_at >= $1
  ORDER BY run_at LIMIT 1`;

/**
 * Every statement explainDequeue runs, in order, for a queue and low-water
 * mark (what `explain --dry-run` prints). Where they are not known yet (a dry
 * run), the queue is the one the pick-queue statement finds and the mark the
 * one the low-water statement reads; without options.analyze the privilege
 * statement decides, and the list shows the EXPLAIN ANALYZE form unless known.
 */
export function explainStatements(options: ExplainOptions, known: { queue?: string; lowWater?: Date | null; analyze?: boolean } = {}): ExplainStatement[] {
  const queue = options.queue ?? known.queue;
  const lowWater = known.lowWater === undefined ? '<the low-water mark read above>' : known.lowWater;
  const params = {
    queue: queue ?? '<the queue picked above>',
    batch: options.batch,
    leaseSeconds: options.leaseSeconds,
    workerId: WORKER_ID,
    lowWater: lowWater as Date | null,
  };
  const claim = claimQuery(params);
  const analyze = options.analyze ?? known.analyze ?? true;
  const planned = analyze
    ? { warm: `EXPLAIN (FORMAT JSON) ${claim.text}`, explain: `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${claim.text}`, values: claim.values }
    : {
        warm: EXPLAIN_CLAIM_SQL,
        explain: EXPLAIN_CLAIM_SQL,
        values: [CLAIM_SQL, params.queue, params.lowWater, params.batch, params.workerId, params.leaseSeconds],
      };
  return [
    { purpose: 'begin', sql: 'BEGIN', values: [] },
    { purpose: 'timeout', sql: `SELECT set_config('statement_timeout', $1, true)`, values: [options.statementTimeout] },
    { purpose: 'low-water', sql: LOW_WATER_SQL, values: [] },
    ...(options.queue === undefined ? [{ purpose: 'pick-queue' as const, sql: PICK_QUEUE_SQL, values: [lowWater ?? '-infinity'] }] : []),
    { purpose: 'partitions', sql: PARTITION_CONTEXT_SQL, values: [] },
    ...(options.analyze === undefined ? [{ purpose: 'privilege' as const, sql: PRIVILEGE_SQL, values: [] }] : []),
    // Planned once without running so catalog caches are warm, as they are in a
    // long-lived consumer; the judged planning time is the second one.
    { purpose: 'warm-up', sql: planned.warm, values: planned.values },
    { purpose: 'explain', sql: planned.explain, values: planned.values },
    { purpose: 'rollback', sql: 'ROLLBACK', values: [] },
  ];
}

function statement(list: ExplainStatement[], purpose: ExplainStatement['purpose']): ExplainStatement {
  return list.find((s) => s.purpose === purpose)!;
}

/**
 * EXPLAIN ANALYZE the consumer's claim statement (claimQuery, with the
 * low-water mark read the way the consumer reads it) inside BEGIN ... ROLLBACK
 * under statement_timeout: the claim really runs, so the plan and its numbers
 * are real, and then nothing it did survives. Judged by the plan rules.
 * Without ANALYZE the same statement is only planned, by
 * qmaint.explain_claim(), and judged by the rules a plan alone can answer.
 * It runs exactly explainStatements(), in that order.
 *
 * @param db - the database
 * @param options - see {@link ExplainOptions}; thresholds default to {@link DEFAULT_DEQUEUE_THRESHOLDS}
 * @returns the plan, each rule's verdict and the worst of them
 * @throws {@link QmaintError} `critical` when the claim does not finish within `statementTimeout`; a classified QmaintError for any other failure of the server
 */
export async function explainDequeue(db: Db, options: ExplainOptions): Promise<DequeueReport> {
  const thresholds = options.thresholds ?? DEFAULT_DEQUEUE_THRESHOLDS;
  return db.withClient(async (client) => {
    const run = <R extends pg.QueryResultRow>(st: ExplainStatement) => client.query<R>(st.sql, st.values);
    const first = explainStatements(options);
    await run(statement(first, 'begin'));
    try {
      await run(statement(first, 'timeout'));
      const lowWater = lowWaterOf((await run<{ low_water: Date | number | null }>(statement(first, 'low-water'))).rows[0]?.low_water);
      let picked: { queue: string; source: DequeueReport['queueSource'] } = { queue: options.queue ?? '', source: 'given' };
      if (options.queue === undefined) {
        const { rows } = await run<{ queue: string }>(statement(explainStatements(options, { lowWater }), 'pick-queue'));
        picked = rows[0] ? { queue: rows[0].queue, source: 'oldest_due' } : { queue: 'default', source: 'default' };
      }
      const known = explainStatements(options, { queue: picked.queue, lowWater });
      const partitions = partitionInfo((await run<PartitionRow>(statement(known, 'partitions'))).rows);
      const analyzed = options.analyze ?? (await run<{ ok: boolean }>(statement(known, 'privilege'))).rows[0]?.ok === true;
      const steps = explainStatements(options, { queue: picked.queue, lowWater, analyze: analyzed });
      await run(statement(steps, 'warm-up'));
      const result = await run<{ 'QUERY PLAN'?: ExplainDocument[]; plan?: ExplainDocument[] }>(statement(steps, 'explain'));
      const doc = (analyzed ? result.rows[0]!['QUERY PLAN'] : result.rows[0]!.plan)![0]!;
      return {
        queue: picked.queue,
        queueSource: picked.source,
        batch: options.batch,
        lowWater: lowWater ? lowWater.toISOString() : null,
        analyzed,
        ...judged(doc, partitions, thresholds),
      };
    } catch (err) {
      if (sqlState(err) === '57014') {
        throw new QmaintError(
          'critical',
          `the claim did not finish within statement_timeout ${options.statementTimeout}: dequeue is critically slow; run qmaint health to find out why (claim_index, xmin_horizon, dead_tuples)`,
          { cause: err },
        );
      }
      throw err;
    } finally {
      await client.query(statement(first, 'rollback').sql).catch(() => undefined);
    }
  });
}

/** The low-water mark as the consumer reads it; -infinity means no bound. */
function lowWaterOf(value: Date | number | null | undefined): Date | null {
  return value instanceof Date && Number.isFinite(value.getTime()) ? value : null;
}

/**
 * Each partition of qmaint.jobs: state, size, its claim index, dead and live
 * rows. The claim scans only partitions from the low-water mark on: their
 * size is measured (pg_relation_size); below the mark it is the catalog's
 * relpages, since measuring opens each relation (seconds at 1,000 partitions
 * on a new connection) for partitions the claim never reads.
 */
const PARTITION_CONTEXT_SQL = `SELECT c.relname AS name, n.nspname || '.' || c.relname AS qualified, s.state, s.is_default,
       CASE WHEN s.is_default OR s.upper_bound > coalesce((SELECT low_water FROM qmaint.partition_policy WHERE parent_table = 'qmaint.jobs'), '-infinity')
            THEN (pg_relation_size(s.partition) / current_setting('block_size')::int)::int ELSE c.relpages END AS pages,
       ci.relname AS claim_index,
       pg_stat_get_dead_tuples(s.partition)::float8 AS dead, pg_stat_get_live_tuples(s.partition)::float8 AS live
  FROM qmaint.partition_states('qmaint.jobs', now()) s
  JOIN pg_class c ON c.oid = s.partition
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL (
    SELECT ic.relname
      FROM pg_inherits ih
      JOIN pg_index x ON x.indexrelid = ih.inhrelid
      JOIN pg_class ic ON ic.oid = x.indexrelid
     WHERE ih.inhparent = to_regclass('qmaint.jobs_claim_idx') AND x.indrelid = s.partition
       AND x.indisvalid AND x.indisready
     LIMIT 1) ci ON true
 ORDER BY s.lower_bound`;

interface PartitionRow {
  name: string;
  qualified: string;
  state: PartitionState;
  is_default: boolean;
  pages: number;
  claim_index: string | null;
  dead: number;
  live: number;
}

function partitionInfo(rows: PartitionRow[]): PartitionInfo[] {
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

export interface ExplainSqlOptions {
  /** The user's own claim statement: one statement, literal values, no parameters. */
  sql: string;
  /** The managed table it claims from (schema.table); it must have a partition policy. */
  table: string;
  statementTimeout: string;
  thresholds?: DequeueThresholds;
  /** false: plan only (EXPLAIN without ANALYZE); default true: run it, rolled back. */
  analyze?: boolean;
}

export interface SqlClaimReport {
  table: string;
  analyzed: boolean;
  /** Rows the statement would have claimed (rolled back); 0 when not analyzed. */
  claimed: number;
  planningMs: number;
  executionMs: number;
  verdict: Verdict;
  rules: RuleResult[];
  partitions: PartitionInfo[];
  explain: ExplainDocument;
}

/**
 * Each partition of a managed table, for judging a user's claim: the claim
 * index of a partition is a valid partial index whose predicate names the
 * policy's waiting value (status = 'queued' on the seed-style table).
 */
const TABLE_PARTITION_CONTEXT_SQL = `SELECT c.relname AS name, n.nspname || '.' || c.relname AS qualified, s.state, s.is_default,
       (pg_relation_size(s.partition) / current_setting('block_size')::int)::int AS pages,
       ci.relname AS claim_index,
       coalesce(st.n_dead_tup, 0)::float8 AS dead, coalesce(st.n_live_tup, 0)::float8 AS live
  FROM qmaint.partition_states($1::regclass, now()) s
  JOIN pg_class c ON c.oid = s.partition
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables st ON st.relid = s.partition
  LEFT JOIN LATERAL (
    SELECT ic.relname
      FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
     WHERE x.indrelid = s.partition AND x.indisvalid AND x.indisready AND x.indpred IS NOT NULL
       AND strpos(pg_get_expr(x.indpred, x.indrelid), quote_literal($2)) > 0
     ORDER BY ic.relname LIMIT 1) ci ON true
 ORDER BY s.lower_bound`;

/** Why a claim statement cannot be explained as given, or null. */
export function checkClaimSql(sql: string): string | null {
  const text = sql.trim().replace(/;\s*$/, '').trim();
  if (text === '') return 'the claim statement is empty';
  if (text.includes(';')) return 'the claim statement must be one statement (found a ";" inside it)';
  if (/\$\d/.test(text)) return 'the claim statement has parameters ($1 ...); put literal values in their place';
  if (!/^(with|update|select|delete)\b/i.test(text)) return 'the claim statement must be a WITH, UPDATE, SELECT or DELETE statement';
  return null;
}

/**
 * EXPLAIN a user's own claim statement on a managed table (an adopted one, say)
 * the way explainDequeue explains qmaint's: inside BEGIN ... ROLLBACK under
 * statement_timeout, planned once to warm the caches, then EXPLAIN (ANALYZE,
 * BUFFERS) so it really runs and nothing it did survives; judged by the same
 * plan rules, with the table's partitions and their claim indexes.
 */
/** Every statement explainClaimSql runs, in order (what `explain dequeue --sql FILE --dry-run` prints); $2 of partitions is the policy's waiting value. */
export function explainSqlStatements(options: ExplainSqlOptions): { purpose: string; sql: string; values: SqlValue[] }[] {
  const problem = checkClaimSql(options.sql);
  if (problem) throw new QmaintError('bad_input', problem);
  const sql = options.sql.trim().replace(/;\s*$/, '');
  return [
    { purpose: 'policy', sql: `SELECT live_values[1] AS waiting FROM qmaint.partition_policy WHERE parent_table = $1`, values: [options.table] },
    { purpose: 'begin', sql: 'BEGIN', values: [] },
    { purpose: 'timeout', sql: `SELECT set_config('statement_timeout', $1, true)`, values: [options.statementTimeout] },
    { purpose: 'partitions', sql: TABLE_PARTITION_CONTEXT_SQL, values: [options.table, '<the waiting value read above>'] },
    { purpose: 'warm-up', sql: `EXPLAIN (FORMAT JSON) ${sql}`, values: [] },
    { purpose: 'explain', sql: `EXPLAIN (${options.analyze === false ? '' : 'ANALYZE, BUFFERS, '}FORMAT JSON) ${sql}`, values: [] },
    { purpose: 'rollback', sql: 'ROLLBACK', values: [] },
  ];
}

export async function explainClaimSql(db: Db, options: ExplainSqlOptions): Promise<SqlClaimReport> {
  const steps = explainSqlStatements(options);
  const st = (purpose: string) => steps.find((x) => x.purpose === purpose)!;
  const analyze = options.analyze ?? true;
  const thresholds = options.thresholds ?? DEFAULT_DEQUEUE_THRESHOLDS;
  return db.withClient(async (client) => {
    const policy = (await client.query<{ waiting: string }>(st('policy').sql, st('policy').values)).rows[0];
    if (!policy)
      throw new QmaintError('bad_input', `${options.table} has no partition policy; name a managed table (qmaint adopt or qmaint partitions apply makes one)`);
    await client.query(st('begin').sql);
    try {
      await client.query(st('timeout').sql, st('timeout').values);
      const partitions = partitionInfo((await client.query<PartitionRow>(st('partitions').sql, [options.table, policy.waiting])).rows);
      await client.query(st('warm-up').sql);
      const result = await client.query<{ 'QUERY PLAN': ExplainDocument[] }>(st('explain').sql);
      const doc = result.rows[0]!['QUERY PLAN'][0]!;
      return { table: options.table, analyzed: analyze, ...judged(doc, partitions, thresholds) };
    } catch (err) {
      if (sqlState(err) === '57014') {
        throw new QmaintError('critical', `the claim did not finish within statement_timeout ${options.statementTimeout}: dequeue is critically slow`, {
          cause: err,
        });
      }
      throw err;
    } finally {
      await client.query(st('rollback').sql).catch(() => undefined);
    }
  });
}
