import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quoteIdent } from '../../db.js';
import { embeddedHome } from '../../embedded.js';
import { QmaintError } from '../../errors.js';
import { handler, type Context } from '../context.js';
import { demoSteps } from '../demo/index.js';
import type { DemoContext } from '../demo/types.js';
import { invocation } from '../invocation.js';
import type { Register } from '../register.js';
import { qmaintCommand, shellLine } from '../shell.js';

const DEMO_DB = 'qmaint_demo';

const register: Register = (y) => {
  y.command(
    'demo',
    'a guided tour on a fresh database (the embedded server unless you configure one)',
    (b) =>
      b
        .option('keep', { type: 'boolean', default: false, description: `keep the ${DEMO_DB} database afterwards` })
        .option('dry-run', { type: 'boolean', default: false, description: 'list the steps, create nothing' }),
    handler<{ keep: boolean; dryRun: boolean }>(async (ctx, argv) => {
      const out = ctx.out;
      if (argv.dryRun) {
        out.emit({ ok: true, dryRun: true, database: DEMO_DB, steps: demoSteps.map((s) => s.title) }, () => {
          out.line(`The demo would create the database ${DEMO_DB} and walk through:`);
          demoSteps.forEach((s, i) => out.line(`  ${i + 1}. ${s.title}`));
        });
        return;
      }
      const server = await ctx.db();
      if (!server.url) {
        throw new QmaintError(
          'config',
          'the demo needs a connection URL to create its own database; pass --database-url or unset the PG* variables to use the embedded server',
        );
      }
      const version = (await server.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? '?';
      out.heading(
        `qmaint demo — PostgreSQL ${version} at ${server.target.host}:${server.target.port} (${server.source === 'embedded' ? 'the embedded default' : server.source})`,
      );
      out.line(`The demo works in its own database, ${DEMO_DB}, made fresh for this run.`);
      await server.query(`DROP DATABASE IF EXISTS ${quoteIdent(DEMO_DB)} WITH (FORCE)`);
      await server.query(`CREATE DATABASE ${quoteIdent(DEMO_DB)}`);
      const url = new URL(server.url);
      url.pathname = '/' + DEMO_DB;
      const { connect } = await import('../../db.js');
      const db = await connect({ databaseUrl: url.toString(), applicationName: 'qmaint-demo' });
      const scratch = mkdtempSync(path.join(os.tmpdir(), 'qmaint-demo-'));
      const results: { step: string; ok: boolean }[] = [];
      const commands: CapturedCommand[] = [];
      const prog = qmaintCommand();
      const d: DemoContext = {
        out,
        db,
        url: url.toString(),
        now: ctx.now,
        scratch,
        say: (text) => out.line(wrap(text, invocation().io.stdout.columns)),
        qmaint: async (args, options = {}) => {
          // Printed so it can be pasted into a shell; --verbose shows the argv that runs (the demo adds its database).
          if (!options.quiet) out.line(out.c.cyan(`$ ${prog} ${shellLine(args)}`));
          const inner = [...args, '--database-url', url.toString(), ...(argv.color ? [] : ['--no-color'])];
          out.debug(`demo runs argv ${JSON.stringify(inner)}`);
          const { stdout, stderr } = invocation().io;
          const code = out.json ? await captureJson(ctx, inner, commands) : (await ctx.run(inner, { stdout, stderr })).exitCode;
          const expected = options.expectExit ?? 0;
          if (code !== expected) throw new QmaintError('unexpected', `demo step "qmaint ${args.join(' ')}" exited ${code}, expected ${expected}`);
          out.line();
          return code;
        },
      };
      try {
        for (const [i, step] of demoSteps.entries()) {
          out.line();
          out.heading(`${i + 1}. ${step.title}`);
          await step.run(d);
          results.push({ step: step.title, ok: true });
        }
      } finally {
        await db.close();
        rmSync(scratch, { recursive: true, force: true });
        if (!argv.keep) await server.query(`DROP DATABASE IF EXISTS ${quoteIdent(DEMO_DB)} WITH (FORCE)`).catch(() => undefined);
      }
      out.line();
      out.ok(`demo finished: ${results.length} steps${argv.keep ? `; the database ${DEMO_DB} was kept` : ''}`);
      const embedded = server.source === 'embedded' ? { running: true, home: embeddedHome(), port: server.target.port, stop: `${prog} embedded stop` } : null;
      if (embedded) {
        out.line();
        out.line(`The embedded PostgreSQL is still running, on port ${embedded.port}, so the next`);
        out.line('command starts at once. It keeps its data in');
        out.line(`  ${embedded.home}`);
        out.line('and uses memory and a port until you stop it:');
        out.line(`  ${prog} embedded status    psql line, data and log`);
        out.line(`  ${embedded.stop}      stop it (the data stays)`);
      }
      if (out.json) out.emitJson({ ok: true, database: DEMO_DB, steps: results, commands, embedded });
    }),
  );
};

interface CapturedCommand {
  args: string[];
  exitCode: number;
  output: unknown;
}

/** Under --json the demo runs each command with --json and folds its document into its own. */
async function captureJson(ctx: Context, args: string[], into: CapturedCommand[]): Promise<number> {
  const result = await ctx.run([...args, '--json'], { stderr: invocation().io.stderr });
  const text = result.stdout.trim();
  let output: unknown = text;
  try {
    output = text ? JSON.parse(text) : null;
  } catch {
    /* keep the raw text */
  }
  into.push({ args: args.slice(0, args.indexOf('--database-url')), exitCode: result.exitCode, output });
  return result.exitCode;
}

export default register;

/** Narration fitted to a terminal of `columns` (broken between words); unchanged when not a terminal. */
function wrap(text: string, columns: number | undefined): string {
  if (!columns || text.length <= columns) return text;
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > columns) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line].join('\n');
}
