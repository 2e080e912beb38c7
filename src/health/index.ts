export { explainClaimSql, explainDequeue, explainLockLevel, explainSqlStatements, explainStatements } from './explain.js';
export type { DequeueReport, ExplainOptions, ExplainSqlOptions, SqlClaimReport } from './explain.js';
export { runHealth, serverChecks, dequeueCheck, summarize } from './checks.js';
export type { HealthCheck, HealthOptions, HealthReport } from './checks.js';
export { judgePlan, planTree, scans, worstVerdict, DEFAULT_DEQUEUE_THRESHOLDS, PLAN_RULES } from './plan.js';
export type { DequeueThresholds, ExplainDocument, PartitionInfo, PartitionState, PlanContext, PlanNode, RuleResult, Verdict } from './plan.js';
export { resolveThresholds, parseThresholdFlags, parseThresholdSetting } from './thresholds.js';
export type { Thresholds } from './thresholds.js';
