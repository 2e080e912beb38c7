import type { DemoStep } from './types.js';

export const scheduleStep: DemoStep = {
  title: 'Run maintenance on a schedule',
  async run(d) {
    d.say('Maintenance nobody schedules does not happen. qmaint has two schedulers, and both run the same SQL:');
    d.say("SELECT qmaint.run_task('rotate'), 'vacuum', 'rescue' or 'health'. run_task records every run and makes sure a");
    d.say('task never overlaps itself, so pg_cron and the Node daemon can both be running at once without harm.');
    d.say('');
    d.say('Way 1, pg_cron inside the database. This server may not have pg_cron, so we only print what install would run:');
    await d.qmaint(['schedule', 'install', '--dry-run']);
    d.say('Way 2, the node-cron daemon. Normally it runs as a service with minute-level schedules; here it gets a');
    d.say('seconds field so we can watch it work, and stops by itself after 5 seconds. With several daemons, one leads');
    d.say('(an advisory lock) and the others stand by, so each task still runs once per tick.');
    await d.qmaint([
      'schedule',
      'daemon',
      '--rescue-cron',
      '* * * * * *',
      '--rotate-cron',
      '*/2 * * * * *',
      '--health-cron',
      '*/2 * * * * *',
      '--vacuum-cron',
      '1-59/2 * * * * *',
      '--exit-after',
      '5s',
      '--leader-interval',
      '200ms',
    ]);
    d.say('Every run is kept in qmaint.maintenance_runs, whoever ran it; schedule list shows them with any pg_cron jobs:');
    await d.qmaint(['schedule', 'list', '--limit', '2']);
  },
};
