import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rotate } from '../../src/partitions/index.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { createUiHandler } from '../../src/ui/server.js';
import { tune } from '../../src/vacuum/tune.js';
import { CLI, cleanEnv, freshDatabase, pgcronUrl, ROOT, runCli, type TestDatabase } from '../helpers.js';

/** Debian's chromium (scripts/install-chromium.sh); nothing downloads a browser build. */
const CHROMIUM = process.env.QMAINT_TEST_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
/** QMAINT_UI_SCREENSHOTS=1 refreshes docs/ui/*.png. */
const SHOTS = process.env.QMAINT_UI_SCREENSHOTS === '1' ? path.join(ROOT, 'docs', 'ui') : null;

if (!haveChromium && process.env.CI) throw new Error(`the dashboard's browser tests need Chromium at ${CHROMIUM}: run scripts/install-chromium.sh`);

interface Served {
  url: string;
  child: ChildProcessWithoutNullStreams;
  stderr: () => string;
}

const children: ChildProcessWithoutNullStreams[] = [];

/** Start `qmaint ui --port 0 --json` and read the URL from its one JSON line. */
function serve(t: TestDatabase, extra: string[] = []): Promise<Served> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'ui', '--port', '0', '--json', '--exit-after', '5m', '--database-url', t.url, ...extra], { env: cleanEnv() });
    children.push(child);
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      // The one JSON document, printed when the server listens.
      let doc: { url: string } | undefined;
      try {
        doc = JSON.parse(out) as { url: string };
      } catch {
        return;
      }
      resolve({ url: doc.url, child, stderr: () => err });
    });
    child.on('exit', (code) => reject(new Error(`qmaint ui exited ${code}: ${err}`)));
  });
}

async function jobStatus(t: TestDatabase, id: string): Promise<string> {
  return (await t.db.query<{ status: string }>('SELECT status::text AS status FROM qmaint.jobs WHERE id = $1', [id])).rows[0]!.status;
}

let t: TestDatabase;
let failedId: string;
let queuedId: string;

beforeAll(async () => {
  t = await freshDatabase();
  // Partitions from three days back, so the timeline has past, drained ones.
  const now = new Date();
  const daysAgo = (n: number) => new Date(now.getTime() - n * 86_400_000);
  await rotate(t.db, { now: daysAgo(3) });
  await t.db.query(
    `INSERT INTO qmaint.jobs (queue, payload, status, created_at, run_at) VALUES
    ('reports', '{"month": "last-week"}', 'completed', $1, $1), ('emails', '{"to": "late@example.com"}', 'queued', $2, $2)`,
    [daysAgo(2), daysAgo(1)],
  );
  await rotate(t.db, { now });
  for (let i = 0; i < 7; i++) await enqueue(t.db, 'emails', { to: `user${i}@example.com` });
  for (let i = 0; i < 3; i++) await enqueue(t.db, 'reports', { month: `2026-0${i + 1}` });
  queuedId = await enqueue(t.db, 'reports', { month: 'queued-to-cancel' });
  failedId = await enqueue(t.db, 'emails', { to: 'bounced@example.com' });
  await t.db.query(`UPDATE qmaint.jobs SET status = 'failed', retry_count = 5, last_error = 'SMTP 550: mailbox unavailable' WHERE id = $1`, [failedId]);
  await t.db.query(
    `UPDATE qmaint.jobs SET status = 'completed' WHERE id IN (SELECT id FROM qmaint.jobs WHERE queue = 'emails' AND status = 'queued' ORDER BY id LIMIT 2)`,
  );
  // Two tune runs: two stored churn samples for the vacuum page.
  await tune(t.db, { now: new Date(now.getTime() - 60_000), lockTimeout: '2s' });
  await tune(t.db, { now, lockTimeout: '2s' });
  await t.db.query(`INSERT INTO qmaint.maintenance_runs (task, runner, status, message, finished_at) VALUES
    ('rotate', 'daemon', 'lock_timeout', 'gave up on qmaint.jobs after 3 tries', clock_timestamp()),
    ('vacuum', 'cli', 'ok', 'tuned 4 partitions', clock_timestamp())`);
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
});

