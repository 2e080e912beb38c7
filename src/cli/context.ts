import type { Argv } from 'yargs';
import { checkConnectionUrl, loadSettings, redactDeep, redactSecrets, type LoadedSettings, type SettingKey } from '../config.js';
import { connect, type Db } from '../db.js';
import { badInput, toQmaintError } from '../errors.js';
import { cliDetails, cliMessage, ExitCode, exitCodeFor } from './exit.js';
import { requireMigrated } from '../migrate.js';
import { invocation, type CommandIO, type CommandResult } from './invocation.js';
import { Output } from './output.js';

/** Flags every command accepts. */
export interface GlobalArgs {
  databaseUrl?: string;
  readUrl?: string;
  json: boolean;
  verbose: boolean;
  color: boolean;
  wide?: boolean;
  now?: string;
}

export function globalOptions<T>(y: Argv<T>) {
  return y
    .option('database-url', {
      type: 'string',
      description: 'PostgreSQL URL (default: DATABASE_URL, then PG* variables, then the embedded server)',
      global: true,
    })
    .option('read-url', {
      type: 'string',
      description:
        'PostgreSQL URL for the read-only commands (status, jobs list, partitions list, vacuum status, health), e.g. a standby (default: QMAINT_READ_URL, then the database URL)',
      global: true,
    })
    .option('json', { type: 'boolean', default: false, description: 'print one JSON document on stdout', global: true })
    .option('verbose', { type: 'boolean', default: false, description: 'show stack traces and debug lines', global: true })
    .option('color', { type: 'boolean', default: true, description: 'colour output (--no-color to disable; NO_COLOR is honoured)', global: true })
    .option('wide', { type: 'boolean', default: false, description: 'tables at full width: every column, nothing wrapped or cut', global: true })
    .option('now', { type: 'string', description: 'pretend the time is this ISO timestamp (planning, tests)', global: true });
}

/** Parse --now (or the real clock). Bad input exits 2. */
export function parseNow(value: string | undefined): Date {
  return value === undefined ? new Date() : parseTimestamp(value, '--now');
}

const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * A strict ISO 8601 timestamp: YYYY-MM-DD, optionally THH:MM[:SS[.mmm]] and an
 * offset (Z or +HH:MM). A time without an offset is UTC; a date alone is its
 * midnight UTC. A date or time that does not exist (2026-02-30, 24:00) is
 * refused rather than rolled over. Bad input exits 2, naming `flag`.
 */
export function parseTimestamp(value: string, flag: string): Date {
  const fail = (why: string) => badInput(`${flag} ${JSON.stringify(value)} ${why}; use e.g. 2026-01-31T12:00:00Z (a time without an offset is UTC)`);
  const m = TIMESTAMP.exec(value.trim());
  if (!m) throw fail('is not an ISO timestamp');
  const [year, month, day, hour = 0, minute = 0, second = 0] = m.slice(1, 7).map((v) => (v === undefined ? undefined : Number(v))) as number[];
  const ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0'));
  if (year! < 1) throw fail('is before year 1');
  if (month! < 1 || month! > 12) throw fail(`has no month ${month}`);
  const monthDays = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeap(year!) ? 1 : 0);
  if (day! < 1 || day! > monthDays) throw fail(`is not a date: ${String(month).padStart(2, '0')}/${year} has ${monthDays} days`);
  if (hour > 23 || minute > 59 || second > 59) throw fail('is not a time of day (hours 00-23, minutes and seconds 00-59)');
  let offsetMinutes = 0;
  const zone = m[8];
  if (zone !== undefined && zone.toUpperCase() !== 'Z') {
    const [, sign, hh, mm] = /^([+-])(\d{2}):?(\d{2})$/.exec(zone)!;
    if (Number(hh) > 23 || Number(mm) > 59) throw fail(`has no offset ${zone}`);
    offsetMinutes = (sign === '-' ? -1 : 1) * (Number(hh) * 60 + Number(mm));
  }
  const date = new Date(0);
  date.setUTCFullYear(year!, month! - 1, day);
  date.setUTCHours(hour, minute - offsetMinutes, second, ms);
  return date;
}

