// Scheduled maintenance: pg_cron jobs and the node-cron daemon, both calling qmaint.run_task.
export { TASKS, TASK_PURPOSE, cronProblem, schedulesFrom } from './tasks.js';
export type { TaskName, Schedules, CronDialect } from './tasks.js';
export { runTask, recentRuns } from './runs.js';
export type { MaintenanceRun, Runner, RunStatus } from './runs.js';
export { locatePgCron, installChanges, planInstall, planUninstall, applyChanges, queueJobs, jobRuns, jobName, taskCommand } from './pgcron.js';
export type { PgCronSite, InstallTarget, CronJob, CronJobRun, JobChange } from './pgcron.js';
export { Daemon } from './daemon.js';
export type { DaemonOptions, DaemonEvent, LogLevel } from './daemon.js';
export { LeaderElection, LEADER_LOCK_KEY, currentLeader } from './leader.js';
export type { LeaderInfo } from './leader.js';
