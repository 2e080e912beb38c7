import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PartitionVacuumStatus, VacuumStatus } from '../../src/vacuum/status.js';
import { freshDatabase, runCli, type TestDatabase } from '../helpers.js';
import { flushStats, partitionFor } from './support.js';

const D = '2031-03-05T00:00:00Z';
const NOW = '2031-03-05T12:00:00Z';

let t: TestDatabase;
let writer: pg.Client;
let hot: string;

const cli = (args: string[]) => runCli([...args, '--database-url', t.url]);

async function status(extra: string[] = []): Promise<VacuumStatus> {
  const r = await cli(['vacuum', 'status', '--now', NOW, '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return r.json<VacuumStatus>();
}

beforeAll(async () => {
  t = await freshDatabase();
  writer = await t.client();
  hot = await partitionFor(t.db, D);
  // Keep autovacuum off this partition so its counters hold still while we compare.
  await writer.query(`ALTER TABLE ${hot} SET (autovacuum_enabled = false)`);
  await writer.query(
    `INSERT INTO qmaint.jobs (queue, created_at, payload) SELECT 'st', $1::timestamptz + n * interval '1 second', jsonb_build_object('n', n) FROM generate_series(1, 2000) n`,
    [D],
  );
  await writer.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE queue = 'st' AND id % 4 = 0`);
  // Counters first, then ANALYZE (which resets the live/dead estimates).
  await flushStats(writer, hot, 2500);
  await writer.query(`ANALYZE ${hot}`);
});

describe('vacuum status', () => {
  it('reports the numbers of the pg_stat views and the catalog', async () => {
    const doc = await status();
    const p = doc.partitions.find((x) => x.partition === hot)!;
    expect(p).toBeDefined();
    expect(p.state).toBe('hot');
    const { rows } = await t.db.query<{
      n_live_tup: string;
      n_dead_tup: string;
      last_vacuum: Date | null;
      last_autovacuum: Date | null;
      last_analyze: Date | null;
      last_autoanalyze: Date | null;
      vacuum_count: string;
      autovacuum_count: string;
      analyze_count: string;
      autoanalyze_count: string;
      table_bytes: string;
      index_bytes: string;
      xid_age: number;
    }>(
      `SELECT n_live_tup, n_dead_tup, last_vacuum, last_autovacuum, last_analyze, last_autoanalyze, vacuum_count, autovacuum_count, analyze_count, autoanalyze_count,
              pg_table_size(relid) AS table_bytes, pg_indexes_size(relid) AS index_bytes, age((SELECT relfrozenxid FROM pg_class WHERE oid = relid)) AS xid_age
         FROM pg_stat_user_tables WHERE relid = to_regclass($1)`,
      [hot],
    );
    const s = rows[0]!;
    const iso = (d: Date | null) => (d ? d.toISOString() : null);
    expect({ ...p, bloat: undefined, reloptions: undefined }).toMatchObject<Partial<PartitionVacuumStatus>>({
      liveTuples: Number(s.n_live_tup),
      deadTuples: Number(s.n_dead_tup),
      lastVacuum: iso(s.last_vacuum),
      lastAutovacuum: iso(s.last_autovacuum),
      lastAnalyze: iso(s.last_analyze),
      lastAutoanalyze: iso(s.last_autoanalyze),
      vacuumCount: Number(s.vacuum_count),
      autovacuumCount: Number(s.autovacuum_count),
      analyzeCount: Number(s.analyze_count),
      autoanalyzeCount: Number(s.autoanalyze_count),
      tableBytes: Number(s.table_bytes),
      indexBytes: Number(s.index_bytes),
    });
    expect(p.liveTuples).toBe(2000);
    expect(p.deadTuples).toBe(500);
    expect(p.deadRatio).toBeCloseTo(500 / 2500, 4);
    expect(p.analyzeCount).toBe(1);
    expect(p.relfrozenxidAge).toBeGreaterThan(0);
    expect(p.relfrozenxidAge).toBeLessThanOrEqual(Number(s.xid_age));
    expect(p.reloptions).toMatchObject({ autovacuum_enabled: false });
  });

  it('measures bloat with pgstattuple_approx, or estimates it from statistics when asked', async () => {
    const doc = await status();
    expect(doc.bloatMethod).toBe('pgstattuple_approx');
    const p = doc.partitions.find((x) => x.partition === hot)!;
    const { rows } = await t.db.query(`SELECT dead_tuple_len, approx_free_space FROM pgstattuple_approx($1::regclass)`, [hot]);
    expect(p.bloat).toMatchObject({
      method: 'pgstattuple_approx',
      deadTupleBytes: Number(rows[0]!.dead_tuple_len),
      freeBytes: Number(rows[0]!.approx_free_space),
    });
    expect(p.bloat.bytes).toBeGreaterThan(0); // 500 dead row versions

    const est = await status(['--bloat', 'estimate']);
    expect(est.bloatMethod).toBe('estimate');
    const e = est.partitions.find((x) => x.partition === hot)!;
    expect(e.bloat.method).toBe('estimate');
    expect(e.bloat.bytes).not.toBeNull();
    const human = await cli(['vacuum', 'status', '--now', NOW, '--bloat', 'estimate']);
    expect(human.stdout).toContain('statistics-based estimate');
  });

  it('names the pid of a session holding the xmin horizon', async () => {
    const holder = await t.client();
    await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await holder.query('SELECT count(*) FROM qmaint.jobs');
    try {
      const doc = await status();
      const pid = (holder as unknown as { processID: number }).processID;
      const h = doc.horizon.holders.find((x) => x.pid === pid);
      expect(h).toMatchObject({ kind: 'idle_in_transaction', pid, database: t.name });
      expect(h!.xmin).not.toBeNull();
      expect(h!.ageSeconds).toBeGreaterThanOrEqual(0);
      expect(doc.horizon.oldestXminAge).toBeGreaterThanOrEqual(h!.xminAge!);
      const human = await cli(['vacuum', 'status', '--now', NOW]);
      expect(human.stdout).toContain(`pid ${pid}`);
    } finally {
      await holder.query('ROLLBACK');
    }
  });

  it('refuses a bad --bloat value with exit 2', async () => {
    const r = await cli(['vacuum', 'status', '--bloat', 'exact']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--bloat');
  });
});

describe('vacuum run', () => {
  it('--dry-run prints the VACUUM statements and runs nothing', async () => {
    const before = await t.db.query(`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = to_regclass($1)`, [hot]);
    const r = await cli(['vacuum', 'run', hot, '--freeze', '--dry-run', '--now', NOW, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json()).toMatchObject({
      dryRun: true,
      steps: [{ statement: `VACUUM (FREEZE) ${hot}`, lockLevel: `SHARE UPDATE EXCLUSIVE on ${hot}`, transactional: false }],
    });
    const after = await t.db.query(`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = to_regclass($1)`, [hot]);
    expect(after.rows[0]!.vacuum_count).toBe(before.rows[0]!.vacuum_count);
  });

  it('vacuums a partition outside a transaction and reports dead tuples before and after', async () => {
    const r = await cli(['vacuum', 'run', hot, '--now', NOW, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const doc = r.json<{ vacuumed: { partition: string; deadTuplesBefore: number; deadTuplesAfter: number }[] }>();
    expect(doc.vacuumed).toEqual([expect.objectContaining({ partition: hot, deadTuplesBefore: 500, deadTuplesAfter: 0 })]);
    const { rows } = await t.db.query(`SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables WHERE relid = to_regclass($1)`, [hot]);
    expect(Number(rows[0]!.vacuum_count)).toBe(1);
    expect(Number(rows[0]!.n_dead_tup)).toBe(0);
  });

  it('refuses a table that is not a managed partition', async () => {
    const r = await cli(['vacuum', 'run', 'public.nope']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not a partition of a managed table');
  });
});