function isLeap(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/** What a command handler gets: parsed globals, output, lazy database, settings. */
export class Context {
  readonly out: Output;
  readonly args: GlobalArgs;
  readonly now: Date;
  /** True when --now was given (time travel): callers pass it to SQL explicitly. */
  readonly nowGiven: boolean;
  private dbPromise: Promise<Db> | undefined;
  private warned = false;
  private readDbPromise: Promise<Db> | undefined;
  /** The schema check of each database, once per command however many times the command asks. */
  private readonly schemaChecks = new Map<Db, Promise<void>>();

  constructor(args: GlobalArgs) {
    this.args = args;
    this.out = new Output({ json: args.json, color: args.color, verbose: args.verbose, wide: args.wide });
    this.now = parseNow(args.now);
    this.nowGiven = args.now !== undefined;
  }

  /** Settings with this command's flags on top (keys are the camelCase setting names). */
  settings(flags: Partial<Record<SettingKey, unknown>> = {}): LoadedSettings {
    const loaded = loadSettings(flags);
    // Deprecation warnings of the config file, once per command.
    if (!this.warned) for (const warning of loaded.warnings) this.out.note(`warning: ${warning}`);
    this.warned = true;
    return loaded;
  }

  /** The database: the configured one, else the embedded default (said once on stderr). */
  db(options: { max?: number; applicationName?: string } = {}): Promise<Db> {
    this.dbPromise ??= connect({
      databaseUrl: this.args.databaseUrl,
      max: options.max,
      applicationName: options.applicationName ?? 'qmaint',
      connectTimeoutMs: loadSettings().values.connectTimeoutMs,
      embedded: true,
      onEmbeddedLog: (line) => this.out.note(line),
    }).then((db) => {
      if (db.source === 'embedded') this.out.note(`using the embedded PostgreSQL at ${db.display} (no database configured; qmaint embedded stop stops it)`);
      return db;
    });
    return this.dbPromise;
  }

  /** A database whose qmaint schema is fully migrated (exit 2 with advice otherwise). */
  async migratedDb(options: { max?: number; applicationName?: string } = {}): Promise<Db> {
    const db = await this.db(options);
    await this.requireMigratedOnce(db);
    return db;
  }

  private requireMigratedOnce(db: Db): Promise<void> {
    let check = this.schemaChecks.get(db);
    if (check === undefined) {
      check = requireMigrated(db);
      this.schemaChecks.set(db, check);
    }
    return check;
  }

  /**
   * The database of the read-only commands: --read-url, else QMAINT_READ_URL
   * (a standby, say; with several hosts, any node unless the URL sets
   * target_session_attrs), else the database of every other command.
   */
  async migratedReadDb(options: { max?: number; applicationName?: string } = {}): Promise<Db> {
    const fromFlag = this.args.readUrl !== undefined;
    const url = fromFlag ? this.args.readUrl : process.env.QMAINT_READ_URL || undefined;
    if (url === undefined) return this.migratedDb(options);
    checkConnectionUrl(url, fromFlag ? '--read-url' : 'QMAINT_READ_URL');
    this.readDbPromise ??= connect({
      databaseUrl: url,
      max: options.max,
      applicationName: options.applicationName ?? 'qmaint',
      connectTimeoutMs: loadSettings().values.connectTimeoutMs,
      targetSessionAttrs: 'any',
    });
    const db = await this.readDbPromise;
    await this.requireMigratedOnce(db);
    return db;
  }

  /** Run another qmaint command line in this process (the demo does): output to io, or captured. */
  run(argv: string[], io?: Partial<CommandIO>): Promise<CommandResult> {
    return invocation().run(argv, io);
  }

  /** This invocation's standard input. */
  get stdin(): NodeJS.ReadableStream {
    return invocation().io.stdin;
  }

  private readonly closers: (() => unknown)[] = [];

  /** Run fn when the command ends, however it ends (a bad module, a failed connection, done), before the pools close. */
  onClose(fn: () => unknown): void {
    this.closers.push(fn);
  }

  async close(): Promise<void> {
    for (const fn of this.closers.splice(0).reverse())
      await Promise.resolve()
        .then(fn)
        .catch(() => undefined);
    if (this.readDbPromise) {
      const db = await this.readDbPromise.catch(() => undefined);
      await db?.close().catch(() => undefined);
    }
    if (this.dbPromise) {
      const db = await this.dbPromise.catch(() => undefined);
      await db?.close().catch(() => undefined);
    }
  }
}

/**
 * Wrap a command body: build the context, run, map errors to exit codes, close
 * the pool. The body may return an exit code (e.g. 4 for a critical check).
 */
export function handler<A>(body: (ctx: Context, argv: A & GlobalArgs) => Promise<number | void> | number | void) {
  // yargs hands over its own argv type; the body declares what it reads.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return async (raw: any): Promise<void> => {
    const argv = raw as A & GlobalArgs;
    let ctx: Context | undefined;
    try {
      ctx = new Context(argv);
      const code = await body(ctx, argv);
      invocation().exitCode = code ?? ExitCode.ok;
    } catch (err) {
      const error = toQmaintError(err);
      reportError(error, argv, ctx);
      invocation().exitCode = exitCodeFor(error);
    } finally {
      await ctx?.close();
    }
  };
}

/** Print an error: one line (the stack with --verbose), passwords redacted whatever their form. */
export function reportError(err: unknown, argv: Partial<GlobalArgs>, ctx?: Context): void {
  const error = toQmaintError(err);
  const out = ctx?.out ?? new Output({ json: !!argv.json, color: argv.color !== false, verbose: !!argv.verbose });
  const exitCode = exitCodeFor(error);
  const prefix = exitCode === ExitCode.unexpected ? 'unexpected error: ' : '';
  const message = redactSecrets(cliMessage(error));
  out.note(`${out.c.red('error:')} ${prefix}${message}`);
  if (argv.verbose) {
    const cause = error.cause instanceof Error ? error.cause : error;
    out.note(cause.stack ?? String(cause));
  }
  if (argv.json)
    out.emitJson({
      ok: false,
      error: { code: error.code, exitCode, message, ...(error.details ? { details: redactDeep(cliDetails(error)) } : {}) },
    });
}
