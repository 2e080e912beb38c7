import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { runCommand } from '../../src/cli/main.js';
import { ROOT, freshDatabase } from '../helpers.js';

const schema = JSON.parse(readFileSync(path.join(ROOT, 'docs/json/cli-output.schema.json'), 'utf8')) as { $defs: Record<string, unknown> };
const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
ajv.addSchema(schema, 'cli');

function check(def: string, doc: unknown, what: string): void {
  expect(schema.$defs[def], `no $defs/${def}`).toBeDefined();
  const validate = ajv.getSchema(`cli#/$defs/${def}`)!;
  const valid = validate(doc);
  expect(valid ? [] : validate.errors, `${what} against $defs/${def}`).toEqual([]);
}

describe('--json output validates against docs/json/cli-output.schema.json', () => {
  it('every command: one document on stdout (NDJSON lines with --json-lines), matching its definition', async () => {
    const t = await freshDatabase();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qmaint-json-'));
    const handlerFile = path.join(dir, 'handler.mjs');
    writeFileSync(handlerFile, 'export default async (job) => { if (job.payload.fail) throw new Error("boom"); };\n');
    const tasksFile = path.join(dir, 'tasks.mjs');
    writeFileSync(tasksFile, 'export default { js: async () => {}, "js-b": { handler: async () => {}, concurrency: 2 } };\n');
    const db = ['--database-url', t.url];
    // A plain job table for adopt (and its revert).
    await t.db.query(
      `CREATE TABLE public.legacy_jobs (id bigserial, payload jsonb NOT NULL DEFAULT '{}', status text NOT NULL DEFAULT 'queued', retry_count int NOT NULL DEFAULT 0,
         created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at));
       INSERT INTO public.legacy_jobs (payload, status) VALUES ('{"n":1}', 'queued'), ('{"n":2}', 'completed')`,
    );
    const adoptArgs = ['adopt', '--table', 'public.legacy_jobs', '--column', 'created_at', '--interval', '1 day'];
    const cases: [string, string[], number[]?][] = [
      ['migrate', ['migrate']],
      ['enqueue', ['enqueue', '--queue', 'js', '--payload', '{"n":1}']],
      ['enqueue', ['enqueue', '--queue', 'js', '--payload', '{"fail":true}', '--max-retries', '0']],
      ['work', ['work', '--queue', 'js', '--handler', handlerFile, '--drain']],
      ['enqueue', ['enqueue', '--queue', 'js-b', '--payload', '{"n":1}']],
      ['work', ['work', '--tasks', tasksFile, '--drain']],
      ['status', ['status']],
      ['status', ['status', '--exact']],
      ['jobsList', ['jobs', 'list', '--status', 'queued']],
      ['jobsList', ['jobs', 'list']],
      ['jobsAction', ['jobs', 'retry', '--queue', 'js', '--dry-run']],
      ['jobsAction', ['jobs', 'retry', '--queue', 'js']],
      ['jobsAction', ['jobs', 'cancel', '--queue', 'js', '--dry-run']],
      ['jobsAction', ['jobs', 'cancel', '--queue', 'js']],
      ['partitionsList', ['partitions', 'list']],
      ['partitionsPlan', ['partitions', 'plan']],
      ['partitionsRun', ['partitions', 'rotate', '--dry-run']],
      ['partitionsRun', ['partitions', 'rotate']],
      ['vacuumStatus', ['vacuum', 'status']],
      ['vacuumTune', ['vacuum', 'tune', '--dry-run', '--sample', '0s']],
      ['vacuumTune', ['vacuum', 'tune', '--sample', '0s']],
      ['vacuumRun', ['vacuum', 'run', '--dry-run']],
      ['vacuumRun', ['vacuum', 'run']],
      ['explainDequeue', ['explain', 'dequeue'], [0, 4]],
      ['explainDryRun', ['explain', 'dequeue', '--dry-run']],
      ['explainDequeueQueues', ['explain', 'dequeue', '--queue', 'js', '--queue', 'js-b'], [0, 4]],
      ['explainDryRun', ['explain', 'dequeue', '--tasks', tasksFile, '--dry-run']],
      ['health', ['health'], [0, 4]],
      ['scheduleList', ['schedule', 'list']],
      ['scheduleInstall', ['schedule', 'install', '--pg-cron', '--dry-run']],
      [
        'scheduleRun',
        ['schedule', 'run', '--exit-after', '1500ms', '--rescue-cron', '* * * * * *', '--rotate-cron', 'off', '--vacuum-cron', 'off', '--health-cron', 'off'],
      ],
      ['ui', ['ui', '--port', '0', '--exit-after', '300ms']],
      ['config', ['config']],
      ['queuesDeadLetter', ['queues', 'dead-letter', 'dl', '--to', 'dl-dead', '--dry-run']],
      ['queuesDeadLetter', ['queues', 'dead-letter', 'dl', '--to', 'dl-dead']],
      ['enqueue', ['enqueue', '--queue', 'dl', '--payload', '{"fail":true}', '--max-retries', '0']],
      ['work', ['work', '--queue', 'dl', '--handler', handlerFile, '--drain']],
      ['queuesPause', ['queues', 'pause', 'dl', '--dry-run']],
      ['queuesPause', ['queues', 'pause', 'dl']],
      ['queuesList', ['queues', 'list']],
      ['queuesPause', ['queues', 'resume', 'dl', '--dry-run']],
      ['queuesPause', ['queues', 'resume', 'dl']],
      ['jobsRedrive', ['jobs', 'redrive', '--from', 'dl-dead', '--dry-run']],
      ['jobsRedrive', ['jobs', 'redrive', '--from', 'dl-dead']],
      ['queuesDeadLetter', ['queues', 'dead-letter', 'dl', '--clear']],
      ['cronAdd', ['cron', 'add', 'tick', '--schedule', '*/5 * * * *', '--queue', 'js', '--payload', '{"n":2}', '--dry-run']],
      ['cronAdd', ['cron', 'add', 'tick', '--schedule', '*/5 * * * *', '--queue', 'js', '--payload', '{"n":2}', '--missed', 'backfill:2']],
      ['cronList', ['cron', 'list']],
      ['cronRefill', ['cron', 'refill', '--dry-run']],
      ['cronRefill', ['cron', 'refill']],
      ['cronRemove', ['cron', 'remove', 'tick', '--dry-run']],
      ['cronRemove', ['cron', 'remove', 'tick']],
      ['adopt', [...adoptArgs, '--dry-run']],
      ['adopt', adoptArgs],
      ['adoptRevert', ['adopt', '--table', 'public.legacy_jobs', '--revert', '--dry-run']],
      ['adoptRevert', ['adopt', '--table', 'public.legacy_jobs', '--revert']],
      ['rolesInstall', ['roles', 'install', '--dry-run']],
      ['rolesInstall', ['roles', 'install']],
      ['error', ['jobs', 'list', '--status', 'weird'], [2]],
    ];
    const docs = new Map<string, unknown>();
    for (const [def, argv, codes = [0]] of cases) {
      const r = await runCommand([...argv, ...db, '--json']);
      expect(codes, `${argv.join(' ')}: ${r.stderr}`).toContain(r.exitCode);
      let doc: unknown;
      expect(
        () => {
          doc = JSON.parse(r.stdout) as unknown;
        },
        `${argv.join(' ')} printed one JSON document`,
      ).not.toThrow();
      check(def, doc, argv.join(' '));
      docs.set(argv.join(' '), doc);
    }
    // The documents above validated against the branch that means something: results, not empty lists.
    expect(docs.get('jobs redrive --from dl-dead')).toMatchObject({ count: 1 });
    const queues = (docs.get('queues list') as { queues: { queue: string }[] }).queues;
    expect(queues.find((q) => q.queue === 'dl')).toMatchObject({ paused: true, deadLetter: 'dl-dead' });
    expect(docs.get('cron list')).toMatchObject({ cron: [{ name: 'tick', payload: { n: 2 }, missed: 'backfill:2' }] });
    expect(docs.get(adoptArgs.join(' '))).toMatchObject({ dryRun: false, ran: true, table: 'public.legacy_jobs' });
    expect(docs.get('adopt --table public.legacy_jobs --revert')).toMatchObject({ dryRun: false, ran: true });
    // The streams: one JSON value per line.
    for (const [def, argv] of [
      ['jobsListLine', ['jobs', 'list', '--json-lines']],
      [
        'scheduleRunLine',
        [
          'schedule',
          'run',
          '--json-lines',
          '--exit-after',
          '1s',
          '--rescue-cron',
          '* * * * * *',
          '--rotate-cron',
          'off',
          '--vacuum-cron',
          'off',
          '--health-cron',
          'off',
        ],
      ],
    ] as const) {
      const r = await runCommand([...argv, ...db]);
      expect(r.exitCode, r.stderr).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.length).toBeGreaterThan(1);
      for (const line of lines) check(def, JSON.parse(line), argv.join(' '));
    }
  });

  it('a document that breaks a definition is refused (the schemas say something)', () => {
    const validate = ajv.getSchema('cli#/$defs/jobsList')!;
    expect(validate({ ok: true, jobs: [{ id: 1 }], next: null })).toBe(false);
    expect(ajv.getSchema('cli#/$defs/error')!({ ok: false, error: { code: 'x', exitCode: 9, message: 'm' } })).toBe(false);
  });
});
