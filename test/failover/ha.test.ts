// On a primary and a streaming standby (scripts/pg15-ha.sh; issue 17). Runs only
// when the rig's variables are set (`npm run failover` starts it, once
// synchronous and once asynchronous). One file, in order: the read-only
// commands on the standby first, then the failover, which spends the rig (its
// primary is gone).
import { describe, expect, it } from 'vitest';
import { FailoverRun, rigFromEnv, TEST_OPTIONS } from '../../scripts/failover/harness.js';
import { connect } from '../../src/db.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { migrate } from '../../src/migrate.js';
import { cleanEnv, eventually, runCli } from '../helpers.js';

const rig = rigFromEnv();
/** Nothing listens on port 1: a command that used the database URL instead of the read URL would fail. */
const NOWHERE = 'postgres://postgres@127.0.0.1:1/postgres';

describe.skipIf(!rig)('replication health', () => {
  it('health and vacuum status report the standby and flag an inactive slot', { timeout: 120_000 }, async () => {
    const db = await connect({ databaseUrl: rig!.url, max: 2 });
    try {
      await migrate(db);
      const env = cleanEnv({ DATABASE_URL: rig!.url });
      type Check = { check: string; status: string; observed: string };
      const checks = async (...extra: string[]) => (await runCli(['health', '--json', ...extra], { env })).json<{ checks: Check[] }>().checks;
      const byName = (list: Check[], name: string) => list.find((c) => c.check === name)!;
      let list = await checks();
      expect(byName(list, 'replication_lag').observed).toMatch(/^qmaint_standby /);
      expect(byName(list, 'replication_slots')).toMatchObject({ status: 'ok', observed: '1 slot(s), 0 inactive' });
      // An inactive slot holding WAL: warn, and critical under a lower threshold.
      await db.query(`SELECT pg_create_physical_replication_slot('qmaint_test_idle', true)`);
      try {
        list = await checks();
        expect(byName(list, 'replication_slots')).toMatchObject({ status: 'warn' });
        expect(byName(list, 'replication_slots').observed).toMatch(/2 slot\(s\), 1 inactive: qmaint_test_idle \(physical, .* WAL held\)/);
        list = await checks('--threshold', 'inactive_slot_wal_critical=0');
        expect(byName(list, 'replication_slots').status).toBe('critical');
        const vacuum = await runCli(['vacuum', 'status', '--json'], { env });
        const r = vacuum.json<{
          replication: { inRecovery: boolean; slots: { name: string; active: boolean; retainedWalBytes: number }[]; standbys: { name: string }[] };
        }>().replication;
        expect(r.inRecovery).toBe(false);
        expect(r.slots.map((s) => [s.name, s.active])).toEqual([
          ['qmaint_standby', true],
          ['qmaint_test_idle', false],
        ]);
        expect(r.slots[1]!.retainedWalBytes).toBeGreaterThanOrEqual(0);
        expect(r.standbys.map((s) => s.name)).toEqual(['qmaint_standby']);
        const text = await runCli(['vacuum', 'status'], { env });
        expect(text.stdout).toMatch(/slot qmaint_test_idle \(physical\): INACTIVE, holds/);
      } finally {
        await db.query(`SELECT pg_drop_replication_slot('qmaint_test_idle')`);
      }
      // On the standby: its own replay delay.
      const standby = await runCli(['health', '--json', '--read-url', rig!.standbyUrl], { env });
      expect(byName(standby.json<{ checks: Check[] }>().checks, 'replication_lag').observed).toMatch(/^this standby /);
    } finally {
      await db.close();
    }
  });
});

