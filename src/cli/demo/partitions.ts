import type { DemoStep } from './types.js';

const DAY = 86_400_000;

/** Partitions: the runway made ahead, then a week of time travel and a rotate that retires the expired day. */
export const partitionsStep: DemoStep = {
  title: 'Partitions: a runway made ahead, old days retired by DETACH and DROP',
  async run(d) {
    const iso = (days: number) => new Date(d.now.getTime() + days * DAY).toISOString();
    d.say('qmaint.jobs is split into one partition per day. The policy (partitions/jobs.json) says how many to keep');
    d.say('ready ahead, how long to keep old ones, and what to do with jobs still waiting in an old partition.');
    await d.qmaint(['partitions', 'apply']);
    await d.qmaint(['partitions', 'rotate', '--now', iso(0)]);
    d.say("Two jobs land in today's partition: one finished, one still waiting.");
    await d.db.query(`SELECT qmaint.enqueue('demo-partitions', '{}', $1, 0, 5, $1)`, [d.now]);
    await d.db.query(`UPDATE qmaint.jobs SET status = 'completed' WHERE id = (SELECT qmaint.enqueue('demo-partitions', '{}', $1, 0, 5, $1))`, [d.now]);
    await d.qmaint(['partitions', 'list', '--now', iso(0)]);
    d.say('Now travel eight days ahead (--now). The plan shows each statement with the lock it takes: the waiting job is');
    d.say('moved forward first, then the expired day is detached without blocking anyone (CONCURRENTLY) and dropped.');
    await d.qmaint(['partitions', 'plan', '--now', iso(8)]);
    await d.qmaint(['partitions', 'rotate', '--now', iso(8)]);
    d.say("The old day is gone (no mass DELETE, no VACUUM needed); the waiting job now sits in today's partition.");
    await d.qmaint(['partitions', 'list', '--now', iso(8)]);
  },
};
