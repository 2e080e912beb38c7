import { readFileSync } from 'node:fs';
import {
  explainClaimSql,
  explainDequeue,
  explainLockLevel,
  explainSqlStatements,
  explainStatements,
  type DequeueReport,
  type ExplainOptions,
  type SqlClaimReport,
} from '../../health/explain.js';
import { isInRecovery } from '../../health/checks.js';
import { planTree, worstVerdict, type RuleResult } from '../../health/plan.js';
import { parseThresholdFlags, parseThresholdSetting, resolveThresholds } from '../../health/thresholds.js';
import { badInput } from '../../errors.js';
import { ExitCode } from '../exit.js';
import { parseQualifiedName } from '../../db.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { handler, type Context } from '../context.js';
import { loadTasks } from '../modules.js';
import type { Output } from '../output.js';
import type { Register } from '../register.js';

interface ExplainArgs {
  target: 'dequeue';
  queue?: string[];
  tasks?: string;
  batch?: number;
  plan: boolean;
  threshold: string[];
  statementTimeout?: string;
  dryRun: boolean;
  analyze?: boolean;
  sql?: string;
  table?: string;
}

const register: Register = (y) => {
  y.command(
    'explain <target>',
    'EXPLAIN ANALYZE the claim query (rolled back) and judge the plan; --no-analyze: plan only',
    (b) =>
      b
        .positional('target', { choices: ['dequeue'] as const, description: "what to explain: dequeue, the consumer's claim statement" })
        .option('queue', {
          type: 'string',
          array: true,
          description: 'queue to claim from (default: the queue of the oldest due job, else "default"); repeat it for a worker of several queues',
        })
        .option('tasks', { type: 'string', description: "the queues of a tasks module (qmaint work --tasks): each queue's claim is explained and judged" })
        .option('batch', { type: 'number', description: 'jobs per claim (default: the batch setting, 100)' })
        .option('plan', { type: 'boolean', default: false, description: 'print the plan tree' })
        .option('threshold', { type: 'string', array: true, default: [], description: 'override a threshold: name=value (repeatable; see docs/health.md)' })
        .option('statement-timeout', { type: 'string', description: 'statement_timeout of the explain (default: the statementTimeout setting, 30s)' })
        .option('analyze', {
          type: 'boolean',
          description:
            'run the claim under EXPLAIN ANALYZE, rolled back (default when this role may update jobs); --no-analyze: only plan it, through qmaint.explain_claim() (qmaint_readonly), judged by the plan-time rules',
        })
        .option('sql', { type: 'string', description: "judge your own claim statement from this file (one statement, literal values) instead of qmaint's" })
        .option('table', { type: 'string', description: 'with --sql: the managed table it claims from (schema.table, with a partition policy)' })
        .option('dry-run', { type: 'boolean', default: false, description: 'print the statements explain would run, run nothing' }),
    handler<ExplainArgs>(async (ctx, argv) => {
      if (argv.tasks !== undefined && argv.queue !== undefined) throw badInput('give either --queue or --tasks, not both');
      for (const queue of argv.queue ?? []) checkQueueName(queue);
      const queues = argv.tasks !== undefined ? Object.keys((await loadTasks(argv.tasks)).tasks) : [...new Set(argv.queue ?? [])];
      if (queues.length > 1 && argv.sql !== undefined) throw badInput('--sql judges one statement of your own; leave out --tasks and the extra --queue');
      const { values: settings } = ctx.settings({ batch: argv.batch, statementTimeout: argv.statementTimeout });
      const thresholds = resolveThresholds(parseThresholdSetting(settings.healthThresholds), parseThresholdFlags(argv.threshold));
      const options: ExplainOptions = {
        queue: queues[0],
        batch: settings.batch,
        leaseSeconds: settings.leaseSeconds,
        statementTimeout: settings.statementTimeout,
        thresholds: thresholds.dequeue,
        analyze: argv.analyze,
      };
      if (argv.sql !== undefined) return ownClaim(ctx, argv, options);
      const each = queues.length > 1 ? queues.map((queue) => ({ ...options, queue })) : [options];
      if (argv.dryRun) return dryRun(ctx, each);
      const db = await ctx.migratedDb({ max: 2 });
      if (await isInRecovery(db)) {
        throw badInput(
          `explain dequeue plans the claim, which runs on the primary only, and ${db.target.host}:${db.target.port} is a standby (in recovery); point --database-url at the primary, or list every node with target_session_attrs=read-write`,
        );
      }
      if (each.length === 1) {
        const report = await explainDequeue(db, options);
        const code = report.verdict === 'critical' ? ExitCode.critical : ExitCode.ok;
        ctx.out.emit({ ok: code === ExitCode.ok, ...report }, () => printReport(ctx.out, report, argv.plan));
        return code;
      }
      // A worker of several queues claims from one queue per statement (the rotation): each of those claims is judged, the worst verdict wins.
      const claims: DequeueReport[] = [];
      for (const one of each) claims.push(await explainDequeue(db, one));
      const verdict = worstVerdict(claims.map((c) => c.verdict));
      const code = verdict === 'critical' ? ExitCode.critical : ExitCode.ok;
      ctx.out.emit({ ok: code === ExitCode.ok, queues, verdict, claims }, () => {
        for (const report of claims) {
          printReport(ctx.out, report, argv.plan);
          ctx.out.line();
        }
        const line = `dequeue verdict over ${claims.length} queues (one claim statement per queue): ${ctx.out.verdict(verdict)}`;
        if (verdict === 'ok') ctx.out.ok(line);
        else if (verdict === 'warn') ctx.out.warn(line);
        else ctx.out.bad(line);
      });
      return code;
    }),
  );
};

