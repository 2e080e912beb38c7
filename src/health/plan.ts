/**
 * Judging an EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the claim statement.
 * Pure functions over the plan document and a little catalog context, so they
 * can be tested on saved plans without a server.
 */

export type Verdict = 'ok' | 'warn' | 'critical';

/** One node of PostgreSQL's JSON plan (only the fields the rules read are typed). */
export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Schema?: string;
  'Index Name'?: string;
  'Parent Relationship'?: string;
  'Subplan Name'?: string;
  'Plan Rows'?: number;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  'Heap Fetches'?: number;
  'Shared Hit Blocks'?: number;
  'Shared Read Blocks'?: number;
  'Subplans Removed'?: number;
  Plans?: PlanNode[];
  [key: string]: unknown;
}

/** The one element of the array EXPLAIN (FORMAT JSON) returns. */
export interface ExplainDocument {
  Plan: PlanNode;
  'Planning Time'?: number;
  'Execution Time'?: number;
  Planning?: { 'Shared Hit Blocks'?: number; 'Shared Read Blocks'?: number };
  [key: string]: unknown;
}

/** A partition's state: future, hot (holds now), warm (past, holds live jobs) or drained. */
export type PartitionState = 'future' | 'hot' | 'warm' | 'drained';

/** What the rules need to know about each partition of qmaint.jobs. */
export interface PartitionInfo {
  /** Relation name as the plan shows it (unqualified). */
  name: string;
  /** schema.name */
  qualified: string;
  state: PartitionState;
  isDefault: boolean;
  /** Heap size in pages (pg_relation_size / block size); for qmaint.jobs partitions below the low-water mark, which the claim never scans, the catalog's relpages. */
  pages: number;
  /** Name of this partition's valid child of qmaint.jobs_claim_idx, if any. */
  claimIndex: string | null;
  deadTuples: number;
  liveTuples: number;
}

export interface PlanContext {
  partitions: PartitionInfo[];
}

/** Thresholds of the plan rules (docs/health.md lists them with their meaning). */
export interface DequeueThresholds {
  dequeue_seq_scan_max_pages: number;
  dequeue_bitmap_scan_max_pages: number;
  dequeue_drained_partitions_warn: number;
  dequeue_drained_partitions_critical: number;
  dequeue_rows_removed_warn: number;
  dequeue_rows_removed_critical: number;
  dequeue_heap_fetches_warn: number;
  dequeue_heap_fetches_critical: number;
  dequeue_dead_rows_warn: number;
  dequeue_dead_rows_critical: number;
  dequeue_buffers_warn: number;
  dequeue_buffers_critical: number;
  dequeue_planning_ms_warn: number;
  dequeue_planning_ms_critical: number;
  dequeue_execution_ms_warn: number;
  dequeue_execution_ms_critical: number;
}

/** The thresholds {@link explainDequeue} judges a plan by when none are given. */
export const DEFAULT_DEQUEUE_THRESHOLDS: DequeueThresholds = {
  dequeue_seq_scan_max_pages: 8,
  dequeue_bitmap_scan_max_pages: 128,
  dequeue_drained_partitions_warn: 1,
  dequeue_drained_partitions_critical: 10,
  dequeue_rows_removed_warn: 10,
  dequeue_rows_removed_critical: 100,
  dequeue_heap_fetches_warn: 10,
  dequeue_heap_fetches_critical: 100,
  dequeue_dead_rows_warn: 100_000,
  dequeue_dead_rows_critical: 1_000_000,
  dequeue_buffers_warn: 50,
  dequeue_buffers_critical: 500,
  dequeue_planning_ms_warn: 20,
  dequeue_planning_ms_critical: 200,
  dequeue_execution_ms_warn: 100,
  dequeue_execution_ms_critical: 1000,
};

/** One rule's verdict on the claim plan. */
export interface RuleResult {
  rule: string;
  verdict: Verdict;
  observed: string;
  threshold: string;
  /** What to do; present when the verdict is not ok. */
  recommendation?: string;
}

/** A scan of one relation, with where it sits in the plan. */
export interface ScanVisit {
  node: PlanNode;
  /** Under a LockRows node: part of the SELECT ... FOR UPDATE SKIP LOCKED that picks jobs. */
  claimSide: boolean;
  executed: boolean;
}

