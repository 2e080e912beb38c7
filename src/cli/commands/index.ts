import type { Register } from '../register.js';
import completion from './completion.js';
import cron from './cron.js';
import config from './config.js';
import adopt from './adopt.js';
import demo from './demo.js';
import embedded from './embedded.js';
import enqueue from './enqueue.js';
import explain from './explain.js';
import health from './health.js';
import jobs from './jobs.js';
import migrate from './migrate.js';
import partitions from './partitions.js';
import queues from './queues.js';
import roles from './roles.js';
import schedule from './schedule.js';
import status from './status.js';
import ui from './ui.js';
import vacuum from './vacuum.js';
import work from './work.js';

/** Every command group, in the order --help lists them. */
export const groups: Register[] = [
  migrate,
  enqueue,
  work,
  status,
  queues,
  jobs,
  partitions,
  adopt,
  vacuum,
  explain,
  health,
  schedule,
  ui,
  cron,
  roles,
  config,
  demo,
  embedded,
  completion,
];
