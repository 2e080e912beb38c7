// Failover (issue 17): producers, consumers and two daemons on a primary and a
// streaming standby (scripts/pg15-ha.sh), all given the multi-host URL; the
// primary is stopped with -m immediate and the standby promoted. Runs only when
// the rig's variables are set (`npm run failover` starts it, once synchronous
// and once asynchronous); the rig is spent afterwards (its primary is gone).
import { describe, expect, it } from 'vitest';
import { FailoverRun, rigFromEnv, TEST_OPTIONS } from '../../scripts/failover/harness.js';

const rig = rigFromEnv();

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
    expect.soft(r.unhandled).toBe(0);
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
