import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DequeueReport } from '../../src/health/explain.js';
import { cleanEnv, freshDatabase, pgbouncerUrl, runCli, type TestDatabase } from '../helpers.js';

// Timing rules are judged on saved plans (plan.test.ts); here they are lifted so
// no verdict depends on how fast this machine is.
const env = cleanEnv({
  QMAINT_HEALTH_THRESHOLDS: JSON.stringify({
    dequeue_planning_ms_warn: 1e9,
    dequeue_planning_ms_critical: 1e9,
    dequeue_execution_ms_warn: 1e9,
    dequeue_execution_ms_critical: 1e9,
  }),
});

type ExplainJson = DequeueReport & { ok: boolean };

/** Every column of every job, in a stable order: what "nothing changed" means. */
async function jobsSnapshot(t: TestDatabase): Promise<unknown[]> {
  const { rows } = await t.db.query(`SELECT j.*, j.tableoid::regclass::text AS part FROM qmaint.jobs j ORDER BY id`);
  return rows;
}

async function enqueueQueued(t: TestDatabase, queue: string, n: number): Promise<void> {
  await t.db.query(`INSERT INTO qmaint.jobs (queue, payload) SELECT $1, jsonb_build_object('n', g) FROM generate_series(1, $2::int) g`, [queue, n]);
}

/** The hot partition's child of qmaint.jobs_claim_idx. */
async function hotClaimIndex(t: TestDatabase): Promise<{ partition: string; index: string }> {
  const { rows } = await t.db.query<{ partition: string; index: string }>(
    `SELECT p.partition::text AS partition, x.indexrelid::regclass::text AS index
       FROM qmaint.partitions_of('qmaint.jobs') p
       JOIN pg_index x ON x.indrelid = p.partition
       JOIN pg_inherits ih ON ih.inhrelid = x.indexrelid AND ih.inhparent = 'qmaint.jobs_claim_idx'::regclass
      WHERE p.lower_bound <= now() AND now() < p.upper_bound`,
  );
  return rows[0]!;
}