describe.skipIf(!rig)('read-only commands on the standby', () => {
  it('status, jobs list, partitions list, vacuum status and health read the standby; explain dequeue refuses it', { timeout: 180_000 }, async () => {
    const db = await connect({ databaseUrl: rig!.url, max: 2 });
    try {
      await migrate(db);
      const id = await enqueue(db, 'read_url_probe', { hello: 'standby' });
      const standby = await connect({ databaseUrl: rig!.standbyUrl, max: 1 });
      try {
        await eventually(async () => (await standby.query('SELECT 1 FROM qmaint.jobs WHERE id = $1', [id])).rowCount === 1, 30_000);
      } finally {
        await standby.close();
      }
      const env = cleanEnv({ DATABASE_URL: NOWHERE });
      const read = ['--read-url', rig!.standbyUrl, '--json'];
      const status = await runCli(['status', ...read], { env });
      expect(status.code, status.stderr).toBe(0);
      expect(JSON.stringify(status.json())).toContain('read_url_probe');
      const list = await runCli(['jobs', 'list', '--queue', 'read_url_probe', ...read], { env });
      expect(list.code, list.stderr).toBe(0);
      expect(list.json<{ jobs: { id: string }[] }>().jobs.map((j) => j.id)).toEqual([id]);
      // QMAINT_READ_URL does the same as the flag.
      const parts = await runCli(['partitions', 'list', '--json'], { env: cleanEnv({ DATABASE_URL: NOWHERE, QMAINT_READ_URL: rig!.standbyUrl }) });
      expect(parts.code, parts.stderr).toBe(0);
      expect(parts.json<{ tables: { table: string }[] }>().tables.map((t) => t.table)).toContain('qmaint.jobs');
      const vacuum = await runCli(['vacuum', 'status', ...read], { env });
      expect(vacuum.code, vacuum.stderr).toBe(0);
      // health on a standby: says so, names what needs the primary, and does not run dequeue.
      const health = await runCli(['health', ...read], { env });
      expect([0, 4], health.stderr).toContain(health.code);
      const h = health.json<{ inRecovery: boolean; needPrimary: string[]; checks: { check: string }[] }>();
      expect(h.inRecovery).toBe(true);
      expect(h.needPrimary).toContain('dequeue');
      expect(h.checks.map((c) => c.check)).not.toContain('dequeue');
      expect(h.checks.map((c) => c.check)).toContain('runway');
      const text = await runCli(['health', '--read-url', rig!.standbyUrl], { env });
      expect(text.stdout).toMatch(/this server is a standby: dequeue needs the primary and was not run/);
      // On the primary, the same command runs dequeue.
      const primary = await runCli(['health', '--json'], { env: cleanEnv({ DATABASE_URL: rig!.url }) });
      expect(primary.json<{ inRecovery: boolean; checks: { check: string }[] }>().checks.map((c) => c.check)).toContain('dequeue');
      // explain dequeue: the primary only, exit 2 on a standby, changing nothing.
      const explain = await runCli(['explain', 'dequeue', '--database-url', rig!.standbyUrl]);
      expect(explain.code).toBe(2);
      expect(explain.stderr).toMatch(/explain dequeue plans the claim, which runs on the primary only, and 127\.0\.0\.1:\d+ is a standby/);
      // A command that writes still goes to the database URL, never the read URL.
      const retry = await runCli(['jobs', 'retry', '--queue', 'read_url_probe', ...read], { env });
      expect(retry.code).toBe(3);
    } finally {
      await db.close();
    }
  });
});

describe.skipIf(!rig)('failover: the primary dies, the standby is promoted', () => {
  it('clients follow the new primary; with synchronous replication no acknowledged enqueue is lost', { timeout: 240_000 }, async () => {
    const run = new FailoverRun(rig!, { ...TEST_OPTIONS, log: (line) => process.stderr.write(`[failover] ${line}\n`) });
    const r = await run.run();
    process.stderr.write(`[failover] report ${JSON.stringify(r)}\n`);
    if (!r.drained || r.consumersAlive !== TEST_OPTIONS.consumers) process.stderr.write(run.stderrs() + '\n');
    // The outage happened under load, and clients came back on the new primary.
    expect(r.acknowledgedBeforeKill).toBeGreaterThan(0);
    expect(r.timings.firstAckAfterPromotionMs).not.toBeNull();
    // Synchronous: every acknowledged enqueue is on the new primary. Asynchronous: measured (docs/failover.md).
    if (r.sync) expect.soft(r.lost).toBe(0);
    // Nothing left queued or running: leases brought back what the consumers held across the outage.
    expect.soft(r.drained).toBe(true);
    expect.soft(r.notCompleted).toBe(0);
    // Asynchronous: a handler's own write committed on the old primary can be lost with it while the
    // job's completion, retried by the consumer, lands on the new primary (the same window as a lost enqueue).
    if (r.sync) expect.soft(r.unhandled).toBe(0);
    // A job ran twice only when a lease taken before the outage was still open.
    expect.soft(r.unexplainedDuplicates).toEqual([]);
    // Every consumer still at work, each LISTENing again on the new primary.
    expect.soft(r.consumersAlive).toBe(TEST_OPTIONS.consumers);
    expect.soft(r.listeners).toBe(TEST_OPTIONS.consumers);
    // The leader lock was taken again on the new primary, by one daemon, once.
    expect.soft(r.leaderOnNewPrimary).toBe(true);
    expect.soft(r.leaderTakeovers).toBe(1);
  });
});