const rank: Record<Verdict, number> = { ok: 0, warn: 1, critical: 2 };

export function worstVerdict(verdicts: Verdict[]): Verdict {
  return verdicts.reduce<Verdict>((a, b) => (rank[b] > rank[a] ? b : a), 'ok');
}

/** Every node that scans a relation, depth first. */
export function scans(plan: PlanNode): ScanVisit[] {
  const hasLockRows = someNode(plan, (n) => n['Node Type'] === 'LockRows');
  const out: ScanVisit[] = [];
  const walk = (node: PlanNode, underLock: boolean) => {
    const claimSide = underLock || node['Node Type'] === 'LockRows';
    if (node['Relation Name'] !== undefined && node['Node Type'] !== 'ModifyTable') {
      out.push({ node, claimSide: hasLockRows ? claimSide : true, executed: (node['Actual Loops'] ?? 0) > 0 });
    }
    for (const child of node.Plans ?? []) walk(child, claimSide);
  };
  walk(plan, false);
  return out;
}

function someNode(node: PlanNode, test: (n: PlanNode) => boolean): boolean {
  return test(node) || (node.Plans ?? []).some((c) => someNode(c, test));
}

function sumNodes(node: PlanNode, value: (n: PlanNode) => number): number {
  return value(node) + (node.Plans ?? []).reduce((s, c) => s + sumNodes(c, value), 0);
}

/** Rows the statement returned: the jobs the claim would have taken. */
export function rowsClaimed(doc: ExplainDocument): number {
  return doc.Plan['Actual Rows'] ?? 0;
}

const loops = (n: PlanNode) => n['Actual Loops'] ?? 0;
const removed = (n: PlanNode) => ((n['Rows Removed by Filter'] ?? 0) + (n['Rows Removed by Index Recheck'] ?? 0)) * loops(n);

function perRow(value: number, claimed: number): number {
  return value / Math.max(1, claimed);
}

function grade(value: number, warn: number, critical: number): Verdict {
  if (value > critical) return 'critical';
  if (value > warn) return 'warn';
  return 'ok';
}

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(n < 10 ? 2 : 1));

function partitionOf(node: PlanNode, ctx: PlanContext): PartitionInfo | undefined {
  const name = node['Relation Name'];
  const schema = node.Schema;
  return ctx.partitions.find((p) => (schema ? p.qualified === `${schema}.${name}` : p.name === name));
}

/**
 * Rule: every partition the claim's SELECT ... FOR UPDATE SKIP LOCKED scans is
 * read through its claim index; other scans only on partitions below a size.
 */
export function claimIndexRule(doc: ExplainDocument, ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const problems: { text: string; verdict: Verdict }[] = [];
  const updateSeqScans: string[] = [];
  let viaIndex = 0;
  let claimScans = 0;
  for (const visit of scans(doc.Plan)) {
    const part = partitionOf(visit.node, ctx);
    if (!part) continue;
    const type = visit.node['Node Type'];
    const pages = part.pages;
    const label = `${part.qualified} (${pages} pages)`;
    if (visit.claimSide) {
      claimScans++;
      const usesClaimIndex = (type === 'Index Scan' || type === 'Index Only Scan') && part.claimIndex !== null && visit.node['Index Name'] === part.claimIndex;
      if (usesClaimIndex) {
        viaIndex++;
        continue;
      }
      const limit = type === 'Bitmap Heap Scan' ? t.dequeue_bitmap_scan_max_pages : t.dequeue_seq_scan_max_pages;
      const how = visit.node['Index Name'] ? `${type} using ${visit.node['Index Name']}` : type;
      problems.push({ text: `${label}: ${how}`, verdict: pages > limit ? 'critical' : 'ok' });
    } else if (type === 'Seq Scan' && visit.executed && pages > t.dequeue_seq_scan_max_pages) {
      // The UPDATE finds the claimed rows again by key; for a small batch the
      // planner may hash-join a seq scan of a modest partition, which is its
      // honest choice. The buffers and execution_time rules judge its cost.
      updateSeqScans.push(label);
    }
  }
  const verdict = worstVerdict(problems.map((p) => p.verdict));
  const bad = problems.filter((p) => p.verdict !== 'ok').map((p) => p.text);
  const small = problems.filter((p) => p.verdict === 'ok').map((p) => p.text);
  const parts = [`${viaIndex} of ${claimScans} partition scans use the claim index`];
  if (bad.length) parts.push(`not: ${bad.join(', ')}`);
  if (small.length) parts.push(`small, left to the planner: ${small.join(', ')}`);
  if (updateSeqScans.length) parts.push(`the update side seq-scans ${updateSeqScans.join(', ')} (see buffers)`);
  return {
    rule: 'claim_index',
    verdict,
    observed: parts.join('; '),
    threshold: `claim index on every partition; Seq Scan only up to ${t.dequeue_seq_scan_max_pages} pages, Bitmap Heap Scan up to ${t.dequeue_bitmap_scan_max_pages}`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'the claim reads those partitions without its partial index: run qmaint health (claim_index, invalid_indexes) and rebuild the missing or invalid index with REINDEX INDEX CONCURRENTLY or CREATE INDEX CONCURRENTLY + ALTER INDEX ... ATTACH PARTITION; then ANALYZE the partition so the planner sees its size',
        }),
  };
}