function printReport(out: Output, report: DequeueReport, withPlan: boolean): void {
  if (withPlan) {
    for (const line of planTree(report.explain)) out.line(out.wrap(line, ' '.repeat(line.search(/\S|$/) + 5)));
    out.line();
  }
  out.wrapped(
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
      { key: 'observed', header: 'observed', wrap: true },
      { key: 'threshold', header: 'threshold', wrap: true, priority: 1 },
    ],
    rules,
  );
  for (const rule of rules) {
    if (rule.recommendation) out.line(out.wrap(`${rule.verdict === 'critical' ? out.c.red('✖') : out.c.yellow('!')} ${rule.rule}: ${rule.recommendation}`));
  }
}

/** `--sql FILE --table T`: judge the user's own claim statement on a managed table. */
async function ownClaim(ctx: Context, argv: ExplainArgs, base: ExplainOptions): Promise<number> {
  if (argv.table === undefined) throw badInput('--sql needs --table schema.table: the managed table the statement claims from');
  const table = parseQualifiedName(argv.table, '--table').text;
  let sql: string;
  try {
    sql = readFileSync(argv.sql!, 'utf8');
  } catch (err) {
    throw badInput(`--sql ${argv.sql}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const options = { sql, table, statementTimeout: base.statementTimeout, thresholds: base.thresholds, analyze: argv.analyze };
  if (argv.dryRun) {
    const statements = explainSqlStatements(options).map((st) => ({
      purpose: st.purpose,
      sql: st.sql,
      params: st.values.map((v) => (v === null ? null : String(v))),
    }));
    ctx.out.emit({ ok: true, dryRun: true, statements }, () => {
      for (const st of statements) {
        ctx.out.line(ctx.out.dim(`-- ${st.purpose}${st.params.length > 0 ? `: ${st.params.map((p, i) => `$${i + 1}=${p}`).join(' ')}` : ''}`));
        ctx.out.line(st.sql.trim().replace(/;?\s*$/, ';'));
      }
    });
    return ExitCode.ok;
  }
  const db = await ctx.migratedDb({ max: 2 });
  const report: SqlClaimReport = await explainClaimSql(db, options);
  const code = report.verdict === 'critical' ? ExitCode.critical : ExitCode.ok;
  ctx.out.emit({ ok: code === ExitCode.ok, ...report }, () => {
    if (argv.plan) for (const line of planTree(report.explain)) ctx.out.line(line);
    ctx.out.line(
      `your claim on ${report.table}: ${report.analyzed ? `${report.claimed} row(s) would be claimed (rolled back)` : 'planned only, not run (plan-time rules only)'}`,
    );
    printRules(ctx.out, report.rules);
    const line = `dequeue verdict: ${ctx.out.verdict(report.verdict)}`;
    if (report.verdict === 'ok') ctx.out.ok(line);
    else if (report.verdict === 'warn') ctx.out.warn(line);
    else ctx.out.bad(line);
  });
  return code;
}

/** The statements explainDequeue would run, as the library lists them (one explain after the other for several queues). */
function dryRun(ctx: Context, each: ExplainOptions[]): number {
  const options = each[0]!;
  const statements = each
    .flatMap((one) => explainStatements(one))
    .map((st) => ({
      purpose: st.purpose,
      sql: st.sql,
      params: st.values.map((v) => (v === null ? null : String(v))),
    }));
  const lockLevel = explainLockLevel(options.analyze !== false);
  ctx.out.emit({ ok: true, dryRun: true, analyze: options.analyze !== false, statements, lockLevel }, () => {
    ctx.out.line(ctx.out.dim(`-- lock: ${lockLevel}`));
    for (const st of statements) {
      ctx.out.line(
        ctx.out.dim(`-- ${st.purpose}${st.params.length > 0 ? `: ${st.params.map((p, i) => `$${i + 1}=${p === null ? 'NULL' : p}`).join(' ')}` : ''}`),
      );
      ctx.out.line(st.sql.trim().replace(/;?\s*$/, ';'));
    }
  });
  return ExitCode.ok;
}

export default register;
