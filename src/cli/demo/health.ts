import { loadSettings } from '../../config.js';
import { runHealth } from '../../health/checks.js';
import { resolveThresholds } from '../../health/thresholds.js';
import type { DemoContext, DemoStep } from './types.js';

/** Whether health will find anything critical right now: decides the exit code the demo expects. */
async function anythingCritical(d: DemoContext, thresholds: Record<string, string> = {}): Promise<boolean> {
  const settings = loadSettings().values;
  const report = await runHealth(d.db, {
    now: d.now,
    thresholds: resolveThresholds(thresholds),
    statementTimeout: settings.statementTimeout,
    batch: settings.batch,
    leaseSeconds: settings.leaseSeconds,
  });
  return report.status === 'critical';
}

export const healthStep: DemoStep = {
  title: 'Read the claim plan, and check health the way monitoring does',
  async run(d) {
    const now = ['--now', d.now.toISOString()];
    d.say('When claiming gets slow, people paste query plans into issues. qmaint reads the plan for you: it runs');
    d.say("the consumer's own claim statement under EXPLAIN ANALYZE inside a transaction it rolls back, so no job");
    d.say('changes state, and judges it: is the claim index used on every partition, are drained partitions');
    d.say('pruned, how many rows, heap fetches, dead rows and buffers each claimed job costs, how long it took.');
    await d.qmaint(['explain', 'dequeue', '--plan']);
    d.say('`qmaint health` runs every check at once and ends with one line a monitoring system can parse.');
    d.say('It exits 4 when something is critical, so a cron job or a Nagios-style check can act on it.');
    await d.qmaint(['health', ...now], { expectExit: (await anythingCritical(d)) ? 4 : 0 });
    d.say('Now a forgotten transaction: an application opened one, read a row, and went to lunch. Its snapshot');
    d.say('keeps vacuum from removing any row that died after it started. Here the limit is set to 0 seconds,');
    d.say('so the check fires at once (the default warns after 10 minutes and is critical after an hour).');
    const forgotten = d.db.newClient({ application_name: 'lunch-break-app' });
    await forgotten.connect();
    try {
      await forgotten.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await forgotten.query('SELECT count(*) FROM qmaint.jobs');
      await d.qmaint(['health', ...now, '--threshold', 'xmin_horizon_critical=0s'], { expectExit: 4 });
    } finally {
      await forgotten.query('ROLLBACK').catch(() => undefined);
      await forgotten.end();
    }
    d.say('The check named the session (pid and application). Once it ends, the horizon moves again:');
    const zero = { xmin_horizon_critical: '0s' };
    await d.qmaint(['health', ...now, '--threshold', 'xmin_horizon_critical=0s'], { expectExit: (await anythingCritical(d, zero)) ? 4 : 0 });
  },
};
