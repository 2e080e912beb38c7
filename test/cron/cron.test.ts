import { describe, expect, it } from 'vitest';
import { connect } from '../../src/db.js';
import { cronAdd, cronEnqueueDue, cronList, cronRemove, parseMissed, ticksBetween } from '../../src/cron/index.js';
import { cleanEnv, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });

async function jobs(queue: string): Promise<number> {
  return (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM qmaint.jobs WHERE queue = $1', [queue])).rows[0]!.n;
}

async function ticks(name: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ state: string; n: number }>('SELECT state, count(*)::int AS n FROM qmaint.cron_ticks WHERE name = $1 GROUP BY 1', [name]);
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

describe('recurring jobs', () => {
  it('cron add / list / remove on the CLI, with --dry-run and --json; bad input exits 2 and stores nothing', async () => {
    const dry = await runCli(['cron', 'add', 'nightly', '--schedule', '30 2 * * *', '--queue', 'reports', '--tz', 'Europe/Berlin', '--dry-run', '--json'], {
      env,
    });
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.stringify(dry.json())).toContain('INSERT INTO qmaint.cron_schedules');
    expect((await t.db.query('SELECT 1 FROM qmaint.cron_schedules')).rowCount).toBe(0);
    const add = await runCli(
      [
        'cron',
        'add',
        'nightly',
        '--schedule',
        '30 2 * * *',
        '--queue',
        'reports',
        '--tz',
        'Europe/Berlin',
        '--payload',
        '{"kind":"daily"}',
        '--missed',
        'backfill:2',
        '--json',
      ],
      { env },
    );
    expect(add.code, add.stderr).toBe(0);
    expect(add.json()).toMatchObject({ ok: true, name: 'nightly', created: true });
    const list = await runCli(['cron', 'list', '--json'], { env });
    const [entry] = list.json<{ cron: { name: string; description: string; next: string[]; missed: string; tz: string }[] }>().cron;
    expect(entry).toMatchObject({ name: 'nightly', missed: 'backfill:2', tz: 'Europe/Berlin' });
    expect(entry!.description).toMatch(/02:30/);
    expect(entry!.next).toHaveLength(3);
    // 02:30 in Berlin is 00:30 or 01:30 UTC, depending on the season.
    expect(entry!.next.every((iso) => /T0[01]:30:00\.000Z$/.test(iso))).toBe(true);
    const human = await runCli(['cron', 'list'], { env });
    expect(human.stdout).toContain('nightly');
    for (const args of [
      ['cron', 'add', 'x', '--schedule', 'every day', '--queue', 'q'],
      ['cron', 'add', 'x', '--schedule', '* * * * *', '--queue', 'q', '--tz', 'Mars/Olympus'],
      ['cron', 'add', 'x', '--schedule', '* * * * *', '--queue', 'q', '--missed', 'later'],
      ['cron', 'add', 'x', '--schedule', '*/5 * * * * *', '--queue', 'q'],
    ]) {
      const bad = await runCli(args, { env });
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect((await t.db.query(`SELECT 1 FROM qmaint.cron_schedules WHERE name = 'x'`)).rowCount).toBe(0);
    // refill --dry-run counts what it would store and stores nothing.
    await t.db.query(`DELETE FROM qmaint.cron_ticks WHERE name = 'nightly'`);
    const dryRefill = await runCli(['cron', 'refill', '--dry-run', '--json'], { env });
    expect(dryRefill.json<{ added: number; dryRun: boolean }>()).toMatchObject({ dryRun: true });
    expect(dryRefill.json<{ added: number }>().added).toBeGreaterThan(0);
    expect((await t.db.query('SELECT 1 FROM qmaint.cron_ticks')).rowCount).toBe(0);
    const rm = await runCli(['cron', 'remove', 'nightly', '--json'], { env });
    expect(rm.json()).toMatchObject({ removed: true });
    expect((await t.db.query('SELECT 1 FROM qmaint.cron_ticks')).rowCount).toBe(0);
  });

  it('exactly once per tick, however many runs (run_task and direct) race', async () => {
    const start = new Date('2030-01-01T00:00:00Z');
    await cronAdd(t.db, { name: 'every-minute', schedule: '* * * * *', queue: 'minutely' }, start);
    const pools = await Promise.all(Array.from({ length: 8 }, () => connect({ databaseUrl: t.url, max: 1 })));
    try {
      for (const minute of [1, 2, 3]) {
        const at = new Date(start.getTime() + minute * 60_000 + 5_000);
        await Promise.all(pools.map((db, i) => (i % 2 === 0 ? cronEnqueueDue(db, at) : db.query(`SELECT qmaint.run_task('recurring', 'cli', $1)`, [at]))));
      }
    } finally {
      await Promise.all(pools.map((db) => db.close()));
    }
    expect(await jobs('minutely')).toBe(3);
    expect(await ticks('every-minute')).toMatchObject({ enqueued: 3 });
    const { rows } = await t.db.query<{ n: number }>(
      `SELECT count(DISTINCT job_id)::int AS n FROM qmaint.cron_ticks WHERE name = 'every-minute' AND state = 'enqueued'`,
    );
    expect(rows[0]!.n).toBe(3);
    await cronRemove(t.db, 'every-minute');
  });

  it('after downtime: skip enqueues only the current tick; backfill:N also the N newest missed ones', async () => {
    const start = new Date('2031-01-01T00:00:00Z');
    await cronAdd(t.db, { name: 'ten-skip', schedule: '*/10 * * * *', queue: 'ten-skip' }, start);
    await cronAdd(t.db, { name: 'ten-back', schedule: '*/10 * * * *', queue: 'ten-back', missed: parseMissed('backfill:2') }, start);
    // Down from 00:00 to 01:00:30: ticks 00:10 ... 01:00 are due, 01:00 is current.
    expect(await cronEnqueueDue(t.db, new Date('2031-01-01T01:00:30Z'))).toEqual({ enqueued: 4, missed: 8 });
    expect(await jobs('ten-skip')).toBe(1);
    expect(await jobs('ten-back')).toBe(3);
    expect(await ticks('ten-skip')).toMatchObject({ enqueued: 1, missed: 5 });
    const { rows } = await t.db.query<{ tick: Date }>(`SELECT tick FROM qmaint.cron_ticks WHERE name = 'ten-back' AND state = 'enqueued' ORDER BY tick`);
    expect(rows.map((r) => r.tick.toISOString())).toEqual(['2031-01-01T00:40:00.000Z', '2031-01-01T00:50:00.000Z', '2031-01-01T01:00:00.000Z']);
    // Nothing due again until the next tick.
    expect(await cronEnqueueDue(t.db, new Date('2031-01-01T01:05:00Z'))).toEqual({ enqueued: 0, missed: 0 });
  });

  it('time zones and DST: a 02:30 Europe/Berlin job runs once each day across both changes', async () => {
    // Spring forward (2026-03-29: 02:00 -> 03:00 local): 02:30 does not exist; croner runs it at 03:30 CEST.
    expect(ticksBetween('30 2 * * *', 'Europe/Berlin', new Date('2026-03-27T12:00:00Z'), new Date('2026-03-30T12:00:00Z')).map((d) => d.toISOString())).toEqual(
      ['2026-03-28T01:30:00.000Z', '2026-03-29T01:30:00.000Z', '2026-03-30T00:30:00.000Z'],
    );
    // Fall back (2026-10-25: 03:00 -> 02:00 local): 02:30 happens twice; it runs once.
    expect(ticksBetween('30 2 * * *', 'Europe/Berlin', new Date('2026-10-23T12:00:00Z'), new Date('2026-10-26T12:00:00Z')).map((d) => d.toISOString())).toEqual(
      ['2026-10-24T00:30:00.000Z', '2026-10-25T01:30:00.000Z', '2026-10-26T01:30:00.000Z'],
    );
    // The stored ticks are the same, and each becomes one job.
    await cronAdd(t.db, { name: 'berlin', schedule: '30 2 * * *', queue: 'berlin', tz: 'Europe/Berlin' }, new Date('2026-03-27T12:00:00Z'));
    for (const at of ['2026-03-28T01:31:00Z', '2026-03-29T01:31:00Z', '2026-03-30T00:31:00Z']) await cronEnqueueDue(t.db, new Date(at));
    expect(await jobs('berlin')).toBe(3);
  });

  it('cronList reads the definitions back with a human reading', async () => {
    const list = await cronList(t.db, new Date('2031-01-01T01:00:30Z'));
    expect(list.find((c) => c.name === 'ten-skip')).toMatchObject({
      description: 'Every 10 minutes',
      next: expect.arrayContaining(['2031-01-01T01:10:00.000Z']) as string[],
    });
  });

  it('the cron_ticks health check: warn under a day of stored ticks, critical with none ahead, ok again after cron refill', async () => {
    const d = await freshDatabase();
    const denv = cleanEnv({ DATABASE_URL: d.url });
    const at = (days: number) => new Date(Date.parse('2026-03-10T12:00:00Z') + days * 86_400_000).toISOString();
    const check = async (now: string) => {
      const { rows } = await d.db.query<{ status: string; observed: string; message: string }>(
        `SELECT status, observed, message FROM qmaint.health_checks($1::timestamptz) WHERE check_name = 'cron_ticks'`,
        [now],
      );
      return rows[0]!;
    };
    expect(await check(at(0))).toMatchObject({ status: 'ok', observed: 'no recurring job' });
    await cronAdd(d.db, { name: 'nightly', schedule: '0 3 * * *', queue: 'reports' }, new Date(at(0)));
    // Monthly, on the 1st: no tick falls in the 7 days stored, and that is fine (the ticks were computed that far).
    await cronAdd(d.db, { name: 'monthly', schedule: '0 0 1 * *', queue: 'reports' }, new Date(at(0)));
    expect(await ticks('monthly')).toEqual({});
    expect(await check(at(0))).toMatchObject({ status: 'ok', observed: '2 recurring job(s), ticks computed at least 7 days ahead' });
    // Nobody refilled (pg_cron alone): half a day of ticks left warns, none left is critical; the fix is named.
    const warn = await check(at(6.5));
    expect(warn.status).toBe('warn');
    expect(warn.observed).toBe('monthly: ticks for 12:00:00 more; nightly: ticks for 12:00:00 more');
    expect(warn.message).toMatch(/run qmaint cron refill now/);
    const critical = await check(at(8));
    expect(critical.status).toBe('critical');
    expect(critical.observed).toBe('monthly: no tick after 1 day ago; nightly: no tick after 1 day ago');
    // The CLI reports it too (exit 4: a critical check).
    const r = await runCli(['health', '--json', '--now', at(8)], { env: denv });
    expect(r.code).toBe(4);
    const doc = r.json<{ checks: { check: string; status: string; message: string }[] }>();
    expect(doc.checks.find((c) => c.check === 'cron_ticks')).toMatchObject({
      status: 'critical',
      message: expect.stringMatching(/qmaint cron refill/) as string,
    });
    // cron refill at that time stores the next 7 days: ok again.
    const refill = await runCli(['cron', 'refill', '--now', at(8), '--json'], { env: denv });
    expect(refill.code, refill.stderr).toBe(0);
    expect(await check(at(8))).toMatchObject({ status: 'ok' });
    // A schedule from before ticks_until was recorded is judged by its last stored tick.
    await d.db.query(`UPDATE qmaint.cron_schedules SET ticks_until = NULL WHERE name = 'nightly'`);
    expect(await check(at(8))).toMatchObject({ status: 'ok' });
    await d.db.query(`DELETE FROM qmaint.cron_ticks WHERE name = 'nightly'`);
    expect(await check(at(8))).toMatchObject({ status: 'critical', observed: 'nightly: no tick stored' });
  });
});
