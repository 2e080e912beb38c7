import yargs from 'yargs';
import { badInput, ExitCode, QmaintError } from '../errors.js';
import { exitState, globalOptions, reportError, type GlobalArgs } from './context.js';
import { groups } from './commands/index.js';

const VERSION = '0.1.0';

/** Run the CLI with these arguments; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  exitState.code = ExitCode.ok;
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
    .wrap(Math.min(110, process.stdout.columns || 100))
    .epilogue('Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 cannot connect, 4 critical finding, 5 gave up on a lock. See docs/cli.md.')
    .fail((msg: string | undefined, err: Error | undefined) => {
      if (err) throw err;
      const text = msg ?? 'invalid usage';
      throw badInput(usageLine(/^Did you mean/.test(text) ? `unknown command ${JSON.stringify(argv[0] ?? '')}. ${text}` : text));
    });
  for (const register of groups) register(parser);
  try {
    await parser.parseAsync();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const error = err instanceof QmaintError ? err : badInput(usageLine(message));
    reportError(error, peekGlobals(argv));
    return error.exitCode;
  }
  return exitState.code;
}

function usageLine(msg: string): string {
  const text = msg.replace(/\s+/g, ' ').trim();
  return /--help/.test(text) ? text : `${text}; see qmaint --help`;
}

function peekGlobals(argv: string[]): Partial<GlobalArgs> {
  return { json: argv.includes('--json'), verbose: argv.includes('--verbose'), color: !argv.includes('--no-color') };
}
