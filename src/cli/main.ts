import { Readable } from 'node:stream';
import yargs from 'yargs';
import { badInput, QmaintError } from '../errors.js';
import { ExitCode, exitCodeFor } from './exit.js';
import { globalOptions, reportError, type GlobalArgs } from './context.js';
import { groups } from './commands/index.js';
import { Capture, withInvocation, type CommandIO, type CommandResult, type Invocation } from './invocation.js';

const VERSION = '0.1.0';

/**
 * Run one qmaint command line in this process, as `qmaint ARGV` would, and
 * resolve to its exit code and output. Streams given in io receive the output
 * as it is written (the result then holds '' for them); streams left out are
 * captured and returned. Nothing here exits the process or touches
 * process.stdout unless io says so.
 */
export async function runCommand(argv: string[], io: Partial<CommandIO> = {}): Promise<CommandResult> {
  const stdout = io.stdout ?? new Capture();
  const stderr = io.stderr ?? new Capture();
  const inv: Invocation = { io: { stdout, stderr, stdin: io.stdin ?? emptyStdin() }, exitCode: ExitCode.ok, run: runCommand };
  const exitCode = await withInvocation(inv, () => parse(argv, inv));
  return { exitCode, stdout: stdout instanceof Capture ? stdout.text() : '', stderr: stderr instanceof Capture ? stderr.text() : '' };
}

async function parse(argv: string[], inv: Invocation): Promise<number> {
  const parser = globalOptions(yargs(argv))
    .scriptName('qmaint')
    .usage('$0 <command> [options]\n\nA PostgreSQL job queue that stays fast and healthy at any size.')
    .strict()
    .recommendCommands()
    .demandCommand(1, 'name a command; run qmaint --help to see them')
    .exitProcess(false)
    .version(VERSION)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, inv.io.stdout.columns || 100))
    .epilogue('Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 cannot connect, 4 critical finding, 5 gave up on a lock. See docs/cli.md.')
    .fail((msg: string | undefined, err: Error | undefined) => {
      if (err) throw err;
      const text = msg ?? 'invalid usage';
      throw badInput(usageLine(/^Did you mean/.test(text) ? `unknown command ${JSON.stringify(argv[0] ?? '')}. ${text}` : text));
    });
  for (const register of groups) register(parser);
  try {
    // With a callback yargs hands over what it would print (--help, --version) instead of printing it.
    await parser.parseAsync(argv, {}, (_err: unknown, _args: unknown, output: string) => {
      if (output) inv.io.stdout.write(output + '\n');
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const error = err instanceof QmaintError ? err : badInput(usageLine(message));
    reportError(error, peekGlobals(argv));
    return exitCodeFor(error);
  }
  return inv.exitCode;
}

function emptyStdin(): NodeJS.ReadableStream {
  return Readable.from([]);
}

function usageLine(msg: string): string {
  const text = msg.replace(/\s+/g, ' ').trim();
  return /--help/.test(text) ? text : `${text}; see qmaint --help`;
}

function peekGlobals(argv: string[]): Partial<GlobalArgs> {
  return { json: argv.includes('--json'), verbose: argv.includes('--verbose'), color: !argv.includes('--no-color') };
}
