// Fault injection (issue 10): ~20,000 jobs through `qmaint work` child processes
// that are SIGKILLed and replaced, whose connections are terminated, on a private
// PostgreSQL that restarts once, while one-minute partitions are created and
// retired. The harness (scripts/chaos/harness.ts, shared with `npm run chaos`)
// records every handler execution in a ledger table; here each invariant is
// asserted on its own, softly, so one failing run reports all of them.
import { afterAll, describe, expect, it } from 'vitest';
import { BUSY_QUEUE, ChaosRun, coverageProblems, formatReport, IDLE_QUEUE, TEST_OPTIONS, type ChaosReport } from '../../scripts/chaos/harness.js';

const run = new ChaosRun({ ...TEST_OPTIONS, log: (line) => process.stderr.write(`[chaos] ${line}\n`) });
// The harness cleans up after itself; this covers a test that vitest gave up on.
afterAll(() => run.cleanup(), 30_000);

describe('chaos: kills, terminated connections, a server restart and rotation under load', () => {
  it('loses nothing, runs a job twice only after a fault, leaves nothing live, and no consumer dies on its own', { timeout: 240_000 }, async () => {
    const r: ChaosReport = await run.run();
    process.stderr.write(`${formatReport(r)}\n`);
    // The faults really happened (a run that injected nothing proves nothing).
    expect.soft(coverageProblems(r)).toEqual([]);
    expect(r.enqueued).toEqual({ [BUSY_QUEUE]: expect.any(Number) as number, [IDLE_QUEUE]: TEST_OPTIONS.idleJobs });
    expect(r.enqueued[BUSY_QUEUE]).toBeGreaterThanOrEqual(TEST_OPTIONS.jobs);

    // 0 lost: every enqueued job completed, and every one has a handler execution in the ledger.
    expect.soft(r.lost).toEqual({ vanished: [], notCompleted: [], unhandled: [] });
    expect.soft(r.phantoms).toEqual([]);
    expect.soft(r.ledgerRows).toBeGreaterThanOrEqual(r.enqueued[BUSY_QUEUE]! + r.enqueued[IDLE_QUEUE]!);
    // Duplicates only after a kill of the worker that ran it, a terminated connection of that worker, or the restart.
    expect.soft(r.duplicates.filter((d) => d.reasons.includes(null))).toEqual([]);
    // Nothing left queued or running, and the queues drained within the bound.
    expect.soft(r.live).toEqual({});
    expect.soft(r.incidents).toEqual([]);
    expect.soft(r.drained).toBe(true);
    // Every consumer exit was caused by the harness: SIGKILL, or SIGTERM at the end (exit 0).
    expect.soft(r.unexpectedExits).toEqual([]);
    expect.soft(r.stopFailures).toEqual([]);
  });
});
