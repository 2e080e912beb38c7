import { describe, expect, it } from 'vitest';
import { claimQuery } from '../../src/queue/claim.js';
import { Consumer, type Job } from '../../src/queue/consumer.js';
import { enqueue, enqueueKeyed, enqueueMany } from '../../src/queue/enqueue.js';
import { cancelJobs } from '../../src/queue/admin.js';
import { listQueues, pauseQueue, redriveJobs, resumeQueue, setDeadLetter } from '../../src/queue/queues.js';
import { cleanEnv, eventually, freshDatabase, runCli } from '../helpers.js';

const t = await freshDatabase();
const env = cleanEnv({ DATABASE_URL: t.url });

async function statuses(queue: string): Promise<Record<string, number>> {
  const { rows } = await t.db.query<{ status: string; n: number }>(
    'SELECT status::text AS status, count(*)::int AS n FROM qmaint.jobs WHERE queue = $1 GROUP BY 1 ORDER BY 1',
    [queue],
  );
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

async function claim(queue: string, batch = 10): Promise<string[]> {
  const { text, values } = claimQuery({ queue, batch, leaseSeconds: 60, workerId: 'test', lowWater: null });
  const { rows } = await t.db.query<{ id: string }>(text, values);
  return rows.map((r) => r.id);
}

describe('pause and resume', () => {
  it('a paused queue is not claimed (other queues are); resumed, it is', async () => {
    await enqueueMany(t.db, 'p1', [1, 2, 3]);
    await enqueueMany(t.db, 'p2', [1]);
    expect(await pauseQueue(t.db, 'p1')).toEqual({ queue: 'p1', paused: true, changed: true });
    expect(await pauseQueue(t.db, 'p1')).toEqual({ queue: 'p1', paused: true, changed: false });
    expect(await claim('p1')).toEqual([]);
    expect(await claim('p2')).toHaveLength(1);
    const listed = await listQueues(t.db, new Date());
    expect(listed.find((q) => q.queue === 'p1')).toMatchObject({ paused: true, queued: 3, ready: 3, running: 0 });
    expect(listed.find((q) => q.queue === 'p2')).toMatchObject({ paused: false, queued: 0, running: 1 });
    expect(await resumeQueue(t.db, 'p1')).toEqual({ queue: 'p1', paused: false, changed: true });
    expect(await claim('p1')).toHaveLength(3);
  });

  it('a consumer started on a paused queue claims nothing and its drain ends; running jobs finish', async () => {
    await enqueueMany(t.db, 'p3', [1, 2]);
    const held = await claim('p3', 1);
    await pauseQueue(t.db, 'p3');
    const seen: string[] = [];
    const c = new Consumer(t.db, { queue: 'p3', handler: (job: Job) => void seen.push(job.id), listen: false, drain: true, pollMinMs: 5, pollMaxMs: 10 });
    await c.start();
    await c.done;
    expect(seen).toEqual([]);
    expect(await statuses('p3')).toEqual({ queued: 1, running: 1 });
    // The job running before the pause still completes.
    const done = await t.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = $1 AND status = 'running' RETURNING id`, [held[0]]);
    expect(done.rowCount).toBe(1);
    await resumeQueue(t.db, 'p3');
    const c2 = new Consumer(t.db, { queue: 'p3', handler: (job: Job) => void seen.push(job.id), listen: false, drain: true, pollMinMs: 5, pollMaxMs: 10 });
    await c2.start();
    await c2.done;
    expect(seen).toHaveLength(1);
  });

  it('CLI: queues pause/resume/list with --json and --dry-run; bad input exits 2', async () => {
    await enqueue(t.db, 'cli-p', {});
    const dry = await runCli(['queues', 'pause', 'cli-p', '--dry-run', '--json'], { env });
    expect(dry.code).toBe(0);
    expect(JSON.stringify(dry.json())).toContain('qmaint.set_queue_paused');
    expect((await listQueues(t.db, new Date())).find((q) => q.queue === 'cli-p')!.paused).toBe(false);
    const pause = await runCli(['queues', 'pause', 'cli-p', '--json'], { env });
    expect(pause.json()).toMatchObject({ ok: true, queue: 'cli-p', paused: true, changed: true });
    const list = await runCli(['queues', 'list', '--json'], { env });
    expect(list.json<{ queues: { queue: string; paused: boolean; queued: number }[] }>().queues.find((q) => q.queue === 'cli-p')).toMatchObject({
      paused: true,
      queued: 1,
    });
    const human = await runCli(['queues', 'list'], { env });
    expect(human.stdout).toMatch(/cli-p\s.*paused/);
    const resume = await runCli(['queues', 'resume', 'cli-p'], { env });
    expect(resume.code).toBe(0);
    expect(resume.stdout).toContain('queue cli-p resumed');
    const bad = await runCli(['queues', 'dead-letter', 'cli-p'], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('cancelled', () => {
  it('jobs cancel stores cancelled, apart from failed; the failed-jobs health check does not count it', async () => {
    const ids = await Promise.all([1, 2, 3].map((n) => enqueue(t.db, 'cx', { n })));
    expect((await cancelJobs(t.db, { queue: 'cx' }, new Date())).ids.sort()).toEqual(ids.sort());
    expect(await statuses('cx')).toEqual({ cancelled: 3 });
    const { rows } = await t.db.query<{ observed: string }>(`SELECT observed FROM qmaint.health_failed_jobs(now(), qmaint.health_default_thresholds())`);
    expect(rows[0]!.observed).toMatch(/^0 failed/);
    const status = await runCli(['status', '--json'], { env });
    expect(status.json<{ queues: { queue: string; counts: Record<string, number> }[] }>().queues.find((q) => q.queue === 'cx')!.counts).toMatchObject({
      failed: 0,
      cancelled: 3,
    });
  });
});

describe('dead letter', () => {
  it('a job failing for good moves to the dead-letter queue; redrive puts it back, keys included', async () => {
    await setDeadLetter(t.db, 'dl', 'dl.dead');
    const bad = await enqueueKeyed(t.db, 'dl', { bad: true }, { key: 'one', maxRetries: 1 });
    // Far more retries than the run can spend at a 1-2 ms backoff: it is still retrying when the first one is dead-lettered.
    const retrying = await enqueue(t.db, 'dl', { bad: true }, { maxRetries: 1_000_000 });
    const c = new Consumer(t.db, {
      queue: 'dl',
      handler: () => {
        throw new Error('boom');
      },
      listen: false,
      pollMinMs: 5,
      pollMaxMs: 10,
      backoffBaseMs: 1,
      backoffCapMs: 2,
    });
    await c.start();
    await eventually(async () => (await statuses('dl.dead')).failed === 1);
    await c.stop();
    const { rows } = await t.db.query<{ id: string; queue: string; status: string; last_error: string }>(
      'SELECT id, queue, status::text, last_error FROM qmaint.jobs WHERE id = ANY ($1::bigint[]) ORDER BY id',
      [[bad.id, retrying]],
    );
    expect(rows[0]).toMatchObject({ id: bad.id, queue: 'dl.dead', status: 'failed' });
    expect(rows[0]!.last_error).toContain('boom');
    expect(rows[1]!.queue).toBe('dl'); // still retrying in its own queue
    // Its key is free: a new job may take it, and then the redriven one stays failed.
    const fresh = await enqueueKeyed(t.db, 'dl', {}, { key: 'one', runAt: new Date(Date.now() + 3_600_000) });
    expect(fresh.outcome).toBe('inserted');
    expect(await redriveJobs(t.db, { from: 'dl.dead' }, new Date())).toEqual([]);
    await cancelJobs(t.db, { ids: [fresh.id] }, new Date());
    const dry = await runCli(['jobs', 'redrive', '--from', 'dl.dead', '--dry-run', '--json'], { env });
    expect(JSON.stringify(dry.json())).toContain('qmaint.redrive_jobs');
    const r = await runCli(['jobs', 'redrive', '--from', 'dl.dead', '--json'], { env });
    expect(r.json()).toMatchObject({ ok: true, count: 1, ids: [bad.id] });
    const back = await t.db.query<{ queue: string; status: string; retry_count: number }>(
      'SELECT queue, status::text, retry_count FROM qmaint.jobs WHERE id = $1',
      [bad.id],
    );
    expect(back.rows[0]).toEqual({ queue: 'dl', status: 'queued', retry_count: 0 });
    expect((await t.db.query(`SELECT job_id::text FROM qmaint.job_keys WHERE queue = 'dl' AND key = 'one'`)).rows).toEqual([{ job_id: bad.id }]);
  });

  it('redrive --to names the target; without it a dead-letter queue of several queues is refused (exit 2)', async () => {
    await setDeadLetter(t.db, 'a1', 'shared.dead');
    await setDeadLetter(t.db, 'a2', 'shared.dead');
    const id = await enqueue(t.db, 'shared.dead', {});
    await t.db.query(`UPDATE qmaint.jobs SET status = 'failed' WHERE id = $1`, [id]);
    const refused = await runCli(['jobs', 'redrive', '--from', 'shared.dead'], { env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('no single queue has shared.dead as its dead-letter queue');
    expect(await redriveJobs(t.db, { from: 'shared.dead', to: 'a2' }, new Date())).toEqual([id]);
    expect(await statuses('a2')).toEqual({ queued: 1 });
    const cli = await runCli(['queues', 'dead-letter', 'a1', '--to', 'a1'], { env });
    expect(cli.code).toBe(2);
    const set = await runCli(['queues', 'dead-letter', 'a1', '--clear', '--json'], { env });
    expect(set.json()).toMatchObject({ ok: true, deadLetter: null });
  });
});
