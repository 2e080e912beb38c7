import type { DemoStep } from './types.js';

export const installStep: DemoStep = {
  title: 'Install the qmaint schema',
  async run(d) {
    d.say('qmaint keeps everything in one PostgreSQL schema called "qmaint". Migrations are numbered SQL files;');
    d.say('each is applied once, in one transaction, and recorded with a checksum so a changed file is noticed.');
    await d.qmaint(['migrate']);
    await d.qmaint(['migrate', '--status']);
    d.say('Running it again is harmless: it finds nothing to do.');
    await d.qmaint(['migrate']);
  },
};