describe('qmaint ui refuses what it must', () => {
  it('refuses a non-loopback address without a token: exit 2, one line', async () => {
    const r = await runCli(['ui', '--host', '0.0.0.0', '--port', '0', '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--host 0.0.0.0 lets other machines reach the dashboard: give --token');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('read-only: actions answer 403 and change nothing; reads work', async () => {
    const s = await serve(t);
    const res = await fetch(`${s.url}api/actions/jobs/${failedId}/retry`, { method: 'POST', headers: { 'x-qmaint-action': '1' } });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: string }).error).toContain('read-only');
    expect(await jobStatus(t, failedId)).toBe('failed');
    const pause = await fetch(`${s.url}api/actions/queues/emails/pause`, { method: 'POST', headers: { 'x-qmaint-action': '1' } });
    expect(pause.status).toBe(403);
    // "Created before" starts the page at the newest job created before that time: the two seeded days back.
    const before = new Date(Date.now() - 12 * 3_600_000).toISOString();
    const older = (await (await fetch(`${s.url}api/jobs?before=${before}`)).json()) as { jobs: { queue: string }[]; next: string | null };
    expect(older.jobs.map((j) => j.queue)).toEqual(['emails', 'reports']);
    expect(older.next).toBeNull();
    const bad = await fetch(`${s.url}api/jobs?status=weird`);
    expect([bad.status, ((await bad.json()) as { error: string }).error]).toEqual([400, expect.stringContaining('weird')]);
    const overview = (await (await fetch(`${s.url}api/overview`)).json()) as { status: { queues: { queue: string; counts: Record<string, number> }[] } };
    expect(overview.status.queues.map((q) => [q.queue, q.counts.queued, q.counts.failed, q.counts.completed])).toEqual([
      ['emails', 6, 1, 2],
      ['reports', 4, 0, 1],
    ]);
  });

  it('survives database errors: a failing read answers 503, the rest go on, the process lives', async () => {
    const s = await serve(t);
    await t.db.query('ALTER TABLE qmaint.vacuum_samples RENAME TO vacuum_samples_away');
    try {
      const bad = await fetch(`${s.url}api/vacuum/samples`);
      expect(bad.status).toBe(503);
      expect(((await bad.json()) as { error: string }).error).toContain('vacuum_samples');
      expect((await fetch(`${s.url}api/overview`)).status).toBe(200);
    } finally {
      await t.db.query('ALTER TABLE qmaint.vacuum_samples_away RENAME TO vacuum_samples');
    }
    // Every connection of the dashboard killed: the pool reconnects.
    await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'qmaint-ui' AND datname = current_database()`);
    const after = await Promise.all([1, 2, 3].map(() => fetch(`${s.url}api/runs`).then((r) => r.status)));
    expect(after.every((code) => code === 200 || code === 503)).toBe(true);
    expect((await fetch(`${s.url}api/vacuum/samples`)).status).toBe(200);
    expect(s.child.exitCode).toBeNull();
  });

  it('with a token: 401 without it; Bearer works; ?token= sets a cookie', async () => {
    const token = 'a-long-enough-test-token-1234';
    const s = await serve(t, ['--token', token]);
    expect((await fetch(`${s.url}api/overview`)).status).toBe(401);
    expect((await fetch(`${s.url}api/overview`, { headers: { authorization: 'Bearer wrong-token-of-some-length' } })).status).toBe(401);
    expect((await fetch(`${s.url}api/overview`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const login = await fetch(`${s.url}?token=${token}`, { redirect: 'manual' });
    expect(login.status).toBe(303);
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toContain('HttpOnly');
    expect((await fetch(`${s.url}api/overview`, { headers: { cookie: cookie.split(';')[0]! } })).status).toBe(200);
    expect(s.stderr()).not.toContain(token);
  });

  it('allowed actions: need the X-Qmaint-Action header (no cross-site form can send it); rotate needs confirming; pause and resume', async () => {
    const handler = createUiHandler({ db: t.db, allowActions: true, basePath: '/qmaint' });
    const http = await import('node:http');
    const server = http.createServer(handler);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/qmaint`;
      expect((await fetch(`${base}/api/actions/jobs/${queuedId}/cancel`, { method: 'POST' })).status).toBe(403);
      expect(await jobStatus(t, queuedId)).toBe('queued');
      const bare = await fetch(base, { redirect: 'manual' });
      expect([bare.status, bare.headers.get('location')]).toEqual([302, '/qmaint/']);
      expect((await fetch(`${base}/api/partitions`)).status).toBe(200);
      // Rotate and tune run only once confirmed (the page shows their plan first).
      const post = (route: string, body: unknown) =>
        fetch(`${base}/api/actions/${route}`, {
          method: 'POST',
          headers: { 'x-qmaint-action': '1', 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      expect((await post('rotate', {})).status).toBe(400);
      const rotated = (await (await post('rotate', { confirm: true })).json()) as { result: { ran: boolean } };
      expect(rotated.result.ran).toBe(true);
      expect((await post('tune', { confirm: true })).status).toBe(200);
      const runs = await t.db.query<{ task: string }>(`SELECT DISTINCT task FROM qmaint.maintenance_runs WHERE runner = 'cli' ORDER BY 1`);
      expect(runs.rows.map((r) => r.task)).toEqual(expect.arrayContaining(['rotate']));
      // Pause and resume change the queue's row.
      expect((await post('queues/reports/pause', {})).status).toBe(200);
      expect((await t.db.query(`SELECT paused FROM qmaint.queues WHERE queue = 'reports'`)).rows[0]).toEqual({ paused: true });
      expect((await post('queues/reports/resume', {})).status).toBe(200);
      expect((await t.db.query(`SELECT paused FROM qmaint.queues WHERE queue = 'reports'`)).rows[0]).toEqual({ paused: false });
    } finally {
      server.close();
    }
  });
});

describe('mounted in an application', () => {
  it('under a path stripped the way Express strips it (req.url relative, req.originalUrl whole)', async () => {
    const http = await import('node:http');
    const handler = createUiHandler({ db: t.db });
    const server = http.createServer((req, res) => {
      if (!req.url!.startsWith('/admin/queue')) return void res.writeHead(404).end();
      Object.assign(req, { originalUrl: req.url, url: req.url!.slice('/admin/queue'.length) || '/' });
      handler(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/admin/queue`;
      const bare = await fetch(base, { redirect: 'manual' });
      expect([bare.status, bare.headers.get('location')]).toEqual([302, '/admin/queue/']);
      const index = await fetch(base + '/');
      expect(await index.text()).toContain('./assets/app.js');
      expect((await fetch(base + '/assets/uplot.js')).headers.get('content-type')).toContain('javascript');
      expect(((await (await fetch(base + '/api/meta')).json()) as { allowActions: boolean }).allowActions).toBe(false);
      const refused = await fetch(`${base}/api/actions/queues/emails/pause`, { method: 'POST', headers: { 'x-qmaint-action': '1' } });
      expect(refused.status).toBe(403);
    } finally {
      server.close();
    }
  });
});

describe.skipIf(!haveChromium)('the dashboard in Chromium', () => {
  let browser: Browser;
  let page: Page;
  let readOnly: Served;

  beforeAll(async () => {
    if (SHOTS) mkdirSync(SHOTS, { recursive: true });
    readOnly = await serve(t);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  const shot = async (name: string) => {
    // A few refreshes first, so the live charts have a line to show.
    if (SHOTS) await page.waitForTimeout(5000);
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
  };

  it('Overview: queues with their counts, health verdicts with exit codes, the daemon state', async () => {
    await page.goto(readOnly.url + '#/overview');
    const queues = page.locator('#queues table');
    await queues.getByRole('link', { name: 'emails' }).waitFor();
    const emails = await queues.locator('tr', { hasText: 'emails' }).innerText();
    // queued, ready, running, completed, failed
    expect(
      emails
        .split('\t')
        .slice(1, 6)
        .map((c) => c.trim()),
    ).toEqual(['6', '6', '0', '2', '1']);
    await page.locator('#health table').waitFor({ timeout: 30_000 });
    expect(await page.locator('#health').innerText()).toMatch(/qmaint health exits (0|4)/);
    expect(await page.locator('#health').innerText()).toContain('runway');
    expect(await page.locator('#leader').innerText()).toContain('No daemon leads this database');
    // With pg_cron on the server (CI's PostgreSQL 15), its jobs; else why it is not in use.
    await page.locator('#cron p').first().waitFor();
    expect(await page.locator('#cron').innerText()).toMatch(pgcronUrl ? /^pg_cron \d+\.\d+.*: 0 qmaint job\(s\)/ : /^pg_cron: not in use here/);
    expect(await page.locator('#mode').innerText()).toContain('read-only');
    expect(await page.locator('#queues button[data-act="pause"]').first().isDisabled()).toBe(true);
    await shot('overview');
  });

  it('Jobs: filter by queue and status, and a job page with its error and payload', async () => {
    await page.goto(readOnly.url + '#/jobs?queue=emails&status=failed');
    await page.locator('#list table').waitFor();
    const rows = await page.locator('#list tbody tr').allInnerTexts();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toContain(failedId);
    await page.goto(readOnly.url + '#/jobs');
    await page.locator('#list table').waitFor();
    expect(await page.locator('#list tbody tr').count()).toBe(14);
    await shot('jobs');
    await page.goto(readOnly.url + `#/job/${failedId}`);
    await page.locator('#job-status').waitFor();
    const text = await page.locator('#job').innerText();
    expect(text).toContain('SMTP 550: mailbox unavailable');
    expect(text).toContain('bounced@example.com');
    expect(text).toContain('5 of 5 retries used');
    await shot('job');
  });

  it('Partitions: states, runway against target, and the plan of the next rotate', async () => {
    await page.goto(readOnly.url + '#/partitions');
    await page.locator('#tables table').waitFor();
    const text = await page.locator('#tables').innerText();
    expect(text).toContain('qmaint.jobs');
    expect(text).toMatch(/Runway\s+ok\s+\d+ future partition\(s\) against a target of \d+/);
    const states = await page.locator('#tables tbody .state').allInnerTexts();
    expect(states).toContain('hot');
    expect(states).toContain('future');
    expect(states).toContain('drained');
    expect(await page.locator('.timeline .cell.hot').count()).toBe(1);
    await page.locator('#plan table, #plan p').first().waitFor();
    await shot('partitions');
  });

  it('Vacuum: per-partition dead tuples and profiles, the horizon without query text', async () => {
    await page.goto(readOnly.url + '#/vacuum');
    await page.locator('#parts table').waitFor();
    expect(await page.locator('#parts').innerText()).toMatch(/hot/);
    expect(await page.locator('#horizon').innerText()).toContain('Query text hidden');
    await page.locator('#dead .uplot').waitFor();
    await page.locator('#tune table').first().waitFor({ timeout: 30_000 });
    await page.locator('#churn .uplot').waitFor();
    await shot('vacuum');
  });

  it('Claim plan: the verdict, rules, partitions pruned or scanned, and the plan tree', async () => {
    await page.goto(readOnly.url + '#/claim?queue=emails');
    await page.locator('#tree pre').waitFor({ timeout: 30_000 });
    expect(await page.locator('#sum').innerText()).toMatch(/Verdict (ok|warn|critical) for queue emails/);
    expect(await page.locator('#tree').innerText()).toContain('LockRows');
    expect(await page.locator('#parts').innerText()).toMatch(/hot/);
    await shot('claim');
  });

  it('Maintenance runs: failures first', async () => {
    await page.goto(readOnly.url + '#/runs');
    await page.locator('#runs table').waitFor();
    const first = await page.locator('#runs tbody tr').first().innerText();
    expect(first).toContain('lock_timeout');
    expect(first).toContain('gave up on qmaint.jobs');
    expect(await page.locator('#runs').innerText()).toContain('1 failed run(s)');
    await shot('runs');
  });

  it('with --allow-actions the job page retries the job: its status changes in the database', async () => {
    const s = await serve(t, ['--allow-actions']);
    await page.goto(s.url + `#/job/${failedId}`);
    await page.locator('#job-status', { hasText: 'failed' }).waitFor();
    await page.locator('button[data-act="retry"]').click();
    await page.locator('#msg .notice.ok').waitFor();
    expect(await jobStatus(t, failedId)).toBe('queued');
    await page.locator('#job-status', { hasText: 'queued' }).waitFor();
  });
});
