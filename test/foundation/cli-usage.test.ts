import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXAMPLES } from '../../src/cli/examples.js';
import { runCommand } from '../../src/cli/main.js';
import { CLI, cleanEnv, freshDatabase, ROOT, runCli, shellWords } from '../helpers.js';

// The CLI as people use it: --help with examples that work, completion, messages that say what happened.
const t = await freshDatabase();
const work = mkdtempSync(path.join(os.tmpdir(), 'qmaint-usage-'));
const home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-usage-home-'));
const env = cleanEnv({ DATABASE_URL: t.url, QMAINT_HOME: home });

afterAll(async () => {
  await runCli(['embedded', 'stop'], { env });
  rmSync(work, { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
});

/** --help output, in this process (no database is touched; spawning 50 processes is slow on a busy machine). */
async function help(args: string[]): Promise<string> {
  const r = await runCommand([...args, '--help']);
  expect(r.exitCode, args.join(' ')).toBe(0);
  return r.stdout;
}

/** The command paths --help lists: top-level commands, and the subcommands of each group. */
async function commandPaths(): Promise<string[]> {
  // The names in the Commands: section (yargs lists `qmaint PATH NAME [args]`, one per line).
  const listed = (help: string, prefix: string) => {
    const section = help.split('\nCommands:\n')[1]?.split('\n\n')[0] ?? '';
    return [...section.matchAll(new RegExp(`^  qmaint ${prefix}([a-z][a-z-]*)`, 'gm'))].map((m) => prefix + m[1]!);
  };
  const paths: string[] = [];
  for (const top of listed(await help([]), '')) {
    paths.push(top);
    paths.push(...listed(await help([top]), `${top} `));
  }
  return paths;
}

/** The example command lines a --help output shows. */
function examplesIn(help: string): string[] {
  const section = help.split('\nExamples:\n')[1] ?? '';
  return section
    .split('\n')
    .filter((line) => line.startsWith('  qmaint '))
    .map((line) => line.trim());
}

// What the examples name: jobs 41-43, two past partitions, files in the working directory, a login role, a table to adopt.
async function seed(commandPath: string): Promise<void> {
  if (commandPath === 'jobs retry' || commandPath === 'jobs list' || commandPath === '') {
    await t.db.query(`DELETE FROM qmaint.jobs WHERE id IN (41, 42, 43)`);
    await t.db.query(
      `INSERT INTO qmaint.jobs (id, queue, payload, status, last_error) VALUES
         (41, 'emails', '{"to":"a@example.com"}', 'failed', 'mailbox full'),
         (42, 'emails', '{"to":"b@example.com"}', 'failed', 'mailbox full'),
         (43, 'reports', '{}', 'queued', NULL)`,
    );
  }
  if (commandPath === 'adopt') {
    await t.db.query(
      `CREATE TABLE IF NOT EXISTS public.legacy_jobs (
         id bigserial, payload jsonb NOT NULL, status text NOT NULL DEFAULT 'queued', retry_count int NOT NULL DEFAULT 0,
         created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at))`,
    );
    await t.db.query(`INSERT INTO public.legacy_jobs (payload, created_at) SELECT '{}', now() - g * interval '1 hour' FROM generate_series(1, 50) g`);
  }
  if (commandPath === 'jobs cancel') await t.db.query(`UPDATE qmaint.jobs SET status = 'queued' WHERE id = 43`);
  if (commandPath === 'partitions detach' || commandPath === 'vacuum run') {
    for (const day of ['2026-01-01', '2026-01-02']) await t.db.query(`SELECT qmaint.ensure_partition('qmaint.jobs', $1::timestamptz)`, [day]);
  }
}

describe('--help', () => {
  it('every command and subcommand has 2-4 examples, shown in its --help on lines of their own', async () => {
    const paths = await commandPaths();
    expect(paths).toEqual(expect.arrayContaining(['jobs retry', 'partitions apply', 'schedule daemon', 'embedded', 'completion']));
    expect(paths.sort()).toEqual(
      Object.keys(EXAMPLES)
        .filter((p) => p !== '')
        .sort(),
    );
    for (const p of ['', ...paths]) {
      const examples = EXAMPLES[p]!;
      expect(examples.length, p).toBeGreaterThanOrEqual(2);
      expect(examples.length, p).toBeLessThanOrEqual(4);
      expect(examplesIn(await help(p.split(' ').filter(Boolean))), p).toEqual(examples.map(([command]) => command));
    }
  });

  it('global options appear once, under their own heading; arguments are described', async () => {
    const retry = await help(['jobs', 'retry']);
    expect(retry.match(/--database-url/g)).toHaveLength(1);
    const global = retry.split('Global options:\n')[1]!.split('\n\n')[0]!;
    for (const flag of ['--database-url', '--json', '--verbose', '--color', '--now', '--help']) expect(global).toContain(flag);
    const own = retry.split('\nOptions:\n')[1]!.split('\n\n')[0]!;
    expect(own).not.toContain('--json');
    expect(retry.indexOf('\nOptions:\n'), "the command's own options come first").toBeLessThan(retry.indexOf('\nGlobal options:\n'));
    expect(retry).toMatch(/ids +failed jobs to retry/);
    expect(own).toMatch(/--queue +only jobs of this queue/);
    expect(await help(['partitions', 'apply'])).toMatch(/files +policy files/);
  });

  it('every example parses as a shell command line, runs against a test database, and exits 0', async () => {
    writeFileSync(path.join(work, 'send-email.mjs'), `export default async (job) => { if (job.payload.bounce) throw new Error('mailbox full'); };\n`);
    writeFileSync(path.join(work, 'report.mjs'), `export default async (job) => { await job.client.query('SELECT 1'); };\n`);
    writeFileSync(path.join(work, 'tasks.mjs'), `export default { emails: async () => {}, reports: { handler: async () => {}, concurrency: 2 } };\n`);
    writeFileSync(path.join(work, 'emails.ndjson'), '{"to":"x@example.com"}\n{"to":"y@example.com"}\n');
    mkdirSync(path.join(work, 'partitions'));
    copyFileSync(path.join(ROOT, 'partitions', 'jobs.json'), path.join(work, 'partitions', 'jobs.json'));
    copyFileSync(path.join(ROOT, 'partitions', 'policy.schema.json'), path.join(work, 'partitions', 'policy.schema.json'));
    await t.db.query(`DO $$ BEGIN CREATE ROLE app_worker LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    const done = new Set<string>();
    for (const [commandPath, examples] of Object.entries(EXAMPLES)) {
      await seed(commandPath);
      for (const [command] of examples) {
        if (done.has(command)) continue;
        done.add(command);
        expect(command.length, command).toBeLessThanOrEqual(96);
        const words = shellWords(command, work);
        expect(words[0], command).toBe('qmaint');
        // --until is a date, which passes: pin the clock of those examples to one before it.
        const clock = command.includes('--until') ? ['--now', '2026-12-01T00:00:00Z'] : [];
        let r = await runCli([...words.slice(1), ...clock], { env, cwd: work, timeoutMs: 300_000 });
        // On a pg_cron server, pg_cron's job table is shared: while another test file has its
        // qmaint-* jobs installed for its own database, install refuses to take them over. Wait for it.
        for (let i = 0; i < 30 && r.code === 2 && /already runs in database/.test(r.stderr); i++) {
          await new Promise((resolve) => setTimeout(resolve, 2000));
          r = await runCli([...words.slice(1), ...clock], { env, cwd: work, timeoutMs: 300_000 });
        }
        expect(r.code, `${command}\n${r.stderr}\n${r.stdout.slice(-3000)}`).toBe(0);
      }
    }
    // They did what they say: the failed jobs went back, 43 was cancelled, the day was detached and dropped.
    const { rows } = await t.db.query<{ id: string; status: string }>(`SELECT id::text, status FROM qmaint.jobs WHERE id IN (41, 42, 43) ORDER BY id`);
    expect(rows.find((r) => r.id === '43')?.status).toBe('cancelled');
    const gone = await t.db.query(`SELECT 1 FROM pg_class WHERE oid = to_regclass('qmaint.jobs_p20260101')`);
    expect(gone.rowCount).toBe(0);
  }, 900_000);
});

describe('completion', () => {
  it('prints a script for bash, zsh and fish; the bash one completes subcommands', async () => {
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await runCli(['completion', shell]);
      expect(r.code, shell).toBe(0);
      expect(r.stdout, shell).toContain(`SHELL=${shell} qmaint --get-yargs-completions`);
    }
    expect((await runCli(['completion', 'zsh'])).stdout).toMatch(/^#compdef qmaint/);
    expect((await runCli(['completion', 'fish'])).stdout).toMatch(/complete -c qmaint -f -a '\(__qmaint_complete\)'/);
    expect((await runCli(['completion', 'ksh'])).code).toBe(2);
    // Run the bash script for real, with qmaint on PATH.
    const bin = mkdtempSync(path.join(os.tmpdir(), 'qmaint-bin-'));
    try {
      writeFileSync(path.join(bin, 'qmaint'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 });
      writeFileSync(path.join(bin, 'completion.bash'), (await runCli(['completion', 'bash'])).stdout);
      const complete = (words: string) =>
        spawnSync(
          'bash',
          [
            '-c',
            `source completion.bash; COMP_WORDS=(${words}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); _qmaint_completions; printf '%s\\n' "\${COMPREPLY[@]}"`,
          ],
          {
            cwd: bin,
            env: { ...cleanEnv(), PATH: `${bin}:${process.env.PATH}` },
            encoding: 'utf8',
          },
        )
          .stdout.split('\n')
          .filter(Boolean);
      expect(complete(`qmaint jobs re`).sort()).toEqual(['redrive', 'retry']);
      expect(complete(`qmaint sched`)).toEqual(['schedule']);
      expect(complete(`qmaint jobs list --sta`)).toEqual(['--status']);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('messages', () => {
  it('a numeric flag given text quotes what was typed, for every numeric flag', async () => {
    for (const [args, flag] of [
      [['work', '--queue', 'q', '--handler', 'h.mjs', '--concurrency', 'abc'], '--concurrency'],
      [['work', '--queue', 'q', '--handler', 'h.mjs', '--batch=ten'], '--batch'],
      [['enqueue', '--queue', 'q', '--payload', '{}', '--priority', 'high'], '--priority'],
      [['jobs', 'list', '--limit', 'lots'], '--limit'],
      [['partitions', 'create', '--until', '2040-01-01', '--max', 'many'], '--max'],
      [['schedule', 'list', '--limit', '5x'], '--limit'],
    ] as const) {
      const r = await runCli([...args], { env });
      expect(r.code, args.join(' ')).toBe(2);
      const given = args[args.length - 1]!.replace(/^--batch=/, '');
      expect(r.stderr.trim(), args.join(' ')).toBe(`error: ${flag} must be a number, got "${given}"; e.g. ${flag} 10`);
    }
  });

  it('work says which failed jobs will retry and which failed for good', async () => {
    const handler = path.join(work, 'bounce.mjs');
    writeFileSync(handler, `export default async () => { throw new Error('mailbox full'); };\n`);
    const enqueue = await runCli(['enqueue', '--queue', 'bounces', '--payload', '{}', '--max-retries', '1'], { env });
    expect(enqueue.code, enqueue.stderr).toBe(0);
    const first = await runCli(['work', '--queue', 'bounces', '--handler', handler, '--drain'], { env });
    expect(first.code, first.stderr).toBe(0);
    // The first attempt always goes back for a retry; whether the second (due a second later) ran in the same drain is timing.
    const counts = /0 completed, (\d+) will retry, (\d+) failed for good/.exec(first.stdout);
    expect(counts, first.stdout).not.toBeNull();
    const status = async () => (await t.db.query<{ status: string }>(`SELECT status FROM qmaint.jobs WHERE queue = 'bounces'`)).rows[0]!.status;
    expect(Number(counts![1])).toBe(1);
    expect(Number(counts![2])).toBe((await status()) === 'failed' ? 1 : 0);
    if ((await status()) !== 'failed') {
      await t.db.query(`UPDATE qmaint.jobs SET run_at = now() WHERE queue = 'bounces'`);
      const second = await runCli(['work', '--queue', 'bounces', '--handler', handler, '--drain', '--json'], { env });
      expect(second.json()).toMatchObject({ failed: 1, willRetry: 0, failedForGood: 1 });
    }
    expect(await status()).toBe('failed');
  });

  it('the daemon says a health run succeeded and, separately, what its checks found', async () => {
    const r = await runCli(
      ['schedule', 'daemon', '--health-cron', '* * * * * *', '--rescue-cron', 'off', '--rotate-cron', 'off', '--vacuum-cron', 'off', '--exit-after', '2.5'],
      {
        env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.includes(' health ran in '));
    expect(line).toMatch(/health ran in \d+ ms \(run ok\); (all \d+ checks ok|\d+ checks? (critical|warning): [a-z_]+)/);
    expect(r.stdout).not.toMatch(/health ok in \d+ ms: /);
  });
});

describe('command shapes', () => {
  it('jobs subcommands take ids as arguments or as --id, alike', async () => {
    await seed('jobs list');
    const positional = await runCli(['jobs', 'list', '41', '42', '--json'], { env });
    const flagged = await runCli(['jobs', 'list', '--id', '41', '--id', '42', '--json'], { env });
    expect(positional.code, positional.stderr).toBe(0);
    expect(
      positional
        .json<{ jobs: { id: string }[] }>()
        .jobs.map((j) => j.id)
        .sort(),
    ).toEqual(['41', '42']);
    expect(flagged.stdout).toBe(positional.stdout);
    const retry = await runCli(['jobs', 'retry', '--id', '41', '--json'], { env });
    expect(retry.json()).toMatchObject({ count: 1, ids: ['41'] });
    const cancel = await runCli(['jobs', 'cancel', '43', '--id', '41', '--json'], { env });
    expect(cancel.json<{ ids: string[] }>().ids.sort()).toEqual(['41', '43']);
  });

  it('schedule daemon is the daemon; schedule run still works as its old name', async () => {
    for (const name of ['daemon', 'run']) {
      const r = await runCli(['schedule', name, '--rescue-cron', '* * * * * *', '--exit-after', '1s', '--json-lines'], { env });
      expect(r.code, name + r.stderr).toBe(0);
      expect(r.stdout, name).toMatch(/"event":"(started|leader|run)"/);
    }
  });
});
