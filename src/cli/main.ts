import { Readable } from 'node:stream';
import yargs from 'yargs';
import { badInput, QmaintError } from '../errors.js';
import { ExitCode, exitCodeFor } from './exit.js';
import { globalOptions, reportError, type GlobalArgs } from './context.js';
import { groups } from './commands/index.js';
import { addExamples, withExamples } from './examples.js';
import { asProcessInvocation, Capture, withInvocation, type CommandIO, type CommandResult, type Invocation } from './invocation.js';

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

/**
 * Run one qmaint command line as this process's only command, on its own
 * streams (bin/qmaint.js): as runCommand(), but the command's invocation is the
 * process's (asProcessInvocation), so no AsyncLocalStorage context is set up.
 * Resolves to the exit code; call it once per process.
 */
export function runMain(argv: string[]): Promise<number> {
  const inv: Invocation = { io: { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }, exitCode: ExitCode.ok, run: runCommand };
  return asProcessInvocation(inv, () => parse(argv, inv));
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
    .middleware((args) => refuseNonNumbers(args, argv), true)
    .fail((msg: string | undefined, err: Error | undefined) => {
      if (err) throw err;
      const text = msg ?? 'invalid usage';
      throw badInput(usageLine(/^Did you mean/.test(text) ? `unknown command ${JSON.stringify(argv[0] ?? '')}. ${text}` : text));
    });
  for (const register of groups) register(withExamples(parser));
  addExamples(parser, '');
  skipHelpRendering(parser);
  // Every global option once, under its own heading in every --help (yargs keeps global groups for subcommands).
  // getOptions() is yargs API its typings leave out; global options are the ones not local to a command.
  const options = (parser as unknown as { getOptions(): { key: Record<string, unknown>; local: string[] } }).getOptions();
  parser.group(
    Object.keys(options.key).filter((key) => !options.local.includes(key) && !/[A-Z]/.test(key)),
    'Global options:',
  );
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

/**
 * Before it runs a command's handler, yargs renders that command's whole help
 * text and keeps it, in case the handler calls showHelp(). No qmaint handler
 * does (bad input is one line, never the help), and the rendering took 10-15 ms
 * of every command, more than the database work of most. `--help` itself does
 * not go through this cache and is unchanged. getInternalMethods() is yargs
 * API its typings leave out.
 */
function skipHelpRendering(parser: unknown): void {
  const internal = parser as { getInternalMethods(): { getUsageInstance(): { cacheHelpMessage(): void } } };
  internal.getInternalMethods().getUsageInstance().cacheHelpMessage = () => undefined;
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

/**
 * yargs turns the text of a numeric flag that is no number into NaN (which
 * JSON prints as null). Refuse it here, for every numeric flag, quoting what
 * was typed.
 */
function refuseNonNumbers(args: Record<string, unknown>, argv: string[]): void {
  for (const [key, value] of Object.entries(args)) {
    if (key === '_' || key === '$0' || /[A-Z]/.test(key)) continue;
    const values = Array.isArray(value) ? (value as unknown[]) : [value];
    if (!values.some((v) => typeof v === 'number' && Number.isNaN(v))) continue;
    const flag = key.length === 1 ? `-${key}` : `--${key}`;
    const given = typedAfter(argv, flag);
    throw badInput(`${flag} must be a number, got ${given === undefined ? 'no value' : JSON.stringify(given)}; e.g. ${flag} 10`);
  }
}

/** The text given to a flag (`--flag TEXT` or `--flag=TEXT`); the first one that is no number. */
function typedAfter(argv: string[], flag: string): string | undefined {
  const given: string[] = [];
  argv.forEach((arg, i) => {
    if (arg === flag && i + 1 < argv.length) given.push(argv[i + 1]!);
    else if (arg.startsWith(flag + '=')) given.push(arg.slice(flag.length + 1));
  });
  return given.find((text) => Number.isNaN(Number(text))) ?? given[0];
}
