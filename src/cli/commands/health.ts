import { runHealth, type HealthReport } from '../../health/checks.js';
import { parseThresholdFlags, parseThresholdSetting, resolveThresholds } from '../../health/thresholds.js';
import { ExitCode } from '../exit.js';
import { checkQueueName } from '../../queue/enqueue.js';
import { handler } from '../context.js';
import type { Output } from '../output.js';
import type { Register } from '../register.js';

interface HealthArgs {
  strict: boolean;
  queue?: string;
  batch?: number;
  threshold: string[];
  statementTimeout?: string;
}

const register: Register = (y) => {
  y.command(
    'health',
    'run every health check; exit 4 on anything critical (and on warnings with --strict)',
    (b) =>
      b
        .option('strict', { type: 'boolean', default: false, description: 'treat warnings as critical (exit 4)' })
        .option('queue', { type: 'string', description: 'queue whose claim the dequeue check explains (default: the queue of the oldest due job)' })
        .option('batch', { type: 'number', description: 'jobs per claim for the dequeue check (default: the batch setting, 100)' })
        .option('threshold', { type: 'string', array: true, default: [], description: 'override a threshold: name=value (repeatable; see docs/health.md)' })
        .option('statement-timeout', { type: 'string', description: 'statement_timeout of the checks (default: the statementTimeout setting, 30s)' }),
    handler<HealthArgs>(async (ctx, argv) => {
      if (argv.queue !== undefined) checkQueueName(argv.queue);
      const { values: settings } = ctx.settings({ batch: argv.batch, statementTimeout: argv.statementTimeout });
      const thresholds = resolveThresholds(parseThresholdSetting(settings.healthThresholds), parseThresholdFlags(argv.threshold));
      const db = await ctx.migratedReadDb({ max: 2 });
      const report = await runHealth(db, {
        now: ctx.now,
        thresholds,
        statementTimeout: settings.statementTimeout,
        queue: argv.queue,
        batch: settings.batch,
        leaseSeconds: settings.leaseSeconds,
      });
      const failing = report.status === 'critical' || (argv.strict && report.status === 'warn');
      const code = failing ? ExitCode.critical : ExitCode.ok;
      ctx.out.emit({ ok: code === ExitCode.ok, strict: argv.strict, ...report }, () => printReport(ctx.out, report));
      return code;
    }),
  );
};

function printReport(out: Output, report: HealthReport): void {
  out.table(
    [
      { key: 'check', header: 'check' },
      { key: 'status', header: 'status', format: (v) => out.verdict(String(v)) },
      { key: 'observed', header: 'observed', wrap: true },
      { key: 'threshold', header: 'threshold', wrap: true, priority: 1 },
    ],
    report.checks,
  );
  for (const c of report.checks) {
    if (c.status !== 'ok') out.line(out.wrap(`${c.status === 'critical' ? out.c.red('✖') : out.c.yellow('!')} ${c.check}: ${c.message}`));
  }
  if (report.inRecovery) {
    out.line(
      `${out.c.yellow('!')} this server is a standby: dequeue needs the primary and was not run; ${report.needPrimary.filter((c) => c !== 'dequeue').join(', ')} describe this standby, not the primary`,
    );
  }
  // The last line is for monitoring: plain key=value pairs, never coloured.
  out.line(report.summaryLine);
}

export default register;
