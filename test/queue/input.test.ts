import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.js';
import { CLI, cleanEnv, freshDatabase, ROOT, runCli } from '../helpers.js';

// Invariant 8: input is stored exactly as given, or refused with exit 2 before anything is written.
const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });
const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-input-'));
const count = async (queue: string) => Number((await t.db.query<{ n: string }>('SELECT count(*) AS n FROM qmaint.jobs WHERE queue = $1', [queue])).rows[0]!.n);
const stored = async (queue: string) =>
  (await t.db.query<{ p: string }>('SELECT payload::text AS p FROM qmaint.jobs WHERE queue = $1 ORDER BY id', [queue])).rows.map((r) => r.p);

const EXACT = '{"n": 12345678901234567891, "big": 1e400, "tiny": 0.1000000000000000055511151231257827}';

describe('payloads are stored as given', () => {
  it('--payload keeps every digit of its numbers', async () => {
    const r = await runCli(['enqueue', '--queue', 'exact', '--payload', EXACT, '--json'], { env });
    expect(r.code).toBe(0);
    const { rows } = await t.db.query<{ n: string; big: boolean; tiny: string }>(
      `SELECT payload->>'n' AS n, (payload->'big')::numeric = 1e400 AS big, payload->>'tiny' AS tiny FROM qmaint.jobs WHERE queue = 'exact'`,
    );
    expect(rows).toEqual([{ n: '12345678901234567891', big: true, tiny: '0.1000000000000000055511151231257827' }]);
  });

  it('--file keeps every digit too, and --dry-run shows the text as given', async () => {
    const file = path.join(dir, 'exact.ndjson');
    writeFileSync(file, `${EXACT}\r\n{"m": 98765432109876543210}\n`);
    const r = await runCli(['enqueue', '--queue', 'exact-file', '--file', file], { env });
    expect(r.code).toBe(0);
    expect(await stored('exact-file')).toEqual([
      `{"n": 12345678901234567891, "big": ${'1' + '0'.repeat(400)}, "tiny": 0.1000000000000000055511151231257827}`,
      '{"m": 98765432109876543210}',
    ]);
    const dry = await runCli(['enqueue', '--queue', 'exact-dry', '--payload', '[12345678901234567891]', '--dry-run'], { env });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`'[12345678901234567891]'::jsonb`);
  });

  it('any JSON value is a payload: object, array, string, number, boolean, null', async () => {
    for (const payload of ['{"a": 1}', '[1, 2]', '"text"', '42', 'true', 'null']) {
      const r = await runCli(['enqueue', '--queue', 'values', '--payload', payload], { env });
      expect(r.code, payload).toBe(0);
    }
    expect(await stored('values')).toEqual(['{"a": 1}', '[1, 2]', '"text"', '42', 'true', 'null']);
  });

  it('jobs list --json prints a payload exactly as stored, however deeply nested', async () => {
    const deep = '['.repeat(3000) + ']'.repeat(3000);
    const file = path.join(dir, 'deep.ndjson');
    writeFileSync(file, deep + '\n');
    expect((await runCli(['enqueue', '--queue', 'deep', '--file', file], { env })).code).toBe(0);
    const r = await runCli(['jobs', 'list', '--queue', 'deep', '--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`"payload": ${deep}`);
    const exact = await runCli(['jobs', 'list', '--queue', 'exact', '--json'], { env });
    expect(exact.code).toBe(0);
    expect(exact.stdout).toContain('"n": 12345678901234567891');
    expect(exact.json<{ jobs: unknown[] }>().jobs).toHaveLength(1);
  });

  it('the deepest payload accepted (5000 levels) breaks no command that shows or handles it', async () => {
    const deepest = '{"a":'.repeat(4999) + '[]' + '}'.repeat(4999);
    expect((await runCli(['enqueue', '--queue', 'deepest', '--payload', deepest], { env })).code).toBe(0);
    for (const args of [['--json'], ['--json-lines'], [], ['--wide']]) {
      const r = await runCli(['jobs', 'list', '--queue', 'deepest', ...args], { env });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toBe('');
    }
    for (const args of [['status'], ['status', '--json'], ['queues', 'list', '--json']]) {
      const r = await runCli(args, { env });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    // A handler gets it parsed, and the job completes.
    const handler = path.join(dir, 'depth.mjs');
    writeFileSync(
      handler,
      `export default async (job) => { let d = 0; for (let v = job.payload; v && !Array.isArray(v); v = v.a) d++; if (d !== 4999) throw new Error('depth ' + d); };\n`,
    );
    const work = await runCli(['work', '--queue', 'deepest', '--handler', handler, '--drain'], { env });
    expect(work.code, work.stderr).toBe(0);
    const { rows } = await t.db.query<{ status: string; last_error: string | null }>(
      `SELECT status::text, last_error FROM qmaint.jobs WHERE queue = 'deepest'`,
    );
    expect(rows).toEqual([{ status: 'completed', last_error: null }]);
  });
});

describe('payloads PostgreSQL cannot store are refused with exit 2, nothing written', () => {
  const refused = (r: { code: number | null; stderr: string; stdout: string }, pattern: RegExp) => {
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(pattern);
    // One error line (a file also prints its progress lines before it), no stack.
    expect(r.stderr.split('\n').filter((line) => line.startsWith('error:'))).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  };

  it('numbers beyond numeric, which jsonb cannot hold', async () => {
    for (const payload of ['1e131072', '[1e-16384]', '{"a": 0e2147483648}', '0.' + '1'.repeat(16384)]) {
      refused(
        await runCli(['enqueue', '--queue', 'huge', '--payload', payload], { env }),
        /--payload holds the number .*, beyond PostgreSQL's numeric .*; store it as a string; nothing was enqueued/,
      );
    }
    // At the limits, and in a string, they are stored as given.
    expect((await runCli(['enqueue', '--queue', 'edge', '--payload', '[1e131071, 1e-16383, "1e999999"]'], { env })).code).toBe(0);
    expect(await count('huge')).toBe(0);
    expect(await count('edge')).toBe(1);
  });

  it('nesting deeper than 5000 levels', async () => {
    const nest = (n: number) => '['.repeat(n) + ']'.repeat(n);
    refused(await runCli(['enqueue', '--queue', 'nest', '--payload', nest(5001)], { env }), /--payload nests arrays and objects more than 5000 levels deep/);
    writeFileSync(path.join(dir, 'nest.ndjson'), `{}\n{"a": ${nest(20000)}}\n`);
    refused(await runCli(['enqueue', '--queue', 'nest', '--file', path.join(dir, 'nest.ndjson')], { env }), /nest\.ndjson line 2 nests/);
    expect((await runCli(['enqueue', '--queue', 'nest-ok', '--payload', nest(5000)], { env })).code).toBe(0);
    expect(await count('nest')).toBe(0);
  });

  it('what the database encoding cannot hold: PostgreSQL refuses it, exit 2', async () => {
    const name = `${t.name}_ascii`;
    await t.db.query(`CREATE DATABASE "${name}" TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'`);
    const url = new URL(t.url);
    url.pathname = '/' + name;
    const ascii = cleanEnv({ DATABASE_URL: url.toString() });
    try {
      expect((await runCli(['migrate'], { env: ascii })).code).toBe(0);
      // jsonb takes no \u escape above 007F in a database that is not UTF8.
      refused(
        await runCli(['enqueue', '--queue', 'e', '--payload', '["\\u00e9"]'], { env: ascii }),
        /PostgreSQL refused a payload \(.*\); fix the payload, nothing was enqueued/,
      );
      refused(await runCli(['enqueue', '--queue', 'e', '--file', '-'], { env: ascii, input: '["e"]\n["\\u00e9"]\n' }), /PostgreSQL refused a payload/);
      const list = await runCli(['jobs', 'list', '--json'], { env: ascii });
      expect(list.json<{ jobs: unknown[] }>().jobs).toEqual([]);
    } finally {
      await t.db.query(`DROP DATABASE "${name}" WITH (FORCE)`);
    }
  });

  it('\\u0000 and lone surrogates in --payload', async () => {
    refused(
      await runCli(['enqueue', '--queue', 'nul', '--payload', '{"a": "x\\u0000y"}'], { env }),
      /--payload holds the escape \\u0000.*nothing was enqueued/,
    );
    refused(await runCli(['enqueue', '--queue', 'nul', '--payload', '["\\ud800"]'], { env }), /--payload holds the escape \\ud800, half of a surrogate pair/);
    refused(await runCli(['enqueue', '--queue', 'nul', '--payload', '["\\udc00\\ud800"]'], { env }), /surrogate/);
    // An escaped backslash before "u0000" is plain text, and a complete pair is a character.
    expect((await runCli(['enqueue', '--queue', 'fine', '--payload', '["\\\\u0000", "\\ud83d\\ude00"]'], { env })).code).toBe(0);
    expect(await count('nul')).toBe(0);
    expect(await stored('fine')).toEqual(['["\\\\u0000", "😀"]']);
  });

  it('an NDJSON line PostgreSQL cannot store, or that is not UTF-8, names its line', async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ i }));
    const nul = [...lines];
    nul[2500] = '{"a": "\\u0000"}';
    writeFileSync(path.join(dir, 'nul.ndjson'), nul.join('\n') + '\n');
    refused(await runCli(['enqueue', '--queue', 'bytes', '--file', path.join(dir, 'nul.ndjson')], { env }), /nul\.ndjson line 2501 holds the escape \\u0000/);
    const surrogate = [...lines];
    surrogate[7] = '["\\uDBFF"]';
    writeFileSync(path.join(dir, 'surrogate.ndjson'), surrogate.join('\n') + '\n');
    refused(
      await runCli(['enqueue', '--queue', 'bytes', '--file', path.join(dir, 'surrogate.ndjson')], { env }),
      /surrogate\.ndjson line 8 holds the escape \\uDBFF/,
    );
    const latin1 = Buffer.concat([Buffer.from(lines.slice(0, 2999).join('\n') + '\n{"name": "Jos'), Buffer.from([0xe9]), Buffer.from('"}\n')]);
    writeFileSync(path.join(dir, 'latin1.ndjson'), latin1);
    refused(await runCli(['enqueue', '--queue', 'bytes', '--file', path.join(dir, 'latin1.ndjson')], { env }), /latin1\.ndjson line 3000 is not valid UTF-8/);
    refused(
      await runCli(['enqueue', '--queue', 'bytes', '--file', '-', '--dry-run'], {
        env,
        input: Buffer.concat([Buffer.from('{}\n"'), Buffer.from([0xff]), Buffer.from('"\n')]),
      }),
      /stdin line 2 is not valid UTF-8/,
    );
    expect(await count('bytes')).toBe(0);
  });

  it('--payload bytes that are not UTF-8 (the shell passes them through)', async () => {
    const r = spawnSync('/bin/sh', ['-c', `exec "${process.execPath}" "${CLI}" enqueue --queue latin1 --payload "$(printf '"Jos\\351"')"`], {
      env,
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--payload is not valid UTF-8/);
    // A real U+FFFD is a character like any other.
    expect((await runCli(['enqueue', '--queue', 'replacement', '--payload', '"\uFFFD"'], { env })).code).toBe(0);
    expect(await count('latin1')).toBe(0);
    expect(await stored('replacement')).toEqual(['"\uFFFD"']);
  });

  it('the library refuses them too, before the database', async () => {
    await expect(enqueue(t.db, 'lib', { a: 'x\u0000y' })).rejects.toThrow(/\\u0000/);
    await expect(enqueue(t.db, 'lib', ['\ud800'])).rejects.toThrow(/surrogate/);
    await expect(enqueueMany(t.db, 'lib', [{ ok: 1 }, { bad: '\udfff' }])).rejects.toThrow(/surrogate/);
    await expect(enqueue(t.db, 'lib', { n: Infinity })).rejects.toThrow(/payload holds Infinity, which JSON cannot represent/);
    await expect(enqueueMany(t.db, 'lib', [[NaN]])).rejects.toThrow(/payload holds NaN/);
    await expect(enqueue(t.db, 'lib', { n: 1n })).rejects.toMatchObject({
      code: 'bad_input',
      message: expect.stringMatching(/not JSON-serialisable/) as string,
    });
    expect(await count('lib')).toBe(0);
  });
});

