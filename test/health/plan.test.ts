import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DEQUEUE_THRESHOLDS, judgePlan, planTree, type ExplainDocument, type PartitionInfo, type RuleResult } from '../../src/health/plan.js';
import { parseThresholdFlags, parseThresholdSetting, resolveThresholds } from '../../src/health/thresholds.js';

// Saved EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) documents of the real claim
// statement with the partition context explainDequeue collected beside them.
const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
function fixture(name: string): { explain: ExplainDocument; partitions: PartitionInfo[] } {
  return JSON.parse(readFileSync(path.join(dir, `${name}.json`), 'utf8')) as { explain: ExplainDocument; partitions: PartitionInfo[] };
}
function judge(name: string, thresholds = DEFAULT_DEQUEUE_THRESHOLDS): Record<string, RuleResult> {
  const f = fixture(name);
  return Object.fromEntries(judgePlan(f.explain, { partitions: f.partitions }, thresholds).map((r) => [r.rule, r]));
}

describe('plan rules on saved plans', () => {
  it('a claim over the claim index with pruned partitions passes every rule', () => {
    for (const name of ['healthy', 'pruned', 'healthy-pg15']) {
      const rules = judge(name);
      expect(Object.keys(rules)).toEqual(['claim_index', 'pruning', 'rows_removed', 'heap_fetches', 'dead_rows', 'buffers', 'planning_time', 'execution_time']);
      for (const rule of Object.values(rules)) {
        expect(rule.verdict, `${name} ${rule.rule}: ${rule.observed}`).toBe('ok');
        expect(rule.recommendation).toBeUndefined();
      }
    }
    expect(judge('healthy').claim_index!.observed).toMatch(/^4 of 4 partition scans use the claim index/);
    // The UPDATE's hash join over a modest partition is noted, not failed: buffers judges its cost.
    expect(judge('healthy').claim_index!.observed).toMatch(/the update side seq-scans qmaint\.jobs_p\d+ \(\d+ pages\)/);
  });

  it('a Seq Scan of a partition in the claim is critical, with the rows it threw away', () => {
    const rules = judge('seq-scan');
    expect(rules.claim_index!.verdict).toBe('critical');
    expect(rules.claim_index!.observed).toMatch(/jobs_p\d+ \(\d+ pages\): Seq Scan/);
    expect(rules.claim_index!.recommendation).toMatch(/REINDEX INDEX CONCURRENTLY/);
    // The seq scan reads 5,000 rows of another queue to find 100.
    expect(rules.rows_removed!.verdict).not.toBe('ok');
    expect(rules.rows_removed!.observed).toMatch(/\(\d+ removed by filter or recheck, 100 claimed\)/);
    expect(rules.heap_fetches!.verdict).not.toBe('ok');
  });

  it('a small partition may be seq-scanned: the size threshold decides', () => {
    const lenient = { ...DEFAULT_DEQUEUE_THRESHOLDS, dequeue_seq_scan_max_pages: 100_000 };
    const rules = judge('seq-scan', lenient);
    expect(rules.claim_index!.verdict).toBe('ok');
    expect(rules.claim_index!.observed).toMatch(/small, left to the planner: .*Seq Scan/);
  });

  it('a Bitmap Heap Scan is judged against its own size threshold', () => {
    expect(judge('bitmap-scan').claim_index!.verdict).toBe('critical');
    expect(judge('bitmap-scan').claim_index!.observed).toMatch(/Bitmap Heap Scan/);
    const lenient = { ...DEFAULT_DEQUEUE_THRESHOLDS, dequeue_bitmap_scan_max_pages: 100_000 };
    expect(judge('bitmap-scan', lenient).claim_index!.verdict).toBe('ok');
  });

  it('drained partitions left in the plan fail pruning; a low-water mark prunes them', () => {
    const unpruned = judge('unpruned').pruning!;
    expect(unpruned.verdict).toBe('critical');
    expect(unpruned.observed).toMatch(/drained 15\b/);
    expect(unpruned.observed).toMatch(/pruned at plan time 0/);
    expect(unpruned.recommendation).toMatch(/qmaint partitions rotate/);
    const pruned = judge('pruned').pruning!;
    expect(pruned.observed).toMatch(/touches 5 of 19 partitions/);
    expect(pruned.observed).toMatch(/pruned at plan time 14/);
    expect(judge('unpruned', { ...DEFAULT_DEQUEUE_THRESHOLDS, dequeue_drained_partitions_critical: 20 }).pruning!.verdict).toBe('warn');
  });

  it('per-row and timing rules compare against their thresholds', () => {
    const strict = Object.fromEntries(Object.keys(DEFAULT_DEQUEUE_THRESHOLDS).map((k) => [k, 0])) as unknown as typeof DEFAULT_DEQUEUE_THRESHOLDS;
    const rules = judge('healthy', { ...strict, dequeue_seq_scan_max_pages: 8, dequeue_bitmap_scan_max_pages: 128 });
    for (const rule of ['heap_fetches', 'buffers', 'planning_time', 'execution_time']) {
      expect(rules[rule]!.verdict, rule).toBe('critical');
      expect(rules[rule]!.recommendation).toBeTruthy();
    }
    // This plan removes no rows: 0 is not above a threshold of 0.
    expect(rules.rows_removed!.observed).toMatch(/^0 per job claimed/);
    expect(rules.rows_removed!.verdict).toBe('ok');
  });

  it('dead rows come from the statistics of the partitions the claim scans', () => {
    const f = fixture('healthy');
    const partitions = f.partitions.map((p, i) => (i === 0 ? { ...p, deadTuples: 250_000 } : p));
    const rule = judgePlan(f.explain, { partitions }).find((r) => r.rule === 'dead_rows')!;
    expect(rule.verdict).toBe('warn');
    expect(rule.observed).toMatch(/250000 dead/);
  });

  it('the plan tree names every node, index and relation', () => {
    const lines = planTree(fixture('healthy').explain);
    expect(lines[0]).toMatch(/^ModifyTable on jobs/);
    expect(lines.some((l) => /-> LockRows/.test(l))).toBe(true);
    expect(lines.some((l) => /Index Scan using jobs_p\d+_queue_priority_run_at_id_idx on jobs_p\d+/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/^Execution Time: [\d.]+ ms$/);
  });
});

describe('thresholds', () => {
  it('splits plan thresholds from server thresholds; later sources win', () => {
    const t = resolveThresholds(
      parseThresholdSetting('{"dequeue_buffers_warn": 5, "oldest_queued_warn": "5 minutes"}'),
      parseThresholdFlags(['dequeue_buffers_warn=7', 'failed_critical=3']),
    );
    expect(t.dequeue.dequeue_buffers_warn).toBe(7);
    expect(t.dequeue.dequeue_planning_ms_warn).toBe(DEFAULT_DEQUEUE_THRESHOLDS.dequeue_planning_ms_warn);
    expect(t.server).toEqual({ oldest_queued_warn: '5 minutes', failed_critical: 3 });
  });

  it('refuses unknown plan thresholds, bad numbers, bad JSON and malformed flags', () => {
    expect(() => resolveThresholds({ dequeue_nope: 1 })).toThrow(/unknown threshold dequeue_nope/);
    expect(() => resolveThresholds({ dequeue_buffers_warn: 'many' })).toThrow(/must be a number/);
    expect(() => resolveThresholds({ oldest_queued_warn: ['x'] })).toThrow(/must be a number or a string/);
    expect(() => parseThresholdSetting('{oops')).toThrow(/not valid JSON/);
    expect(() => parseThresholdSetting('[1]')).toThrow(/must be a JSON object/);
    expect(() => parseThresholdFlags(['nothing'])).toThrow(/name=value/);
  });
});
