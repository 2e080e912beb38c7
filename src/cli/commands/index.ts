import type { Argv } from 'yargs';
import demo from './demo.js';
import embedded from './embedded.js';
import enqueue from './enqueue.js';
import explain from './explain.js';
import health from './health.js';
import jobs from './jobs.js';
import migrate from './migrate.js';
import partitions from './partitions.js';
import roles from './roles.js';
import schedule from './schedule.js';
import status from './status.js';
import vacuum from './vacuum.js';
import work from './work.js';

/** Registers one command group on the parser. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Register = (y: Argv<any>) => void;

/** Every command group, in the order --help lists them. */
export const groups: Register[] = [migrate, enqueue, work, status, jobs, partitions, vacuum, explain, health, schedule, roles, demo, embedded];
