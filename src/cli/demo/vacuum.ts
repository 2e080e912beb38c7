import type { DemoStep } from './types.js';

export const vacuumStep: DemoStep = {
  title: 'Vacuum: per-partition profiles tuned from the measured churn',
  async run(d) {
    const at = (seconds: number) => ['--now', new Date(d.now.getTime() + seconds * 1000).toISOString()];
    d.say("Every claim and every completion leaves a dead row version behind. PostgreSQL's default autovacuum waits");
    d.say('until dead rows reach 20% of the table, which for a partition holding a day of jobs is a lot of dead rows');
    d.say('for the claim to step over. qmaint gives each partition autovacuum settings for its age: hot (being');
    d.say('written and claimed), warm (past, still holds live jobs) and cold (drained: frozen once, then left alone).');
    const worker = d.db.newClient({ application_name: 'qmaint-demo-churn' });
    await worker.connect();
    // Counters reach pg_stat_user_tables when a backend flushes them; ask for it and give it a moment.
    const settle = async () => {
      await worker.query('SELECT pg_stat_force_next_flush()');
      await worker.query('SELECT 1');
      await new Promise((r) => setTimeout(r, 1500));
    };
    try {
      await worker.query(`SELECT qmaint.ensure_partition('qmaint.jobs', $1::timestamptz)`, [d.now.toISOString()]);
      await worker.query(
        `INSERT INTO qmaint.jobs (queue, created_at, payload) SELECT 'vacuum-demo', $1::timestamptz, jsonb_build_object('n', n) FROM generate_series(1, 3000) n`,
        [d.now.toISOString()],
      );
      await settle();
      d.say('Here is the state of each partition, and what (if anything) holds the xmin horizon back:');
      await d.qmaint(['vacuum', 'status', ...at(0)]);
      d.say('`vacuum tune` keeps a history of pg_stat_user_tables samples. The first run records one:');
      await d.qmaint(['vacuum', 'tune', '--sample', '0s', ...at(0)]);
      d.say('Now 3,000 jobs are claimed and 1,500 completed (4,500 dead row versions), and we pretend a minute passed.');
      await worker.query(`UPDATE qmaint.jobs SET status = 'running' WHERE queue = 'vacuum-demo'`);
      await worker.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE queue = 'vacuum-demo' AND (payload->>'n')::int % 2 = 0`);
      await settle();
      d.say('With --dry-run, tune shows the churn it measured, the thresholds it derives (the dead rows half an');
      d.say('autovacuum_naptime of churn makes), current against proposed settings, and the exact SQL:');
      await d.qmaint(['vacuum', 'tune', '--dry-run', '--sample', '0s', ...at(60)]);
      d.say('Applied, each ALTER TABLE runs under lock_timeout with retries, under the maintenance lock:');
      await d.qmaint(['vacuum', 'tune', '--sample', '0s', ...at(60)]);
      d.say('`vacuum run` vacuums now, from the client, outside any transaction, with progress:');
      await d.qmaint(['vacuum', 'run', ...at(60)]);
      // Finish the demo's jobs so the partition can drain and be retired later in the tour.
      await worker.query(
        `UPDATE qmaint.jobs SET status = 'completed', locked_by = NULL, locked_until = NULL WHERE queue = 'vacuum-demo' AND status = 'running'`,
      );
    } finally {
      await worker.end();
    }
  },
};