describe('timestamps are strict', () => {
  it('a date that does not exist is refused, not rolled over', async () => {
    for (const args of [
      ['enqueue', '--queue', 'when', '--payload', '{}', '--run-at', '2026-02-30'],
      ['enqueue', '--queue', 'when', '--payload', '{}', '--run-at', '2026-02-29T10:00:00Z'],
      ['enqueue', '--queue', 'when', '--payload', '{}', '--run-at', '2026-04-01T24:00:00Z'],
      ['enqueue', '--queue', 'when', '--payload', '{}', '--now', '2026-13-01T00:00:00Z'],
      ['partitions', 'create', '--until', '2026-02-30', '--dry-run'],
    ]) {
      const r = await runCli(args, { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/is not|has no/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await count('when')).toBe(0);
  });

  it('a time without an offset is UTC, whatever the local time zone; an offset is honoured', async () => {
    const zoned = cleanEnv({ DATABASE_URL: t.url, TZ: 'America/New_York' });
    expect((await runCli(['enqueue', '--queue', 'utc', '--payload', '1', '--run-at', '2028-02-29T10:00:00'], { env: zoned })).code).toBe(0);
    expect((await runCli(['enqueue', '--queue', 'utc', '--payload', '2', '--run-at', '2028-03-01T10:00:00.250+02:00'], { env: zoned })).code).toBe(0);
    expect((await runCli(['enqueue', '--queue', 'utc', '--payload', '3', '--run-at', '2028-03-02'], { env: zoned })).code).toBe(0);
    const { rows } = await t.db.query<{ run_at: Date }>(`SELECT run_at FROM qmaint.jobs WHERE queue = 'utc' ORDER BY id`);
    expect(rows.map((r) => r.run_at.toISOString())).toEqual(['2028-02-29T10:00:00.000Z', '2028-03-01T08:00:00.250Z', '2028-03-02T00:00:00.000Z']);
  });
});

describe('job ids', () => {
  it('an id beyond bigint exits 2 and changes nothing', async () => {
    const id = await enqueue(t.db, 'ids', {});
    await t.db.query(`UPDATE qmaint.jobs SET status = 'failed' WHERE id = $1`, [id]);
    for (const args of [
      ['jobs', 'retry', id, '9223372036854775808'],
      ['jobs', 'cancel', '9999999999999999999', '--dry-run'],
      ['jobs', 'list', '--id', '99999999999999999999'],
    ]) {
      const r = await runCli([...args, '--json'], { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(/is not a job id; ids are whole numbers from 1 to 9223372036854775807/);
    }
    const { rows } = await t.db.query<{ status: string }>('SELECT status::text FROM qmaint.jobs WHERE id = $1', [id]);
    expect(rows[0]!.status).toBe('failed');
    const max = await runCli(['jobs', 'list', '--id', '9223372036854775807', '--json'], { env });
    expect(max.code).toBe(0);
    expect(max.json<{ jobs: unknown[] }>().jobs).toEqual([]);
  });
});
