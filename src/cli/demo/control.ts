import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { DemoStep } from './types.js';

/** Queue control: unique keys, pause and resume, cancel, dead letters, one worker for many queues, recurring jobs. */
export const controlStep: DemoStep = {
  title: 'Queue control: unique keys, pause and resume, cancel, dead letters, many queues, recurring jobs',
  async run(d) {
    d.say('A key makes a job unique in its queue: while a queued or running job holds it, another job with the same');
    d.say('key is skipped (or, with --key-mode replace, takes the queued one’s place). Enqueue the same report twice:');
    const report = ['enqueue', '--queue', 'reports', '--key', 'daily-2026-12-01', '--payload', '{"day":"2026-12-01"}'];
    await d.qmaint(report);
    await d.qmaint(report);
    d.say('A paused queue is not claimed; jobs already running finish. Pause it, and a worker finds nothing there:');
    await d.qmaint(['queues', 'pause', 'reports']);
    const handler = path.join(d.scratch, 'report.mjs');
    writeFileSync(
      handler,
      `// Reports for a day we have no data for fail; the rest succeed.
export default async (job) => {
  if (job.payload.day === '2026-11-30') throw new Error('no data for ' + job.payload.day);
};
`,
    );
    await d.qmaint(['work', '--queue', 'reports', '--handler', handler, '--drain']);
    await d.qmaint(['queues', 'list']);
    d.say('Cancel a job you no longer want (it ends cancelled, counted apart from failures), and resume the queue:');
    await d.qmaint(['jobs', 'cancel', '--queue', 'reports']);
    await d.qmaint(['queues', 'resume', 'reports']);
    d.say('A dead-letter queue collects the jobs of a queue that fail for good, to look at and redrive later:');
    await d.qmaint(['queues', 'dead-letter', 'reports', '--to', 'reports-dead']);
    await d.qmaint(['enqueue', '--queue', 'reports', '--payload', '{"day":"2026-11-30"}', '--max-retries', '0']);
    await d.qmaint(['work', '--queue', 'reports', '--handler', handler, '--drain']);
    await d.qmaint(['jobs', 'list', '--queue', 'reports-dead']);
    d.say('One worker can serve several queues: a tasks module maps queue names to handlers, each queue with');
    d.say('its own concurrency if you like. It claims from them in turn, one queue per claim statement:');
    const tasks = path.join(d.scratch, 'tasks.mjs');
    writeFileSync(
      tasks,
      `// Queue name -> handler, or { handler, concurrency }.
export default {
  emails: async (job) => {},
  thumbnails: { handler: async (job) => {}, concurrency: 2 },
};
`,
    );
    await d.qmaint(['enqueue', '--queue', 'thumbnails', '--payload', '{"image":"cat.png"}']);
    await d.qmaint(['enqueue', '--queue', 'emails', '--payload', '{"to":"bob@example.com"}']);
    await d.qmaint(['work', '--tasks', tasks, '--drain']);
    d.say('Recurring jobs are stored in the database and enqueued once per tick, however many daemons or pg_cron');
    d.say('jobs run (keyed on schedule and tick). Time zones and daylight saving are handled:');
    await d.qmaint(['cron', 'add', 'nightly-report', '--schedule', '30 2 * * *', '--tz', 'Europe/Berlin', '--queue', 'reports']);
    await d.qmaint(['cron', 'list']);
  },
};
