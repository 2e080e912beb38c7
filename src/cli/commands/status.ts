import { queueStatus, type EstimatedFlags, type JobStatus } from '../../queue/admin.js';
import { duration, timestamp } from '../format.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

/** A count as the table shows it: "~" before an estimate. */
function figure(n: number, estimated: boolean): string {
  return `${estimated ? '~' : ''}${n}`;
}

/** The counts of a row, estimates marked. */
function figures(counts: Record<JobStatus, number>, estimated: EstimatedFlags): Record<JobStatus, string> {
  return {
    queued: figure(counts.queued, estimated.queued),
    running: figure(counts.running, estimated.running),
    completed: figure(counts.completed, estimated.completed),
    failed: figure(counts.failed, estimated.failed),
    cancelled: figure(counts.cancelled, estimated.cancelled),
  };
}

const register: Register = (y) => {
  y.command(
    'status',
    'queue depth per queue and status, age of the oldest queued job, jobs per partition',
    (b) =>
      b.option('exact', {
        type: 'boolean',
        default: false,
        description: 'count completed, failed and cancelled jobs exactly (reads the whole table) instead of estimating them',
      }),
    handler<{ exact: boolean }>(async (ctx, argv) => {
      const db = await ctx.migratedReadDb({ max: 2 });
      const report = await queueStatus(db, ctx.now, { exact: argv.exact });
      const out = ctx.out;
      out.emit({ ok: true, ...report }, () => {
        out.heading('Queues');
        if (report.queues.length === 0) out.line('no jobs yet');
        else
          out.table(
            [
              { key: 'queue', header: 'queue' },
              { key: 'ready', header: 'ready', align: 'right' },
              { key: 'queued', header: 'queued', align: 'right' },
              { key: 'running', header: 'running', align: 'right' },
              { key: 'completed', header: 'completed', align: 'right' },
              { key: 'failed', header: 'failed', align: 'right', format: (v) => (/[1-9]/.test(String(v)) ? out.c.red(String(v)) : String(v)) },
              { key: 'cancelled', header: 'cancelled', align: 'right' },
              { key: 'oldest', header: 'oldest queued', align: 'right' },
            ],
            report.queues.map((q) => ({ queue: q.queue, ready: q.ready, ...figures(q.counts, q.estimated), oldest: duration(q.oldestQueuedAgeSeconds) })),
          );
        out.line();
        out.heading('Partitions of qmaint.jobs');
        out.table(
          [
            { key: 'partition', header: 'partition' },
            { key: 'from', header: 'from (UTC)', wrap: true, format: (v) => timestamp(v as string | null) },
            { key: 'to', header: 'to (UTC)', wrap: true, priority: 1, format: (v) => timestamp(v as string | null) },
            { key: 'queued', header: 'queued', align: 'right' },
            { key: 'running', header: 'running', align: 'right' },
            { key: 'completed', header: 'completed', align: 'right' },
            { key: 'failed', header: 'failed', align: 'right' },
            { key: 'cancelled', header: 'cancelled', align: 'right' },
          ],
          report.partitions.map((p) => ({ partition: p.partition, from: p.lowerBound, to: p.upperBound, ...figures(p.counts, p.estimated) })),
        );
        out.line(out.dim(`low-water mark: ${report.lowWater ?? 'none (every partition is searched)'}`));
        const estimates = [...report.queues, ...report.partitions].some((r) => Object.values(r.estimated).some(Boolean));
        if (estimates)
          out.line(
            out.dim(
              out.wrap(
                '~ estimate from the statistics of each partition (rows less the live jobs, split by the sampled share of each status); queued and running are exact. --exact counts every row.',
              ),
            ),
          );
      });
    }),
  );
};

export default register;
