// The public API of qmaint. No CLI code (yargs, chalk, cli-table3) and no
// process.exit here or in anything it imports.
export { connect, Db, inTransaction, quoteIdent, validateIdentifier, parseQualifiedName, withMaintenanceLock, MAINTENANCE_LOCK_KEY } from './db.js';
export type { CheckedOut, ConnectOptions, PgClient, Queryable, SqlValue } from './db.js';
export { resolveConnection, loadSettings, redactUrl, redactSecrets, settingSpecs, parseConnectionString, TARGET_SESSION_ATTRS } from './config.js';
export type { ConnectionPlan, TargetSessionAttrs } from './config.js';
export { FailoverClient, clientOptions, newClientFor } from './failover.js';
export type { FailoverSpec } from './failover.js';
export type { Settings, SettingKey, LoadedSettings } from './config.js';
export { QmaintError, ExitCode } from './errors.js';
export { JsonText } from './json.js';
export type { ErrorCode } from './errors.js';
export { migrate, migrationStatus, requireMigrated, loadMigrations } from './migrate.js';
export { installRoles, planRoles, rolesInstalled, parseMember, ROLE_NAMES, ROLE_KINDS } from './roles.js';
export type { RoleKind, RoleStep, RolesPlan, RolesResult, MemberRequest } from './roles.js';
export { ensureEmbedded, stopEmbedded, embeddedStatus } from './embedded.js';
export { executeSteps, findBlockers, toPlanStep } from './plan.js';
export type { PlanStep, Blocker, ExecuteOptions, StepEvent, StepResult } from './plan.js';
export { claimQuery, CLAIM_SQL, LOW_WATER_SQL } from './queue/claim.js';
export type { ClaimParams } from './queue/claim.js';
export { enqueue, enqueueMany, NOTIFY_CHANNEL, MAX_TIMEOUT_SECONDS } from './queue/enqueue.js';
export type { EnqueueOptions, EnqueueManyOptions, EnqueueTarget, JobSpec } from './queue/enqueue.js';
export { Consumer, JobTimeoutError, sanitizeErrorText, ERROR_TEXT_MAX, DEFAULT_JOB_TIMEOUT_SECONDS } from './queue/consumer.js';
export type { ConsumerOptions, ConsumerEvents, ConsumerStats, Job, Handler, StopReport, WakeReason } from './queue/consumer.js';
export { queueStatus, listJobs, retryJobs, cancelJobs, rescueExpired } from './queue/admin.js';
export type { StatusReport, QueueStatus, PartitionStatus, JobRow, JobFilter, JobSelector, JobStatus } from './queue/admin.js';
export {
  applyPolicies,
  checkPolicyShape,
  loadPolicies,
  policyPaths,
  listPartitions,
  planRotate,
  rotate,
  createUntil,
  detach,
  drop,
  compact,
  summarize as summarizeRun,
  runPlans,
  previewPlans,
  isPooled,
} from './partitions/index.js';
export type {
  PolicyDocument,
  PolicyFile,
  ApplyResult,
  PartitionInfo,
  TableSummary,
  MaintainOptions,
  CreateOptions,
  Preview,
  PlanRequest,
  RunOptions,
  RunResult,
  TableRun,
} from './partitions/index.js';
export * from './vacuum/index.js';
export { explainDequeue, runHealth, serverChecks, judgePlan, planTree, resolveThresholds, DEFAULT_DEQUEUE_THRESHOLDS } from './health/index.js';
export type {
  DequeueReport,
  ExplainOptions,
  HealthCheck,
  HealthOptions,
  HealthReport,
  DequeueThresholds,
  ExplainDocument,
  RuleResult,
  Verdict,
  Thresholds,
} from './health/index.js';
export {
  Daemon,
  runTask,
  recentRuns,
  locatePgCron,
  planInstall,
  planUninstall,
  applyChanges,
  queueJobs,
  jobRuns,
  schedulesFrom,
  cronProblem,
  collectSamples,
  renderPrometheus,
  TASKS,
  LEADER_LOCK_KEY,
} from './schedule/index.js';
export type {
  DaemonOptions,
  DaemonEvent,
  MaintenanceRun,
  RunStatus,
  Runner,
  PgCronSite,
  CronJob,
  CronJobRun,
  JobChange,
  Schedules,
  TaskName,
  Sample,
} from './schedule/index.js';