describe('qmaint explain dequeue', () => {
  it('explains an empty queue without error', async () => {
    const t = await freshDatabase();
    const r = await runCli(['explain', 'dequeue', '--json', '--database-url', t.url], { env });
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<ExplainJson>();
    expect(doc.ok).toBe(true);
    expect(doc.queue).toBe('default');
    expect(doc.queueSource).toBe('default');
    expect(doc.claimed).toBe(0);
    expect(doc.verdict).toBe('ok');
    expect(doc.rules.map((x) => x.rule)).toEqual([
      'claim_index',
      'pruning',
      'rows_removed',
      'heap_fetches',
      'dead_rows',
      'buffers',
      'planning_time',
      'execution_time',
    ]);
    expect(doc.explain.Plan['Node Type']).toBe('ModifyTable');
  });

  it('really runs the claim, then rolls it back: every job is as it was', async () => {
    const t = await freshDatabase();
    await enqueueQueued(t, 'mail', 300);
    await t.db.query('ANALYZE qmaint.jobs');
    const before = await jobsSnapshot(t);
    const r = await runCli(['explain', 'dequeue', '--queue', 'mail', '--batch', '50', '--json', '--plan', '--database-url', t.url], { env });
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<ExplainJson>();
    expect(doc.claimed).toBe(50);
    expect(doc.batch).toBe(50);
    const claimIndex = doc.rules.find((x) => x.rule === 'claim_index')!;
    expect(claimIndex.verdict).toBe('ok');
    expect(await jobsSnapshot(t)).toEqual(before);
    const { rows } = await t.db.query<{ n: string }>(`SELECT count(*) AS n FROM qmaint.jobs WHERE status <> 'queued' OR locked_by IS NOT NULL`);
    expect(rows[0]!.n).toBe('0');
  });

  it('picks the queue of the oldest due job; prints rules and the plan tree for people', async () => {
    const t = await freshDatabase();
    await t.db.query(`INSERT INTO qmaint.jobs (queue, run_at) VALUES ('late', now() - interval '5 minutes'), ('early', now() - interval '1 minute')`);
    const r = await runCli(['explain', 'dequeue', '--plan', '--database-url', t.url], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ModifyTable on jobs/m);
    expect(r.stdout).toMatch(/-> LockRows/);
    expect(r.stdout).toMatch(/claim on queue 'late' \(oldest due job\)/);
    expect(r.stdout).toMatch(/1 job\(s\) would be claimed \(rolled back\)/);
    expect(r.stdout).toMatch(/claim_index\s.*ok/);
    expect(r.stdout).toMatch(/dequeue verdict: ok/);
  });

  it('a partition whose claim index is invalid is scanned without it: critical, exit 4', async () => {
    const t = await freshDatabase();
    await enqueueQueued(t, 'bulk', 20_000);
    await t.db.query('ANALYZE qmaint.jobs');
    const { partition, index } = await hotClaimIndex(t);
    await t.db.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass`, [index]);
    const before = await jobsSnapshot(t);
    const r = await runCli(['explain', 'dequeue', '--queue', 'bulk', '--json', '--database-url', t.url], { env });
    expect(r.code, r.stderr).toBe(4);
    const doc = r.json<ExplainJson>();
    expect(doc.ok).toBe(false);
    expect(doc.verdict).toBe('critical');
    const rule = doc.rules.find((x) => x.rule === 'claim_index')!;
    expect(rule.verdict).toBe('critical');
    expect(rule.observed).toContain(partition);
    expect(rule.recommendation).toMatch(/REINDEX/);
    expect(await jobsSnapshot(t)).toEqual(before);
  });

  it('a claim that cannot finish within statement_timeout is critical', async () => {
    const t = await freshDatabase();
    const blocker = await t.client();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE qmaint.jobs IN ACCESS EXCLUSIVE MODE');
    try {
      const r = await runCli(['explain', 'dequeue', '--statement-timeout', '300ms', '--database-url', t.url], { env });
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/did not finish within statement_timeout 300ms/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    } finally {
      await blocker.query('ROLLBACK');
    }
  });

  it('--dry-run prints the statements and runs nothing; bad input exits 2', async () => {
    const dry = await runCli(['explain', 'dequeue', '--dry-run', '--queue', 'mail', '--database-url', 'postgres://127.0.0.1:1/none'], { env });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^BEGIN;$/m);
    expect(dry.stdout).toMatch(/^EXPLAIN \(ANALYZE, BUFFERS, FORMAT JSON\) WITH next AS/m);
    expect(dry.stdout).toMatch(/^ROLLBACK;$/m);
    expect(dry.stdout).toMatch(/\$1=mail/);
    // The list is the library's own: the warm-up plan and the partition read included, in the order they run.
    const json = await runCli(['explain', 'dequeue', '--dry-run', '--json', '--database-url', 'postgres://127.0.0.1:1/none'], { env });
    expect(json.json<{ statements: { purpose: string }[] }>().statements.map((st) => st.purpose)).toEqual([
      'begin',
      'timeout',
      'low-water',
      'pick-queue',
      'partitions',
      'privilege',
      'warm-up',
      'explain',
      'rollback',
    ]);
    const t = await freshDatabase();
    for (const args of [
      ['--batch', '0'],
      ['--threshold', 'dequeue_nope=1'],
      ['--threshold', 'dequeue_buffers_warn=lots'],
    ]) {
      const r = await runCli(['explain', 'dequeue', ...args, '--database-url', t.url], { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const target = await runCli(['explain', 'enqueue', '--database-url', t.url]);
    expect(target.code).toBe(2);
  });

  it("several queues (--queue repeated, or --tasks): each queue's claim is judged by the same rules, the worst verdict wins; nothing changes", async () => {
    const t = await freshDatabase();
    await enqueueQueued(t, 'multi-a', 120);
    await enqueueQueued(t, 'multi-b', 40);
    await t.db.query('ANALYZE qmaint.jobs');
    const before = await jobsSnapshot(t);
    const r = await runCli(['explain', 'dequeue', '--queue', 'multi-a', '--queue', 'multi-b', '--batch', '30', '--json', '--database-url', t.url], { env });
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ ok: boolean; queues: string[]; verdict: string; claims: DequeueReport[] }>();
    expect(doc).toMatchObject({ ok: true, queues: ['multi-a', 'multi-b'], verdict: 'ok' });
    expect(doc.claims.map((c) => [c.queue, c.claimed, c.verdict])).toEqual([
      ['multi-a', 30, 'ok'],
      ['multi-b', 30, 'ok'],
    ]);
    // The claim each queue gets is the single-queue claim: the same plan shape, the claim index under LockRows.
    for (const c of doc.claims) {
      expect(c.rules.map((x) => x.rule)).toContain('claim_index');
      expect(c.rules.find((x) => x.rule === 'claim_index')!.verdict).toBe('ok');
      expect(c.explain.Plan['Node Type']).toBe('ModifyTable');
    }
    expect(await jobsSnapshot(t)).toEqual(before);
    // A broken claim index under a big queue makes the whole worker's verdict critical.
    await enqueueQueued(t, 'multi-a', 20_000);
    await t.db.query('ANALYZE qmaint.jobs');
    const { index } = await hotClaimIndex(t);
    await t.db.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass`, [index]);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-explain-'));
    const tasks = path.join(dir, 'tasks.mjs');
    writeFileSync(tasks, "export default { 'multi-a': async () => {}, 'multi-b': { handler: async () => {}, concurrency: 2 } };\n");
    const broken = await runCli(['explain', 'dequeue', '--tasks', tasks, '--database-url', t.url], { env });
    expect(broken.code, broken.stderr).toBe(4);
    expect(broken.stdout).toMatch(/claim on queue 'multi-a'/);
    expect(broken.stdout).toMatch(/claim on queue 'multi-b'/);
    expect(broken.stdout).toMatch(/dequeue verdict over 2 queues \(one claim statement per queue\): critical/);
    const dry = await runCli(['explain', 'dequeue', '--tasks', tasks, '--dry-run', '--database-url', 'postgres://127.0.0.1:1/none'], { env });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout.match(/^EXPLAIN \(ANALYZE, BUFFERS, FORMAT JSON\) WITH next AS/gm)).toHaveLength(2);
    expect(dry.stdout).toMatch(/\$1=multi-a/);
    expect(dry.stdout).toMatch(/\$1=multi-b/);
    const both = await runCli(['explain', 'dequeue', '--tasks', tasks, '--queue', 'multi-a', '--database-url', t.url], { env });
    expect(both.code).toBe(2);
  });

  it.runIf(pgbouncerUrl)('works through PgBouncer in transaction pooling mode', async () => {
    const t = await freshDatabase();
    await enqueueQueued(t, 'mail', 20);
    const before = await jobsSnapshot(t);
    const r = await runCli(['explain', 'dequeue', '--queue', 'mail', '--json', '--database-url', t.bouncerUrl!], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json<ExplainJson>().claimed).toBe(20);
    expect(await jobsSnapshot(t)).toEqual(before);
  });
});
