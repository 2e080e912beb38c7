import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/**
 * The public API, every name src/index.ts exports (values and types). A change
 * here is a change of what applications may rely on: review it as such, and
 * regenerate docs/api (npm run docs:api).
 */
const PUBLIC_API = [
  'attachConsumerMetrics',
  'attachDatabaseMetrics',
  'createMetrics',
  'serveMetrics',
  'DatabaseMetricsOptions',
  'HealthBody',
  'MetricsOptions',
  'MetricsServer',
  'MetricsServerOptions',
  'createUiHandler',
  'serveUi',
  'ServedUi',
  'ServeUiOptions',
  'UiHandler',
  'UiHandlerOptions',
  'CancelReport',
  'DefineQueueOptions',
  'DefinedTask',
  'JobCancelledError',
  'QueueDefinition',
  'QueueTask',
  'QueueTasks',
  'TypedHandler',
  'TypedJob',
  'defineQueue',
  'ReplicationStatus',
  'clientOptions',
  'FailoverSpec',
  'TargetSessionAttrs',
  'adopt',
  'planAdopt',
  'planRevert',
  'revertAdoption',
  'AdoptOptions',
  'AdoptPlan',
  'AdoptResult',
  'RevertOptions',
  'RevertPlan',
  'RevertResult',
  'PolicyColumns',
  'PgClient',
  'enqueueKeyed',
  'KeyMode',
  'KeyOutcome',
  'KeyedResult',
  'listQueues',
  'pauseQueue',
  'redriveJobs',
  'resumeQueue',
  'setDeadLetter',
  'PauseResult',
  'QueueInfo',
  'RedriveSelector',
  'cronAdd',
  'cronList',
  'cronRemove',
  'refillTicks',
  'CronDefinition',
  'CronInfo',
  'Missed',
  'AUTO',
  'ApplyResult',
  'Bloat',
  'BloatMethod',
  'Blocker',
  'CheckedOut',
  'ChurnMeasurement',
  'ConnectOptions',
  'ConnectionSource',
  'Consumer',
  'ConsumerEvents',
  'ConsumerOptions',
  'ConsumerStats',
  'CreateOptions',
  'CronJob',
  'CronJobRun',
  'DEFAULT_DEQUEUE_THRESHOLDS',
  'DEFAULT_JOB_TIMEOUT_SECONDS',
  'Daemon',
  'DaemonEvent',
  'DaemonOptions',
  'Db',
  'DequeuePartitionInfo',
  'DequeueReport',
  'DequeueThresholds',
  'EnqueueManyOptions',
  'EnqueueOptions',
  'EnqueueTarget',
  'ErrorCode',
  'ErrorDetails',
  'ExplainDocument',
  'ExplainOptions',
  'FunctionFile',
  'FunctionFileStatus',
  'GaveUpDetails',
  'Handler',
  'HealthCheck',
  'HealthOptions',
  'HealthReport',
  'InstallRolesOptions',
  'Job',
  'JobAction',
  'JobChange',
  'JobFilter',
  'JobRow',
  'JobSelector',
  'JobSpec',
  'JobStatus',
  'JobTimeoutError',
  'JsonText',
  'ListJobsOptions',
  'ListPartitionsOptions',
  'LockHolder',
  'LogLevel',
  'MaintainOptions',
  'MaintenanceRun',
  'MemberRequest',
  'MigrateOptions',
  'MigrateResult',
  'MigrationFile',
  'MigrationStatus',
  'PROFILE_NAMES',
  'PartitionInfo',
  'PartitionState',
  'PartitionStatus',
  'PartitionVacuumStatus',
  'PgCronSite',
  'PlanNode',
  'PlanStep',
  'PolicyDocument',
  'Preview',
  'ProfileName',
  'ProfileValue',
  'QmaintError',
  'Queryable',
  'QueueStatus',
  'ROLE_KINDS',
  'ROLE_NAMES',
  'RoleKind',
  'RoleStep',
  'RolesPlan',
  'RolesResult',
  'RuleResult',
  'RunOptions',
  'RunResult',
  'RunStatus',
  'RunVacuumOptions',
  'Runner',
  'Sample',
  'Schedules',
  'SchemaStatus',
  'EstimatedFlags',
  'StatusOptions',
  'StatusReport',
  'StepEvent',
  'StepResult',
  'StopReport',
  'TASKS',
  'TableRun',
  'TableSummary',
  'TaskName',
  'Thresholds',
  'TuneOptions',
  'TunePlan',
  'TuneResult',
  'TuneTarget',
  'VacuumProfile',
  'VacuumProfiles',
  'VacuumProgress',
  'VacuumRunOptions',
  'VacuumStatus',
  'VacuumStatusOptions',
  'VacuumedPartition',
  'Verdict',
  'WakeReason',
  'XminHolder',
  'XminHolderKind',
  'applyChanges',
  'applyPolicies',
  'cancelJobs',
  'checkPolicyShape',
  'collectSamples',
  'compact',
  'connect',
  'createUntil',
  'defaultVacuumProfiles',
  'detach',
  'drop',
  'enqueue',
  'enqueueMany',
  'explainDequeue',
  'installRoles',
  'jobRuns',
  'listJobs',
  'listPartitions',
  'locatePgCron',
  'migrate',
  'migrationStatus',
  'planInstall',
  'planJobAction',
  'planRoles',
  'planRotate',
  'planUninstall',
  'planVacuumRun',
  'queueJobs',
  'queueStatus',
  'recentRuns',
  'renderPrometheus',
  'requireMigrated',
  'rescueExpired',
  'retryJobs',
  'rotate',
  'runHealth',
  'runTask',
  'runVacuum',
  'tune',
  'tuneServerSide',
  'vacuumStatus',
];

