/**
 * One error type for the whole toolkit. Every failure the user can act on is a
 * QmaintError with a stable code and the process exit code the CLI should use.
 */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  badInput: 2,
  connection: 3,
  critical: 4,
  lockGaveUp: 5,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export type ErrorCode = 'bad_input' | 'config' | 'connection' | 'permission' | 'migration' | 'critical' | 'lock_timeout' | 'unexpected';

const exitFor: Record<ErrorCode, ExitCodeValue> = {
  bad_input: ExitCode.badInput,
  config: ExitCode.badInput,
  migration: ExitCode.badInput,
  connection: ExitCode.connection,
  permission: ExitCode.connection,
  critical: ExitCode.critical,
  lock_timeout: ExitCode.lockGaveUp,
  unexpected: ExitCode.unexpected,
};

export class QmaintError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: ExitCodeValue;
  /** Structured detail for --json output (never contains secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QmaintError';
    this.code = code;
    this.exitCode = exitFor[code];
    this.details = options.details;
  }
}

export function badInput(message: string, details?: Record<string, unknown>): QmaintError {
  return new QmaintError('bad_input', message, { details });
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

/** True for a failure to reach the server or a lost connection (exit 3). */
export function isConnectionError(err: unknown): boolean {
  return toQmaintError(err).code === 'connection';
}

/**
 * Turn anything thrown into a QmaintError, classifying the usual PostgreSQL and
 * network failures so the CLI can exit with the documented code.
 */
export function toQmaintError(err: unknown, where?: { host?: string; port?: number | string }): QmaintError {
  if (err instanceof QmaintError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const netCode = err && typeof err === 'object' && 'code' in err ? String(err.code) : '';
  const target = where?.host ? ` at ${where.host}:${where.port ?? 5432}` : '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE', 'EAI_AGAIN'].includes(netCode)) {
    return new QmaintError('connection', `cannot connect to PostgreSQL${target} (${netCode}); check that the server runs and --database-url is right`, {
      cause: err,
    });
  }
  if (LOST_OR_UNREACHABLE.some((re) => re.test(message))) {
    return new QmaintError(
      'connection',
      `cannot reach PostgreSQL${target} (${message}); check that the server runs and answers, and that --database-url is right`,
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
