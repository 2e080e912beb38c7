import { describe, expect, it } from 'vitest';
import { runCommand } from '../../src/cli/main.js';
import { enqueueMany } from '../../src/queue/enqueue.js';
import { freshDatabase } from '../helpers.js';

describe('jobs list: streamed, paged by keyset, tables capped', () => {
  it('--json is one document with every job and the next page; --json-lines one job per line; --after pages', async () => {
    const t = await freshDatabase();
    await enqueueMany(
      t.db,
      'bulk',
      Array.from({ length: 2500 }, (_, i) => ({ n: i })),
    );
    const db = ['--database-url', t.url];
    const all = await runCommand(['jobs', 'list', '--limit', '2200', '--json', ...db]);
    expect(all.exitCode, all.stderr).toBe(0);
    const doc = JSON.parse(all.stdout) as { ok: boolean; jobs: { id: string; payload: { n: number } }[]; next: string | null };
    expect(doc.jobs).toHaveLength(2200);
    const ids = doc.jobs.map((j) => BigInt(j.id));
    expect(ids.every((id, i) => i === 0 || id < ids[i - 1]!)).toBe(true);
    expect(doc.next).toBe(doc.jobs[2199]!.id);
    expect(doc.jobs[0]!.payload).toEqual({ n: 2499 });

    const rest = JSON.parse((await runCommand(['jobs', 'list', '--limit', '1000', '--after', doc.next!, '--json', ...db])).stdout) as typeof doc;
    expect(rest.jobs).toHaveLength(300);
    expect(rest.next).toBeNull();
    expect(new Set([...doc.jobs, ...rest.jobs].map((j) => j.id)).size).toBe(2500);

    const lines = await runCommand(['jobs', 'list', '--limit', '1500', '--json-lines', ...db]);
    const rows = lines.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string });
    expect(rows).toHaveLength(1500);
    expect(rows.map((r) => r.id)).toEqual(doc.jobs.slice(0, 1500).map((j) => j.id));

    const none = JSON.parse((await runCommand(['jobs', 'list', '--queue', 'empty', '--json', ...db])).stdout) as typeof doc;
    expect(none).toEqual({ ok: true, jobs: [], next: null });
  });

  it('a table stops at 1000 rows and says how to get the rest; a bad --after exits 2', async () => {
    const t = await freshDatabase();
    await enqueueMany(
      t.db,
      'bulk',
      Array.from({ length: 1200 }, (_, i) => ({ n: i })),
    );
    const table = await runCommand(['jobs', 'list', '--limit', '5000', '--database-url', t.url]);
    expect(table.exitCode).toBe(0);
    expect(table.stdout.split('\n').filter((l) => /^│\s+\d+ │ bulk/.test(l))).toHaveLength(1000);
    expect(table.stdout).toMatch(/tables stop at 1000 rows; use --json or --json-lines \(streamed\) for bulk output\.\s+Next page: --after \d+/);
    const bad = await runCommand(['jobs', 'list', '--after', 'x', '--database-url', t.url]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('job id "x" is not a job id');
  });
});
