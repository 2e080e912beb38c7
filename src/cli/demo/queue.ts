import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { DemoStep } from './types.js';

/** The queue: enqueue one job and a file of many, work them with a handler, look at what failed. */
export const queueStep: DemoStep = {
  title: 'The queue: enqueue jobs, work them, see what failed',
  async run(d) {
    d.say('A job is a row in qmaint.jobs: a queue name, a JSON payload, a status (queued, running, completed, failed),');
    d.say('when it may run, and how often it may be retried. Enqueue one:');
    await d.qmaint(['enqueue', '--queue', 'emails', '--payload', '{"to":"ada@example.com","subject":"welcome"}']);
    const file = path.join(d.scratch, 'emails.ndjson');
    const lines = Array.from({ length: 2000 }, (_, i) => JSON.stringify({ to: `user${i}@example.com`, subject: 'newsletter' }));
    lines.push(JSON.stringify({ to: 'full@example.com', subject: 'newsletter', bounce: true }));
    writeFileSync(file, lines.join('\n') + '\n');
    d.say('Many at once go through COPY in one transaction: a file with one JSON payload per line (a bad line');
    d.say('would be refused with its line number, and nothing enqueued). One of these addresses will bounce.');
    await d.qmaint(['enqueue', '--queue', 'emails', '--file', file, '--max-retries', '1']);
    await d.qmaint(['status']);
    const handler = path.join(d.scratch, 'send-email.mjs');
    writeFileSync(
      handler,
      `// A handler module: its default export gets each job.
export default async (job) => {
  if (job.payload.bounce) throw new Error('mailbox full: ' + job.payload.to);
};
`,
    );
    d.say('A consumer claims jobs in batches (FOR UPDATE SKIP LOCKED, so many consumers never take the same job),');
    d.say('runs the handler module on each, and marks them completed. A failing job is retried later with growing,');
    d.say('jittered delays; once its retries are spent it stays failed with its error. --drain stops when nothing is ready.');
    await d.qmaint(['work', '--queue', 'emails', '--handler', handler, '--drain', '--concurrency', '8']);
    d.say('The bounced job waits for its retry (a second or so). Work again once it is due: it fails for good this time.');
    await new Promise((r) => setTimeout(r, 1200));
    await d.qmaint(['work', '--queue', 'emails', '--handler', handler, '--drain']);
    await d.qmaint(['jobs', 'list', '--status', 'failed']);
    d.say('Failed jobs can be put back once the cause is fixed; --dry-run shows the exact SQL first.');
    await d.qmaint(['jobs', 'retry', '--queue', 'emails', '--dry-run']);
    await d.qmaint(['status']);
  },
};
