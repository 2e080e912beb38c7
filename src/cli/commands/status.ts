import { queueStatus } from '../../queue/admin.js';
import { duration, timestamp } from '../format.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

const register: Register = (y) => {
  y.command(
    'status',
    'queue depth per queue and status, age of the oldest queued job, jobs per partition',
    (b) => b,
    handler(async (ctx) => {
      const db = await ctx.migratedReadDb({ max: 2 });
      const report = await queueStatus(db, ctx.now);
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
              { key: 'failed', header: 'failed', align: 'right', format: (v) => (Number(v) > 0 ? out.c.red(String(v)) : String(v)) },
              { key: 'cancelled', header: 'cancelled', align: 'right' },
              { key: 'oldest', header: 'oldest queued', align: 'right' },
            ],
            report.queues.map((q) => ({ queue: q.queue, ready: q.ready, ...q.counts, oldest: duration(q.oldestQueuedAgeSeconds) })),
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
          report.partitions.map((p) => ({ partition: p.partition, from: p.lowerBound, to: p.upperBound, ...p.counts })),
        );
        out.line(out.dim(`low-water mark: ${report.lowWater ?? 'none (every partition is searched)'}`));
      });
    }),
  );
};

export default register;
