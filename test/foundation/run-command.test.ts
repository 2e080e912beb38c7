import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runCommand } from '../../src/cli/main.js';
import { freshDatabase } from '../helpers.js';

describe('runCommand: the CLI in-process', () => {
  it('returns the exit code and what the command printed, without touching the process streams', async () => {
    const version = await runCommand(['--version']);
    expect(version).toEqual({ exitCode: 0, stdout: '0.1.0\n', stderr: '' });
    const bad = await runCommand(['no-such-command']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const help = await runCommand(['partitions', '--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/qmaint partitions rotate/);
  });

  it('keeps concurrent invocations apart: each gets its own output, exit code and stdin', async () => {
    const [a, b] = [await freshDatabase(), await freshDatabase()];
    const [enqA, enqB, failing] = await Promise.all([
      runCommand(['enqueue', '--queue', 'a', '--file', '-', '--database-url', a.url, '--json'], { stdin: Readable.from(['{"n":1}\n{"n":2}\n']) }),
      runCommand(['enqueue', '--queue', 'b', '--file', '-', '--database-url', b.url, '--json'], { stdin: Readable.from(['{"n":3}\n']) }),
      runCommand(['status', '--database-url', 'postgres://127.0.0.1:1/none', '--json']),
    ]);
    expect([enqA.exitCode, enqB.exitCode, failing.exitCode]).toEqual([0, 0, 3]);
    expect(JSON.parse(enqA.stdout)).toMatchObject({ ok: true, enqueued: 2 });
    expect(JSON.parse(enqB.stdout)).toMatchObject({ ok: true, enqueued: 1 });
    expect(JSON.parse(failing.stdout)).toMatchObject({ ok: false, error: { exitCode: 3 } });
    const counts = await Promise.all(
      [a, b].map(async (t) => (await t.db.query<{ q: string; n: string }>(`SELECT queue AS q, count(*) AS n FROM qmaint.jobs GROUP BY 1`)).rows),
    );
    expect(counts).toEqual([[{ q: 'a', n: '2' }], [{ q: 'b', n: '1' }]]);
  });
});