const program = ts.createProgram([path.join(ROOT, 'src/index.ts')], {
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
  strict: true,
  skipLibCheck: true,
  noEmit: true,
  types: ['node'],
});
const checker = program.getTypeChecker();
const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(path.join(ROOT, 'src/index.ts'))!)!);

/** Names typedoc.json excuses from documentation (the consumer, documented where it is being split up). */
const excused = new Set(
  (JSON.parse(readFileSync(path.join(ROOT, 'typedoc.json'), 'utf8')) as { intentionallyNotDocumented?: string[] }).intentionallyNotDocumented,
);

describe('the public API (src/index.ts)', () => {
  it('exports exactly the pinned names, and no internals', () => {
    expect(exported.map((s) => s.name).sort()).toEqual([...PUBLIC_API].sort());
    for (const internal of ['CLAIM_SQL', 'LOW_WATER_SQL', 'toPlanStep', 'findBlockers', 'executeSteps', 'ExitCode', 'resolveConnection', 'loadSettings']) {
      expect(api).not.toHaveProperty(internal);
    }
  });

  it('documents every export where it is declared', () => {
    const undocumented = exported
      .filter((s) => !excused.has(s.name))
      .filter((s) => {
        const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
        return target.getDocumentationComment(checker).length === 0;
      })
      .map((s) => s.name);
    expect(undocumented).toEqual([]);
  });
});

describe('library code does not speak CLI', () => {
  /** Arguments to PostgreSQL's own programs, not messages. */
  const ALLOWED = new Set(['--version', '--encoding=UTF8']);

  function libraryFiles(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) return e.name === 'cli' ? [] : libraryFiles(full);
      return e.name.endsWith('.ts') ? [full] : [];
    });
  }

  it('names no --flag in any string outside src/cli/', () => {
    const found: string[] = [];
    for (const file of libraryFiles(path.join(ROOT, 'src'))) {
      const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
      const visit = (node: ts.Node): void => {
        if (ts.isStringLiteralLike(node) || ts.isTemplateHead(node) || ts.isTemplateMiddle(node) || ts.isTemplateTail(node)) {
          if (!ALLOWED.has(node.text) && /(^|[\s(,;'"])--[a-z]/.test(node.text)) found.push(`${path.relative(ROOT, file)}: ${node.text}`);
        }
        ts.forEachChild(node, visit);
      };
      visit(source);
    }
    expect(found).toEqual([]);
  });
});
