import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { enqueue, enqueueMany, NOTIFY_CHANNEL } from '../../src/queue/enqueue.js';
import { cleanEnv, eventually, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const count = async (queue: string) => Number((await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.jobs WHERE queue = $1', [queue])).rows[0]!.n);

describe('enqueue', () => {
  it('stores one job with its options and returns its id', async () => {
    const runAt = new Date(Date.now() + 3_600_000);
    const id = await enqueue(t.db, 'one', { hello: 'world' }, { runAt, priority: 7, maxRetries: 2 });
    const { rows } = await t.db.query('SELECT queue, payload, status::text, priority, max_retries, run_at FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]).toMatchObject({ queue: 'one', payload: { hello: 'world' }, status: 'queued', priority: 7, max_retries: 2 });
    expect((rows[0]!.run_at as Date).getTime()).toBe(runAt.getTime());
  });

  it("commits and rolls back with the caller's transaction", async () => {
    const client = await t.client();
    await client.query('BEGIN');
    await enqueue(client, 'tx', { n: 1 });
    await enqueueMany(client, 'tx', [{ n: 2 }, { n: 3 }]);
    expect(await count('tx')).toBe(0); // not visible outside the transaction
    await client.query('ROLLBACK');
    expect(await count('tx')).toBe(0);
    await client.query('BEGIN');
    await enqueue(client, 'tx', { n: 4 });
    await client.query('COMMIT');
    expect(await count('tx')).toBe(1);
  });

  it("creates a missing partition and retries, without breaking the caller's transaction", async () => {
    const later = new Date('2031-05-17T10:00:00Z');
    const before = await t.db.query(`SELECT 1 FROM qmaint.partitions_of('qmaint.jobs') WHERE lower_bound <= $1 AND $1 < upper_bound`, [later]);
    expect(before.rowCount).toBe(0);
    const client = await t.client();
    await client.query('BEGIN');
    const id = await enqueue(client, 'heal', {}, { createdAt: later });
    await client.query('SELECT 1'); // the transaction is still usable
    await client.query('COMMIT');
    const { rows } = await t.db.query<{ part: string }>('SELECT tableoid::regclass::text AS part FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]!.part).toBe('qmaint.jobs_p20310517');
    // COPY heals the same way.
    const farther = new Date('2032-02-02T02:00:00Z');
    expect(await enqueueMany(t.db, 'heal', [1, 2, 3], { createdAt: farther })).toBe(3);
    expect((await t.db.query(`SELECT count(*)::int AS n FROM qmaint.jobs_p20320202`)).rows[0]!.n).toBe(3);
  });

  it('enqueueMany sends one NOTIFY per transaction, not one per row', async () => {
    const listener = await t.client();
    const seen: string[] = [];
    listener.on('notification', (m) => seen.push(`${m.channel}:${m.payload}`));
    await listener.query(`LISTEN ${NOTIFY_CHANNEL}`);
    expect(
      await enqueueMany(
        t.db,
        'bulk',
        Array.from({ length: 5000 }, (_, i) => ({ i, text: 'tab\there, back\\slash, newline\n' })),
      ),
    ).toBe(5000);
    const client = await t.client();
    await client.query('BEGIN');
    for (let i = 0; i < 5; i++) await enqueue(client, 'bulk', { i });
    await client.query('COMMIT');
    await eventually(() => seen.length >= 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([`${NOTIFY_CHANNEL}:bulk`, `${NOTIFY_CHANNEL}:bulk`]);
    const { rows } = await t.db.query(`SELECT payload FROM qmaint.jobs WHERE queue = 'bulk' AND payload->>'i' = '17'`);
    expect(rows[0]!.payload).toEqual({ i: 17, text: 'tab\there, back\\slash, newline\n' });
  });

  it('refuses bad input before touching the database', async () => {
    await expect(enqueue(t.db, '', {})).rejects.toThrow(/queue name/);
    await expect(enqueue(t.db, 'q', {}, { priority: 1.5 })).rejects.toThrow(/priority must be a whole number/);
    await expect(enqueue(t.db, 'q', {}, { maxRetries: -1 })).rejects.toThrow(/maxRetries/);
  });
});

describe('qmaint enqueue', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-enqueue-'));
  const env = cleanEnv({ DATABASE_URL: t.url });

  it('enqueues one job from --payload (--json)', async () => {
    const r = await runCli(['enqueue', '--queue', 'cli', '--payload', '{"a":1}', '--priority', '3', '--json'], { env });
    expect(r.code).toBe(0);
    const doc = r.json<{ ok: boolean; id: string; enqueued: number }>();
    expect(doc).toMatchObject({ ok: true, enqueued: 1 });
    const { rows } = await t.db.query('SELECT payload, priority FROM qmaint.jobs WHERE id = $1', [doc.id]);
    expect(rows[0]).toEqual({ payload: { a: 1 }, priority: 3 });
  });

  it('--timeout sets the job timeout (one job, or every job of a file); a bad one exits 2 and enqueues nothing', async () => {
    const one = await runCli(['enqueue', '--queue', 'cli-timeout', '--payload', '{}', '--timeout', '2500ms', '--json'], { env });
    expect(one.code, one.stderr).toBe(0);
    expect(one.stderr).toBe('');
    const { rows } = await t.db.query('SELECT timeout_ms FROM qmaint.jobs WHERE id = $1', [one.json<{ id: string }>().id]);
    expect(rows[0]).toEqual({ timeout_ms: 2500 });
    const many = await runCli(['enqueue', '--queue', 'cli-timeout-file', '--file', '-', '--timeout', '30'], { env, input: '{"a":1}\n{"a":2}\n' });
    expect(many.code, many.stderr).toBe(0);
    // A bare number is the old form: seconds, with a warning.
    expect(many.stderr).toContain('warning: a bare number for --timeout is deprecated (read as seconds); write --timeout 30s');
    const all = await t.db.query(`SELECT DISTINCT timeout_ms FROM qmaint.jobs WHERE queue = 'cli-timeout-file'`);
    expect(all.rows).toEqual([{ timeout_ms: 30000 }]);
    const bad = await runCli(['enqueue', '--queue', 'cli-timeout-bad', '--payload', '{}', '--timeout', '-1'], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--timeout must be from 1ms to .*, got -1/);
    expect(await count('cli-timeout-bad')).toBe(0);
  });

  it('--envelope: each NDJSON line may carry its own timeout; a bad line exits 2 and enqueues nothing', async () => {
    const input = '{"payload": {"a": 1}, "timeout": 2}\n\n{"payload": {"a": 2}}\n';
    const r = await runCli(['enqueue', '--queue', 'envelope', '--file', '-', '--envelope', '--timeout', '7s'], { env, input });
    expect(r.code, r.stderr).toBe(0);
    const { rows } = await t.db.query(`SELECT payload, timeout_ms FROM qmaint.jobs WHERE queue = 'envelope' ORDER BY id`);
    expect(rows).toEqual([
      { payload: { a: 1 }, timeout_ms: 2000 },
      { payload: { a: 2 }, timeout_ms: 7000 },
    ]);
    for (const [line, message] of [
      ['{"payload": 1, "priority": 2}', /stdin line 2 is not \{"payload": \.\.\., "timeout": seconds, "key": "K"\}/],
      ['{"payload": 1, "timeout": -1}', /job 2: timeout must be a number of seconds/],
      ['[1]', /stdin line 2 is not/],
    ] as const) {
      const bad = await runCli(['enqueue', '--queue', 'envelope-bad', '--file', '-', '--envelope'], { env, input: `{"payload": 0}\n${line}\n` });
      expect(bad.code, bad.stderr).toBe(2);
      expect(bad.stderr).toMatch(message);
    }
    expect(await count('envelope-bad')).toBe(0);
  });

  it('enqueues an NDJSON file and stdin through COPY', async () => {
    const file = path.join(dir, 'jobs.ndjson');
    writeFileSync(file, Array.from({ length: 300 }, (_, i) => JSON.stringify({ i })).join('\n') + '\n\n');
    const r = await runCli(['enqueue', '--queue', 'file', '--file', file, '--json'], { env });
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ ok: true, enqueued: 300 });
    const s = await runCli(['enqueue', '--queue', 'stdin', '--file', '-'], { env, input: '{"x":1}\n{"x":2}\n' });
    expect(s.code).toBe(0);
    expect(await count('file')).toBe(300);
    expect(await count('stdin')).toBe(2);
  });

  it('refuses a malformed NDJSON line with its line number and enqueues nothing', async () => {
    const file = path.join(dir, 'bad.ndjson');
    const lines = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ i }));
    lines[4200] = '{"i": 4200,';
    writeFileSync(file, lines.join('\n') + '\n');
    const r = await runCli(['enqueue', '--queue', 'bad', '--file', file], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.ndjson line 4201 is not valid JSON .*nothing was enqueued/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await count('bad')).toBe(0);
    const stdin = await runCli(['enqueue', '--queue', 'bad', '--file', '-'], { env, input: '{"ok":1}\nnot json\n' });
    expect(stdin.code).toBe(2);
    expect(stdin.stderr).toMatch(/stdin line 2/);
    expect(await count('bad')).toBe(0);
  });

  it('--dry-run prints the SQL with its lock and enqueues nothing', async () => {
    const r = await runCli(['enqueue', '--queue', 'dry', '--payload', `{"it's":1}`, '--dry-run'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`SELECT qmaint.enqueue('dry', '{"it''s":1}'::jsonb`);
    expect(r.stdout).toContain('ROW EXCLUSIVE on qmaint.jobs');
    expect(await count('dry')).toBe(0);
  });

  it('bad flags exit 2 with one line', async () => {
    for (const args of [
      ['enqueue', '--queue', 'x', '--payload', '{nope'],
      ['enqueue', '--queue', 'x', '--payload', '{}', '--run-at', 'tomorrow'],
      ['enqueue', '--queue', 'x', '--file', path.join(dir, 'missing.ndjson')],
      ['enqueue', '--queue', 'x'],
    ]) {
      const r = await runCli(args, { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await count('x')).toBe(0);
  });
});