/** Rule: the claim touches only partitions that may hold live jobs. */
export function pruningRule(doc: ExplainDocument, ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const touched = new Map<string, PartitionInfo>();
  const executed = new Set<string>();
  for (const visit of scans(doc.Plan)) {
    const part = partitionOf(visit.node, ctx);
    if (!part) continue;
    touched.set(part.qualified, part);
    if (visit.executed) executed.add(part.qualified);
  }
  const byState = (s: PartitionState) => [...touched.values()].filter((p) => !p.isDefault && p.state === s);
  const drained = byState('drained');
  const removedAtRunTime = sumNodes(doc.Plan, (n) => n['Subplans Removed'] ?? 0);
  const prunedAtPlanTime = ctx.partitions.length - touched.size;
  const verdict = grade(drained.length, t.dequeue_drained_partitions_warn, t.dequeue_drained_partitions_critical);
  const defaults = [...touched.values()].filter((p) => p.isDefault).length;
  const runTime = analyzed(doc)
    ? `, subplans removed at run time ${removedAtRunTime}, never executed ${touched.size - executed.size}`
    : ' (not run: run-time pruning not measured)';
  const observed =
    `touches ${touched.size} of ${ctx.partitions.length} partitions (hot ${byState('hot').length}, warm ${byState('warm').length}, ` +
    `future ${byState('future').length}, drained ${drained.length}${defaults ? `, default ${defaults}` : ''}); ` +
    `pruned at plan time ${prunedAtPlanTime}${runTime}` +
    (drained.length
      ? `; drained: ${drained
          .slice(0, 5)
          .map((p) => p.qualified)
          .join(', ')}${drained.length > 5 ? ', ...' : ''}`
      : '');
  return {
    rule: 'pruning',
    verdict,
    observed,
    threshold: `at most ${t.dequeue_drained_partitions_warn} drained partition(s) (critical above ${t.dequeue_drained_partitions_critical})`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'the claim still scans partitions with no live job: run qmaint partitions rotate, which advances the low-water mark past them; if the mark does not move, an old queued or running job holds it (qmaint status)',
        }),
  };
}

/** Rule: rows the claim's scans read and threw away, per job claimed. */
export function rowsRemovedRule(doc: ExplainDocument, _ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const claimed = rowsClaimed(doc);
  const total = scans(doc.Plan)
    .filter((v) => v.claimSide)
    .reduce((s, v) => s + removed(v.node), 0);
  const ratio = perRow(total, claimed);
  const verdict = grade(ratio, t.dequeue_rows_removed_warn, t.dequeue_rows_removed_critical);
  return {
    rule: 'rows_removed',
    verdict,
    observed: `${fmt(ratio)} per job claimed (${total} removed by filter or recheck, ${claimed} claimed)`,
    threshold: `<= ${t.dequeue_rows_removed_warn} (critical above ${t.dequeue_rows_removed_critical})`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'the scans read rows the claim does not want: check that the claim index is used (claim_index) and ANALYZE the hot partitions so the planner picks it',
        }),
  };
}

