import { EXPLAIN_CLAIM_SQL, explainDequeue, type DequeueReport } from '../../health/explain.js';
import { planTree, type RuleResult } from '../../health/plan.js';
import { parseThresholdFlags, parseThresholdSetting, resolveThresholds } from '../../health/thresholds.js';
import { claimQuery, LOW_WATER_SQL } from '../../queue/claim.js';
import { ExitCode } from '../../errors.js';
import { handler, type Context } from '../context.js';
import type { Output } from '../output.js';
import type { Register } from './index.js';

interface ExplainArgs {
  target: 'dequeue';
  queue?: string;
  batch?: number;
  plan: boolean;
  threshold: string[];
  statementTimeout?: string;
  dryRun: boolean;
  analyze?: boolean;
}

const register: Register = (y) => {
  y.command(
    'explain <target>',
    'EXPLAIN ANALYZE the claim query (rolled back) and judge the plan; --no-analyze: plan only',
    (b) =>
      b
        .positional('target', { choices: ['dequeue'] as const, description: 'what to explain: dequeue, the consumer\'s claim statement' })
        .option('queue', { type: 'string', description: 'queue to claim from (default: the queue of the oldest due job, else "default")' })
        .option('batch', { type: 'number', description: 'jobs per claim (default: the batch setting, 100)' })
        .option('plan', { type: 'boolean', default: false, description: 'print the plan tree' })
        .option('threshold', { type: 'string', array: true, default: [], description: 'override a threshold: name=value (repeatable; see docs/health.md)' })
        .option('statement-timeout', { type: 'string', description: 'statement_timeout of the explain (default: the statementTimeout setting, 30s)' })
        .option('analyze', {
          type: 'boolean',
          description: 'run the claim under EXPLAIN ANALYZE, rolled back (default when this role may update jobs); --no-analyze: only plan it, through qmaint.explain_claim() (qmaint_readonly), judged by the plan-time rules',
        })
        .option('dry-run', { type: 'boolean', default: false, description: 'print the statements explain would run, run nothing' }),
    handler<ExplainArgs>(async (ctx, argv) => {
      const { values: settings } = ctx.settings({ batch: argv.batch, statementTimeout: argv.statementTimeout });
      const thresholds = resolveThresholds(parseThresholdSetting(settings.healthThresholds), parseThresholdFlags(argv.threshold));
      if (argv.dryRun) return dryRun(ctx, argv.queue, settings.batch, settings.leaseSeconds, settings.statementTimeout, argv.analyze !== false);
      const db = await ctx.migratedDb({ max: 2 });
      const report = await explainDequeue(db, {
        queue: argv.queue,
        batch: settings.batch,
        leaseSeconds: settings.leaseSeconds,
        statementTimeout: settings.statementTimeout,
        thresholds: thresholds.dequeue,
        analyze: argv.analyze,
      });
      const code = report.verdict === 'critical' ? ExitCode.critical : ExitCode.ok;
      ctx.out.emit({ ok: code === ExitCode.ok, ...report }, () => printReport(ctx.out, report, argv.plan));
      return code;
    }),
  );
};

function printReport(out: Output, report: DequeueReport, withPlan: boolean): void {
  if (withPlan) {
    for (const line of planTree(report.explain)) out.line(line);
    out.line();
  }
  out.line(
    `claim on queue '${report.queue}'${report.queueSource === 'given' ? '' : report.queueSource === 'oldest_due' ? ' (oldest due job)' : ' (no job is due)'}, ` +
      `batch ${report.batch}, low-water ${report.lowWater ?? '-infinity'}: ` +
      (report.analyzed ? `${report.claimed} job(s) would be claimed (rolled back)` : 'planned only, not run (plan-time rules only)'),
  );
  printRules(out, report.rules);
  const line = `dequeue verdict: ${out.verdict(report.verdict)}`;
  if (report.verdict === 'ok') out.ok(line);
  else if (report.verdict === 'warn') out.warn(line);
  else out.bad(line);
}

export function printRules(out: Output, rules: RuleResult[]): void {
  out.table(
    [
      { key: 'rule', header: 'rule' },
      { key: 'verdict', header: 'verdict', format: (v) => out.verdict(String(v)) },
      { key: 'observed', header: 'observed' },
      { key: 'threshold', header: 'threshold' },
    ],
    rules,
  );
  for (const rule of rules) {
    if (rule.recommendation) out.line(`${rule.verdict === 'critical' ? out.c.red('✖') : out.c.yellow('!')} ${rule.rule}: ${rule.recommendation}`);
  }
}

function dryRun(ctx: Context, queue: string | undefined, batch: number, leaseSeconds: number, statementTimeout: string, analyze: boolean): number {
  const claim = claimQuery({ queue: queue ?? '<queue of the oldest due job>', batch, leaseSeconds, workerId: 'qmaint-explain', lowWater: null });
  const explain = analyze ? `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${claim.text}` : `${EXPLAIN_CLAIM_SQL} -- $1 is the claim statement, which explain_claim() runs as EXPLAIN (FORMAT JSON, SUMMARY) ${claim.text}`;
  const statements = ['BEGIN', `SELECT set_config('statement_timeout', '${statementTimeout.replace(/'/g, "''")}', true)`, LOW_WATER_SQL, explain, 'ROLLBACK'];
  const values = analyze ? claim.values : ['<the claim statement>', claim.values[0], null, batch, 'qmaint-explain', leaseSeconds];
  const params = values.map((v, i) => ({ param: `$${i + 1}`, value: v === null || v === undefined ? null : String(v) }));
  const lockLevel = analyze
    ? 'ROW EXCLUSIVE on qmaint.jobs and row locks on the claimed jobs, released by the ROLLBACK'
    : 'ROW EXCLUSIVE on qmaint.jobs while it is planned (no row is locked), released by the ROLLBACK';
  ctx.out.emit({ ok: true, dryRun: true, analyze, statements, params, lockLevel }, () => {
    ctx.out.line(ctx.out.dim(`-- lock: ${lockLevel}`));
    for (const s of statements) ctx.out.line(s.trim().replace(/;?\s*$/, ';'));
    ctx.out.line(ctx.out.dim(`-- parameters: ${params.map((p) => `${p.param}=${p.value === null ? 'NULL' : p.value}`).join(' ')} ($2 is the low-water mark read above)`));
  });
  return ExitCode.ok;
}

export default register;
