import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Characters a POSIX shell takes literally anywhere in a word. */
const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * One argument written so a POSIX shell reads it back unchanged: plain words
 * as they are, anything else in single quotes (a single quote inside becomes
 * '\'' : close, escaped quote, reopen).
 */
export function shellQuote(arg: string): string {
  if (SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** A command line a POSIX shell splits back into exactly these arguments. */
export function shellLine(argv: string[]): string {
  return argv.map(shellQuote).join(' ');
}

/**
 * How to run qmaint from a shell here: `qmaint` when an executable of that
 * name is on PATH, otherwise `npx qmaint` (the package installed locally).
 * Started through npm (npx, npm exec, npm run: npm_command is set), the
 * node_modules/.bin directories on PATH are npm's, not the user's shell's.
 */
export function qmaintCommand(env: NodeJS.ProcessEnv = process.env): string {
  const npm = env.npm_command !== undefined;
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir || (npm && /(^|[\\/])node_modules[\\/]\.bin[\\/]?$/.test(dir))) continue;
    try {
      accessSync(path.join(dir, 'qmaint'), constants.X_OK);
      return 'qmaint';
    } catch {
      /* not here */
    }
  }
  return 'npx qmaint';
}