/** Rule: heap rows fetched by the claim's scans per job claimed (includes rows other consumers hold locked). */
export function heapFetchesRule(doc: ExplainDocument, _ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const claimed = rowsClaimed(doc);
  let fetched = 0;
  for (const { node, claimSide } of scans(doc.Plan)) {
    if (!claimSide) continue;
    if (node['Node Type'] === 'Index Only Scan') fetched += node['Heap Fetches'] ?? 0;
    else fetched += (node['Actual Rows'] ?? 0) * loops(node) + removed(node);
  }
  const ratio = perRow(fetched, claimed);
  const verdict = grade(ratio, t.dequeue_heap_fetches_warn, t.dequeue_heap_fetches_critical);
  return {
    rule: 'heap_fetches',
    verdict,
    observed: `${fmt(ratio)} per job claimed (${fetched} heap rows fetched, ${claimed} claimed)`,
    threshold: `<= ${t.dequeue_heap_fetches_warn} (critical above ${t.dequeue_heap_fetches_critical})`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'each claim steps over many rows before it finds free ones: too many consumers on one queue for the batch size (fewer consumers or a smaller batch), or rows removed by a filter (see rows_removed)',
        }),
  };
}

/** Rule: dead rows in the partitions the claim scans, which its index scan must step over. */
export function deadRowsRule(doc: ExplainDocument, ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const seen = new Map<string, PartitionInfo>();
  for (const visit of scans(doc.Plan)) {
    const part = partitionOf(visit.node, ctx);
    if (part && visit.claimSide) seen.set(part.qualified, part);
  }
  const parts = [...seen.values()];
  const dead = parts.reduce((s, p) => s + p.deadTuples, 0);
  const live = parts.reduce((s, p) => s + p.liveTuples, 0);
  const worst = parts.sort((a, b) => b.deadTuples - a.deadTuples)[0];
  const verdict = grade(dead, t.dequeue_dead_rows_warn, t.dequeue_dead_rows_critical);
  return {
    rule: 'dead_rows',
    verdict,
    observed: `${dead} dead, ${live} live rows in the ${parts.length} partition(s) the claim scans${worst && worst.deadTuples > 0 ? ` (most in ${worst.qualified}: ${worst.deadTuples})` : ''}`,
    threshold: `<= ${t.dequeue_dead_rows_warn} (critical above ${t.dequeue_dead_rows_critical})`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'autovacuum lags on the partitions the claim scans: check the xmin horizon (qmaint health: xmin_horizon, idle_in_transaction), run qmaint vacuum tune, or qmaint vacuum run on the partition',
        }),
  };
}

/** Rule: shared buffers touched per job claimed. */
export function buffersRule(doc: ExplainDocument, _ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const claimed = rowsClaimed(doc);
  const buffers = (doc.Plan['Shared Hit Blocks'] ?? 0) + (doc.Plan['Shared Read Blocks'] ?? 0);
  const read = doc.Plan['Shared Read Blocks'] ?? 0;
  const planning = (doc.Planning?.['Shared Hit Blocks'] ?? 0) + (doc.Planning?.['Shared Read Blocks'] ?? 0);
  const ratio = perRow(buffers, claimed);
  const verdict = grade(ratio, t.dequeue_buffers_warn, t.dequeue_buffers_critical);
  return {
    rule: 'buffers',
    verdict,
    observed: `${fmt(ratio)} per job claimed (${buffers} shared buffers, ${read} read from disk, ${claimed} claimed; planning ${planning})`,
    threshold: `<= ${t.dequeue_buffers_warn} (critical above ${t.dequeue_buffers_critical})`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'the claim reads many pages per job: dead index entries (dead_rows, xmin horizon) or unpruned partitions (pruning) are the usual causes; vacuum the hot partition and run qmaint partitions rotate',
        }),
  };
}

