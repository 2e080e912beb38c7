// defineQueue<TPayload>: a typed enqueue and a typed handler. The type
// checks below run under tsc (npm run lint typechecks the tests): every
// `@ts-expect-error` line must be an error, or tsc fails on the unused
// directive; expectTypeOf pins the types the handler sees.
import { describe, expect, expectTypeOf, it } from 'vitest';
import { Consumer, defineQueue, QmaintError, type Job, type QueueTasks, type TypedJob } from '../../src/index.js';
import { eventually, freshDatabase } from '../helpers.js';

const t = await freshDatabase();

interface Email {
  to: string;
  subject: string;
  attempts?: number;
}

const emails = defineQueue<Email>('typed-emails', { concurrency: 2 });
const reports = defineQueue<{ day: string }>('typed-reports');

describe('defineQueue', () => {
  it('types: enqueue takes only the payload type, the handler sees it', () => {
    expectTypeOf(emails.enqueue).parameter(1).toEqualTypeOf<Email>();
    expectTypeOf(emails.enqueue).returns.resolves.toEqualTypeOf<string>();
    const task = emails.task((job) => {
      expectTypeOf(job).toEqualTypeOf<TypedJob<Email>>();
      expectTypeOf(job.payload).toEqualTypeOf<Email>();
      expectTypeOf(job.payload.to).toBeString();
      expectTypeOf(job.signal).toEqualTypeOf<AbortSignal>();
      expectTypeOf(job).toMatchTypeOf<Omit<Job, 'payload'>>();
    });
    expectTypeOf(task).toMatchTypeOf<QueueTasks[string]>();
    // A tasks module's map, typed as the Consumer takes it.
    const tasks: QueueTasks = { [emails.name]: task, [reports.name]: reports.task((job) => job.payload.day.length) };
    expect(Object.keys(tasks)).toEqual(['typed-emails', 'typed-reports']);

    // Wrong payload shapes do not compile.
    const typeErrors = () => {
      // @ts-expect-error: subject is missing
      void emails.enqueue(t.db, { to: 'a@example.com' });
      // @ts-expect-error: to must be a string
      void emails.enqueue(t.db, { to: 42, subject: 'x' });
      // @ts-expect-error: the payload of another queue
      void emails.enqueue(t.db, { day: '2026-01-01' });
      // @ts-expect-error: enqueueMany takes Email payloads only
      void emails.enqueueMany(t.db, [{ day: '2026-01-01' }]);
      // @ts-expect-error: the handler reads a field Email does not have
      emails.task((job) => job.payload.day);
      // @ts-expect-error: a handler typed for another payload
      emails.task((job: TypedJob<{ day: string }>) => job.payload.day);
    };
    expect(typeof typeErrors).toBe('function');
  });

  it('enqueue and task run: a consumer of the typed tasks gets the payloads as enqueued', async () => {
    await emails.enqueue(t.db, { to: 'a@example.com', subject: 'one' });
    await emails.enqueueMany(t.db, [
      { to: 'b@example.com', subject: 'two' },
      { to: 'c@example.com', subject: 'three', attempts: 2 },
    ]);
    expect((await emails.enqueueKeyed(t.db, { to: 'd@example.com', subject: 'four' }, { key: 'd' })).outcome).toBe('inserted');
    await reports.enqueue(t.db, { day: '2026-12-02' });
    const got: string[] = [];
    const c = new Consumer(t.db, {
      queues: {
        [emails.name]: emails.task((job) => void got.push(`${job.queue}:${job.payload.to}`)),
        [reports.name]: reports.task((job) => void got.push(`${job.queue}:${job.payload.day}`)),
      },
      drain: true,
      listen: false,
    });
    await c.start();
    await c.done;
    expect(got.sort()).toEqual([
      'typed-emails:a@example.com',
      'typed-emails:b@example.com',
      'typed-emails:c@example.com',
      'typed-emails:d@example.com',
      'typed-reports:2026-12-02',
    ]);
    await eventually(() => c.stats.completed === 5);
  });

  it('refuses a bad name or concurrency, and a task under another queue’s key', () => {
    expect(() => defineQueue('')).toThrow(QmaintError);
    expect(() => defineQueue('q', { concurrency: 0 })).toThrow(/concurrency must be a whole number/);
    expect(emails.task(() => undefined)).toMatchObject({ queue: 'typed-emails', concurrency: 2 });
    expect(emails.task(() => undefined, { concurrency: 5 }).concurrency).toBe(5);
    expect(() => new Consumer(t.db, { queues: { [reports.name]: emails.task(() => undefined) } })).toThrow(/defined for queue typed-emails/);
  });
});
