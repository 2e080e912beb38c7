import type { DemoStep } from './types.js';

export const uiStep: DemoStep = {
  title: 'Watch it all in the dashboard',
  async run(d) {
    d.say('Everything above has a page in the web dashboard: queue depth and throughput, health verdicts, jobs with');
    d.say('their payload and last error, the partition timeline with its runway, retention line and low-water mark,');
    d.say('dead tuples and the xmin horizon, the claim plan, and the maintenance runs with failures first.');
    d.say('It serves on 127.0.0.1 and is read-only unless started with --allow-actions. Here it serves for 3 seconds');
    d.say('on a free port; the line below says where:');
    await d.qmaint(['ui', '--port', '0', '--exit-after', '3s']);
    d.say('To look around at leisure: keep the demo database (qmaint demo --keep), then run qmaint ui with');
    d.say('--database-url naming the qmaint_demo database, and open http://127.0.0.1:7411/ in a browser.');
  },
};