export function planningTimeRule(doc: ExplainDocument, _ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const ms = doc['Planning Time'] ?? 0;
  const verdict = grade(ms, t.dequeue_planning_ms_warn, t.dequeue_planning_ms_critical);
  return {
    rule: 'planning_time',
    verdict,
    observed: `${fmt(ms)} ms`,
    threshold: `<= ${t.dequeue_planning_ms_warn} ms (critical above ${t.dequeue_planning_ms_critical} ms)`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'planning cost grows with the partitions the planner must consider: retire expired partitions (qmaint partitions rotate) and keep the low-water mark moving (pruning)',
        }),
  };
}

export function executionTimeRule(doc: ExplainDocument, _ctx: PlanContext, t: DequeueThresholds): RuleResult {
  const ms = doc['Execution Time'] ?? 0;
  const verdict = grade(ms, t.dequeue_execution_ms_warn, t.dequeue_execution_ms_critical);
  return {
    rule: 'execution_time',
    verdict,
    observed: `${fmt(ms)} ms for ${rowsClaimed(doc)} job(s)`,
    threshold: `<= ${t.dequeue_execution_ms_warn} ms (critical above ${t.dequeue_execution_ms_critical} ms)`,
    ...(verdict === 'ok'
      ? {}
      : {
          recommendation:
            'the claim itself is slow: look at the failing rules above; if all pass, the server is overloaded (check locks and I/O) or the batch is too large',
        }),
  };
}

/** Every plan rule, in the order they are reported. */
export const PLAN_RULES = [claimIndexRule, pruningRule, rowsRemovedRule, heapFetchesRule, deadRowsRule, buffersRule, planningTimeRule, executionTimeRule];

/** The rules a plan that was not run (no ANALYZE) can answer: which partitions and indexes it reads, what they hold, planning time. */
export const PLAN_ONLY_RULES = [claimIndexRule, pruningRule, deadRowsRule, planningTimeRule];

/** Was the statement run (EXPLAIN ANALYZE)? Only then are row counts, buffers and times real. */
export function analyzed(doc: ExplainDocument): boolean {
  return doc['Execution Time'] !== undefined;
}

export function judgePlan(doc: ExplainDocument, ctx: PlanContext, thresholds: DequeueThresholds = DEFAULT_DEQUEUE_THRESHOLDS): RuleResult[] {
  return (analyzed(doc) ? PLAN_RULES : PLAN_ONLY_RULES).map((rule) => rule(doc, ctx, thresholds));
}

/** The plan as an indented text tree (what `--plan` prints). */
export function planTree(doc: ExplainDocument): string[] {
  const lines: string[] = [];
  const walk = (node: PlanNode, depth: number) => {
    const on = node['Relation Name'] ? ` on ${node.Schema ? node.Schema + '.' : ''}${node['Relation Name']}` : '';
    const using = node['Index Name'] ? ` using ${node['Index Name']}` : '';
    const role = node['Subplan Name'] ? ` [${node['Subplan Name']}]` : '';
    const executed = !analyzed(doc)
      ? `estimated rows=${node['Plan Rows'] ?? '?'}`
      : loops(node) > 0
        ? `rows=${node['Actual Rows'] ?? 0} loops=${loops(node)}`
        : 'never executed';
    const extras = [
      node['Rows Removed by Filter'] ? `removed by filter=${node['Rows Removed by Filter']}` : '',
      node['Heap Fetches'] ? `heap fetches=${node['Heap Fetches']}` : '',
      node['Subplans Removed'] ? `subplans removed=${node['Subplans Removed']}` : '',
      (node['Shared Hit Blocks'] ?? 0) + (node['Shared Read Blocks'] ?? 0) > 0
        ? `buffers hit=${node['Shared Hit Blocks'] ?? 0} read=${node['Shared Read Blocks'] ?? 0}`
        : '',
    ].filter(Boolean);
    const indent = depth === 0 ? '' : '  '.repeat(depth - 1) + '-> ';
    lines.push(`${indent}${node['Node Type']}${using}${on}${role} (${[executed, ...extras].join(', ')})`);
    for (const child of node.Plans ?? []) walk(child, depth + 1);
  };
  walk(doc.Plan, 0);
  lines.push(`Planning Time: ${fmt(doc['Planning Time'] ?? 0)} ms`);
  lines.push(analyzed(doc) ? `Execution Time: ${fmt(doc['Execution Time'] ?? 0)} ms` : 'Not executed (plan only, no ANALYZE)');
  return lines;
}
