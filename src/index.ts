/**
 * qmaint as a library: a PostgreSQL job queue with time-range partitioned
 * `qmaint.jobs`, per-partition autovacuum tuning, `explain dequeue`, health
 * checks and scheduled maintenance.
 *
 * Start with {@link connect} (or {@link Db.fromPool} for a pool of your own),
 * install or upgrade the schema with {@link migrate}, add jobs with
 * {@link enqueue} / {@link enqueueMany}, and work them with a {@link Consumer}.
 * Every failure the caller can act on is a {@link QmaintError}.
 *
 * This module is the whole public API; everything else in the package is
 * internal and may change in any release.
 *
 * @packageDocumentation
 */

// No CLI code (yargs, chalk, cli-table3) and no process.exit here or in
// anything it imports. test/foundation/public-api.test.ts pins this list.

// Connecting
export { connect, Db } from './db.js';
export type { CheckedOut, ConnectOptions, LockHolder, PgClient, Queryable } from './db.js';
export type { ConnectionSource, TargetSessionAttrs } from './config.js';
export { clientOptions } from './failover.js';
export type { FailoverSpec } from './failover.js';

// Errors
export { QmaintError } from './errors.js';
export type { ErrorCode, ErrorDetails } from './errors.js';
export { JobCancelledError, JobTimeoutError } from './queue/consumer.js';

// Schema
export { migrate, migrationStatus, requireMigrated } from './migrate.js';
export type { FunctionFile, FunctionFileStatus, MigrateOptions, MigrationFile, MigrateResult, MigrationStatus, SchemaStatus } from './migrate.js';
export { installRoles, planRoles, ROLE_KINDS, ROLE_NAMES } from './roles.js';
export type { InstallRolesOptions, MemberRequest, RoleKind, RolesPlan, RolesResult, RoleStep } from './roles.js';

// Producing
export { enqueue, enqueueKeyed, enqueueMany } from './queue/enqueue.js';
export type { EnqueueManyOptions, EnqueueOptions, EnqueueTarget, JobSpec, KeyMode, KeyOutcome, KeyedResult } from './queue/enqueue.js';
export { JsonText } from './json.js';

// Typed queues: one payload type for the producer's enqueue and the worker's handler
export { defineQueue } from './queue/define.js';
export type { DefinedTask, DefineQueueOptions, QueueDefinition, TypedHandler, TypedJob } from './queue/define.js';

// Consuming
export { Consumer, DEFAULT_JOB_TIMEOUT_SECONDS } from './queue/consumer.js';
export type { ConsumerEvents, ConsumerOptions, ConsumerStats, Handler, Job, QueueTask, QueueTasks, StopReport, WakeReason } from './queue/consumer.js';

// Administering jobs
export { cancelJobs, listJobs, planJobAction, queueStatus, rescueExpired, retryJobs } from './queue/admin.js';
export type {
  CancelReport,
  EstimatedFlags,
  JobAction,
  JobFilter,
  JobRow,
  JobSelector,
  JobStatus,
  ListJobsOptions,
  PartitionStatus,
  QueueStatus,
  StatusOptions,
  StatusReport,
} from './queue/admin.js';

// Queues: pause, resume, dead letters
export { listQueues, pauseQueue, redriveJobs, resumeQueue, setDeadLetter } from './queue/queues.js';
export type { PauseResult, QueueInfo, RedriveSelector } from './queue/queues.js';

// Recurring jobs
export { cronAdd, cronList, cronRemove, refillTicks } from './cron/index.js';
export type { CronDefinition, CronInfo, Missed } from './cron/index.js';

// Plans and their results (partitions, vacuum)
export type { Blocker, GaveUpDetails, PlanStep, StepEvent, StepResult } from './plan.js';

// Partitions
export { applyPolicies, checkPolicyShape, compact, createUntil, detach, drop, listPartitions, planRotate, rotate } from './partitions/index.js';
export type {
  ApplyResult,
  CreateOptions,
  ListPartitionsOptions,
  MaintainOptions,
  PartitionInfo,
  PolicyColumns,
  PolicyDocument,
  Preview,
  RunOptions,
  RunResult,
  TableRun,
  TableSummary,
} from './partitions/index.js';

// Vacuum
export { AUTO, defaultVacuumProfiles, PROFILE_NAMES, planVacuumRun, runVacuum, tune, tuneServerSide, vacuumStatus } from './vacuum/index.js';
export type {
  Bloat,
  BloatMethod,
  ChurnMeasurement,
  PartitionVacuumStatus,
  ReplicationStatus,
  ProfileName,
  ProfileValue,
  RunVacuumOptions,
  StatusOptions as VacuumStatusOptions,
  TuneOptions,
  TunePlan,
  TuneResult,
  TuneTarget,
  VacuumedPartition,
  VacuumProfile,
  VacuumProfiles,
  VacuumProgress,
  VacuumRunOptions,
  VacuumStatus,
  XminHolder,
  XminHolderKind,
} from './vacuum/index.js';

// Health and explain dequeue
export { DEFAULT_DEQUEUE_THRESHOLDS, explainDequeue, runHealth } from './health/index.js';
export type {
  DequeueReport,
  DequeueThresholds,
  ExplainDocument,
  ExplainOptions,
  HealthCheck,
  HealthOptions,
  HealthReport,
  PartitionInfo as DequeuePartitionInfo,
  PartitionState,
  PlanNode,
  RuleResult,
  Thresholds,
  Verdict,
} from './health/index.js';

// Scheduled maintenance
export { applyChanges, Daemon, jobRuns, locatePgCron, planInstall, planUninstall, queueJobs, recentRuns, runTask, TASKS } from './schedule/index.js';
export type {
  CronJob,
  CronJobRun,
  DaemonEvent,
  DaemonOptions,
  JobChange,
  LogLevel,
  MaintenanceRun,
  PgCronSite,
  Runner,
  RunStatus,
  Schedules,
  TaskName,
} from './schedule/index.js';

// Prometheus metrics
export { attachConsumerMetrics, attachDatabaseMetrics, collectSamples, createMetrics, renderPrometheus, serveMetrics } from './metrics/index.js';
export type { DatabaseMetricsOptions, HealthBody, MetricsOptions, MetricsServer, MetricsServerOptions, Sample } from './metrics/index.js';

// Adopting an existing table
export { adopt, planAdopt } from './adopt/index.js';
export type { AdoptOptions, AdoptPlan, AdoptResult } from './adopt/index.js';
export { planRevert, revertAdoption } from './adopt/revert.js';
export type { RevertOptions, RevertPlan, RevertResult } from './adopt/revert.js';

// The web dashboard (qmaint ui): a Node request handler to mount, or its own server
export { createUiHandler, serveUi } from './ui/server.js';
export type { ServedUi, ServeUiOptions, UiHandler, UiHandlerOptions } from './ui/server.js';
