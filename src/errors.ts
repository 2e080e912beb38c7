/**
 * What kind of failure a {@link QmaintError} is. Branch on this, never on the
 * message text:
 *
 * - `bad_input`: an argument or option is not valid; nothing was changed.
 * - `config`: the configuration cannot work as it is (no database configured,
 *   a malformed URL, pg_cron not set up, a transaction pooler where a session
 *   lock is needed); nothing was changed.
 * - `migration`: the qmaint schema is missing, behind this version, or a
 *   released migration file changed.
 * - `connection`: the server cannot be reached, or the connection was lost.
 * - `permission`: the login or a statement was refused for lack of rights.
 * - `critical`: a check found a critical problem.
 * - `lock_timeout`: a step gave up waiting for its locks after its retries;
 *   `details` is a {@link GaveUpDetails} when the executor gave up.
 * - `unexpected`: anything else (a bug, or an error qmaint does not classify).
 */
export type ErrorCode = 'bad_input' | 'config' | 'connection' | 'permission' | 'migration' | 'critical' | 'lock_timeout' | 'unexpected';

/** Structured detail of a {@link QmaintError}: plain JSON-able data, never a secret. */
export type ErrorDetails = Record<string, unknown>;

/**
 * The one error type of qmaint: every failure a caller can act on is a
 * QmaintError with a stable {@link ErrorCode}, a message of one line that
 * says what is wrong and how to fix it, and, where it helps, structured data.
 *
 * Messages name options the way the library spells them (`limit`,
 * `databaseUrl`); `options` lists those names, so a front end (such as the
 * qmaint CLI, which maps them to its `--flags` and to exit codes) can name
 * them its own way.
 */
export class QmaintError extends Error {
  /** What kind of failure this is. */
  readonly code: ErrorCode;
  /**
   * The options or fields this error is about, by their library names
   * (e.g. `['limit']`, `['databaseUrl']`): the one whose value is wrong, or the
   * ones the message suggests using. Empty when none is.
   */
  readonly options: readonly string[];
  /** Structured detail (never contains secrets). */
  readonly details: ErrorDetails | undefined;

  /**
   * Make an error; library code uses it, and so may an application's handlers.
   *
   * @param code - what kind of failure this is
   * @param message - one line: what is wrong and how to fix it
   * @param options - `cause`: the underlying error; `details`: structured data;
   *   `option`: the option name(s) the message is about
   */
  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails; option?: string | readonly string[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QmaintError';
    this.code = code;
    this.options = options.option === undefined ? [] : typeof options.option === 'string' ? [options.option] : [...options.option];
    this.details = options.details;
  }
}

/** A `bad_input` error. */
export function badInput(message: string, details?: ErrorDetails): QmaintError {
  return new QmaintError('bad_input', message, { details });
}

/** A `bad_input` error about an option (or options), which the message names by its library name. */
export function badOption(option: string | readonly string[], message: string, details?: ErrorDetails): QmaintError {
  return new QmaintError('bad_input', message, { details, option });
}

/**
 * SQLSTATE of a node-pg error, if it is one; looks through the `cause` of a
 * QmaintError (Db.query wraps what node-pg throws), so callers can branch on
 * the server's code whichever layer threw.
 */
export function sqlState(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/**
 * What node-pg says, without a code, when a connection cannot be made or
 * was lost: the connect timeout of a client or of the pool, a socket the
 * server (or something in between) closed.
 */
const LOST_OR_UNREACHABLE = [
  /^timeout expired$/,
  /^timeout exceeded when trying to connect$/,
  /^Connection terminated due to connection timeout$/,
  /^Connection terminated unexpectedly$/,
  /^Connection terminated$/,
  /^Client has encountered a connection error and is not queryable$/,
  /^Client was closed and is not queryable$/,
];

/** True for a failure to reach the server or a lost connection (code `connection`). */
export function isConnectionError(err: unknown): boolean {
  return toQmaintError(err).code === 'connection';
}

/**
 * Turn anything thrown into a QmaintError, classifying the usual PostgreSQL and
 * network failures by their code.
 */
export function toQmaintError(err: unknown, where?: { host?: string; port?: number | string }): QmaintError {
  if (err instanceof QmaintError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const netCode = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
  const target = where?.host ? ` at ${where.host}:${where.port ?? 5432}` : '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE', 'EAI_AGAIN'].includes(netCode)) {
    return new QmaintError('connection', `cannot connect to PostgreSQL${target} (${netCode}); check that the server runs and the connection URL is right`, {
      cause: err,
    });
  }
  if (LOST_OR_UNREACHABLE.some((re) => re.test(message))) {
    return new QmaintError(
      'connection',
      `cannot reach PostgreSQL${target} (${message}); check that the server runs and answers, and that the connection URL is right`,
      { cause: err },
    );
  }
  const state = sqlState(err);
  if (state) {
    if (state === '28P01' || state === '28000') {
      return new QmaintError('permission', `PostgreSQL${target} refused the login (${message}); check the user and password in the connection URL`, {
        cause: err,
      });
    }
    if (state === '3D000') {
      return new QmaintError('connection', `${message}${target}; create the database or fix the URL`, { cause: err });
    }
    if (state === '42501') {
      return new QmaintError('permission', `permission denied: ${message}; connect as a role that owns the qmaint schema`, { cause: err });
    }
    if (state === '55P03') {
      return new QmaintError('lock_timeout', `gave up waiting for a lock: ${message}`, { cause: err });
    }
    // 08: connection exceptions; 57P01-57P03: the server ended the session (pg_terminate_backend, shutdown) or cannot take it yet.
    if (state.startsWith('08') || state === '57P01' || state === '57P02' || state === '57P03') {
      return new QmaintError('connection', `lost or refused connection${target}: ${message}`, { cause: err });
    }
  }
  return new QmaintError('unexpected', message, { cause: err });
}
