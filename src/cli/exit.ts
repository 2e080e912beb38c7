/**
 * Where library errors become CLI output: the exit code of each error code,
 * and the `--flag` each library option name is given as. The library names
 * options its own way (`limit`, `databaseUrl`); this is the one place that
 * knows their flags.
 */
import type { ErrorCode, QmaintError } from '../errors.js';

/** The CLI's exit codes (docs/cli.md). */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  badInput: 2,
  connection: 3,
  critical: 4,
  lockGaveUp: 5,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

const EXIT_FOR: Record<ErrorCode, ExitCodeValue> = {
  bad_input: ExitCode.badInput,
  config: ExitCode.badInput,
  migration: ExitCode.badInput,
  connection: ExitCode.connection,
  permission: ExitCode.connection,
  critical: ExitCode.critical,
  lock_timeout: ExitCode.lockGaveUp,
  unexpected: ExitCode.unexpected,
};

/** The exit code a library error ends a command with. */
export function exitCodeFor(error: QmaintError): ExitCodeValue {
  return EXIT_FOR[error.code];
}

/** The flag a library option name is given as on the command line: `databaseUrl` is `--database-url`. */
export function flagFor(option: string): string {
  return `--${option.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`;
}

/**
 * A text of the error (its message, a step of its details) as the CLI prints
 * it: each option the error names (by its library name, as a whole word)
 * becomes its flag.
 */
export function cliText(error: QmaintError, text: string): string {
  let out = text;
  for (const option of error.options) {
    const escaped = option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    out = out.replace(new RegExp(`(^|[^\\w.\\-"'])${escaped}(?![\\w"'-])`, 'g'), (_m, before: string) => `${before}${flagFor(option)}`);
  }
  return out;
}

/** The error's message as the CLI prints it (see cliText). */
export function cliMessage(error: QmaintError): string {
  return cliText(error, error.message);
}

/** The error's details for --json: texts in them (and in lists of them) name flags too (see cliText). */
export function cliDetails(error: QmaintError): Record<string, unknown> | undefined {
  if (!error.details || error.options.length === 0) return error.details;
  const text = (v: unknown): unknown => (typeof v === 'string' ? cliText(error, v) : v);
  return Object.fromEntries(Object.entries(error.details).map(([k, v]) => [k, Array.isArray(v) ? v.map(text) : text(v)]));
}
