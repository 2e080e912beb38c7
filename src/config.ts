import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { durationMs, formatDurationMs } from './duration.js';
import { badInput, badOption, QmaintError } from './errors.js';

export { durationMs } from './duration.js';

/** Where the connection came from, in precedence order. */
export type ConnectionSource = 'flag' | 'DATABASE_URL' | 'libpq' | 'embedded' | 'pool';

export interface ResolvedConnection {
  source: ConnectionSource;
  /** Connection string; undefined for libpq (node-pg reads PG* itself) and embedded (resolved on start). */
  url?: string;
}

const LIBPQ_VARS = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD', 'PGSERVICE'];

/** The given URL (the databaseUrl option, a CLI's --database-url), then DATABASE_URL, then libpq PG* variables, then the embedded default. */
export function resolveConnection(flagUrl: string | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedConnection {
  checkPgPort(env);
  if (flagUrl !== undefined) return { source: 'flag', url: checkConnectionUrl(flagUrl, 'databaseUrl', 'databaseUrl') };
  if (env.DATABASE_URL) return { source: 'DATABASE_URL', url: checkConnectionUrl(env.DATABASE_URL, 'DATABASE_URL') };
  if (LIBPQ_VARS.some((name) => env[name])) return { source: 'libpq' };
  return { source: 'embedded' };
}

const USE_URL = 'use postgres://user:password@host:port/database';

/**
 * A connection URL qmaint can use (postgres:// or postgresql://), or a config
 * error that never repeats the text: it may hold a password. `where` names
 * the URL in the message; `option`, when the URL came from an option, is that
 * option's name (see QmaintError.options).
 */
export function checkConnectionUrl(url: string, where: string, option?: string): string {
  const config = (message: string) => new QmaintError('config', message, { option });
  if (url.trim() === '') throw config(`${where} is empty; ${USE_URL}, or leave it out`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    const keywords = /^\s*[a-z_]+\s*=/i.test(url) ? ' (keyword=value strings are not supported; the PG* variables are)' : '';
    throw config(`${where} is not a valid URL${keywords}; ${USE_URL}`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw config(`${where} must start with postgres:// or postgresql://, got ${parsed.protocol}//; ${USE_URL}`);
  }
  try {
    for (const part of [parsed.username, parsed.password, parsed.pathname]) decodeURIComponent(part);
  } catch {
    throw config(`${where} holds a malformed %-escape in its user, password or database; write a literal % as %25`);
  }
  return url;
}

/** PGPORT, when set, must be a port number: node-pg would otherwise connect to NaN. */
function checkPgPort(env: NodeJS.ProcessEnv): void {
  const port = env.PGPORT;
  if (port === undefined || port === '') return;
  if (!/^\d{1,5}$/.test(port.trim()) || Number(port) < 1 || Number(port) > 65535) {
    throw new QmaintError('config', `PGPORT ${JSON.stringify(port)} is not a port number; set it to a number from 1 to 65535, or unset it`);
  }
}

// Secrets in connection strings, in any text: the password of a URL
// (scheme://user:PASSWORD@), a password query parameter, a keyword=value password.
const URL_PASSWORD = /(\/\/[^\s:/?#@]*):\S*@/g;
const QUERY_PASSWORD = /([?&][a-z_]*pass(?:word)?=)[^&#\s]*/gi;
const KEYWORD_PASSWORD = /(^|[\s;,(])([a-z_]*pass(?:word)?\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s'";,)]+)/gi;

/**
 * The one redaction for output and logs: every password a connection string
 * can carry, in whatever form (URL, ?password=, libpq keyword=value, a string
 * too malformed to parse), becomes ***.
 */
export function redactSecrets(text: string): string {
  return text.replace(URL_PASSWORD, '$1:***@').replace(QUERY_PASSWORD, '$1***').replace(KEYWORD_PASSWORD, '$1$2***');
}

/** redactSecrets applied to every string inside a JSON-like value (error details, run details). */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => redactDeep(v)) as T;
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)])) as T;
  }
  return value;
}

/** A connection URL for output and logs: its password (in the authority or the query) replaced by ***. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) if (/pass/i.test(key)) parsed.searchParams.set(key, '***');
    return redactSecrets(parsed.toString());
  } catch {
    return redactSecrets(url);
  }
}

/** Host and port a connection will reach, for error messages. */
export function connectionTarget(url: string | undefined, env: NodeJS.ProcessEnv = process.env): { host: string; port: string; database: string } {
  if (url) {
    try {
      const parsed = new URL(url);
      return {
        host: parsed.hostname || parsed.searchParams.get('host') || 'localhost',
        port: parsed.port || '5432',
        database: decodeURIComponent(parsed.pathname.replace(/^\//, '')) || parsed.username || 'postgres',
      };
    } catch {
      /* fall through to libpq defaults */
    }
  }
  return { host: env.PGHOST ?? 'localhost', port: env.PGPORT ?? '5432', database: env.PGDATABASE ?? env.PGUSER ?? 'postgres' };
}

// ---------------------------------------------------------------------------
// Settings: flags > QMAINT_* environment > qmaint.config.json > defaults.

type SettingType = 'string' | 'integer' | 'number' | 'boolean' | 'duration';

interface SettingSpec {
  type: SettingType;
  default: string | number | boolean;
  description: string;
  /** Integers and numbers: the range. Durations: the range in milliseconds. */
  min?: number;
  max?: number;
}

/** Every tunable setting. The environment name is QMAINT_ + the key in UPPER_SNAKE case. */
export const settingSpecs = {
  lockTimeout: {
    type: 'duration',
    default: '2s',
    min: 1,
    max: 600_000,
    description: 'lock_timeout for maintenance DDL (more than 0 and at most 10min, as in a policy)',
  },
  // The same default as qmaint.lock_retries(), which the executors read when the setting is left at its default.
  lockRetries: { type: 'integer', default: 3, min: 0, max: 100, description: 'how often maintenance retries a statement that hit lock_timeout' },
  leaseSeconds: { type: 'integer', default: 60, min: 1, max: 86400, description: 'how long a claimed job is leased to its consumer' },
  concurrency: { type: 'integer', default: 10, min: 1, max: 1000, description: 'handlers a consumer runs at once' },
  batch: { type: 'integer', default: 100, min: 1, max: 10000, description: 'jobs claimed per statement' },
  pollMaxMs: { type: 'integer', default: 5000, min: 10, max: 600000, description: 'longest idle poll interval of a consumer' },
  jobTimeoutSeconds: {
    type: 'number',
    default: 900,
    min: 0.001,
    max: 2147483,
    description: 'how long a handler may run when its job carries no timeout of its own; then its signal aborts and the job fails',
  },
  connectTimeoutMs: {
    type: 'integer',
    default: 10000,
    min: 100,
    max: 600000,
    description: 'how long making a connection (TCP and login) may take before it fails with exit 3',
  },
  statementTimeout: {
    type: 'duration',
    default: '30s',
    min: 1,
    max: 86_400_000,
    description: 'statement_timeout for explain and checks (more than 0 and at most 1d)',
  },
  healthThresholds: {
    type: 'string',
    default: '{}',
    description: 'health and dequeue thresholds overriding the defaults (docs/health.md): an object in the config file, JSON text in the environment',
  },
  rotateCron: { type: 'string', default: '*/15 * * * *', description: 'cron schedule of the rotate task (UTC; "off" disables it)' },
  vacuumCron: { type: 'string', default: '20 * * * *', description: 'cron schedule of the vacuum task (UTC; "off" disables it)' },
  rescueCron: { type: 'string', default: '* * * * *', description: 'cron schedule of the rescue task (UTC; "off" disables it)' },
  healthCron: { type: 'string', default: '*/5 * * * *', description: 'cron schedule of the health task (UTC; "off" disables it)' },
  recurringCron: {
    type: 'string',
    default: '* * * * *',
    description: 'cron schedule of the recurring task, which enqueues due recurring jobs (qmaint cron add; UTC; "off" disables it)',
  },
} satisfies Record<string, SettingSpec>;

export type SettingKey = keyof typeof settingSpecs;
export type Settings = {
  [K in SettingKey]: (typeof settingSpecs)[K]['default'] extends number ? number : (typeof settingSpecs)[K]['default'] extends boolean ? boolean : string;
};
export type SettingOrigin = 'flag' | 'env' | 'file' | 'default';

export function envName(key: string): string {
  return 'QMAINT_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** `where` is where a value from the environment or a file came from; a value passed in (flags) is named by its key alone. */
function coerce(key: string, spec: SettingSpec, raw: unknown, where: string | null): string | number | boolean {
  const fail = (what: string) => (where === null ? badOption(key, `${key} ${what}`) : badInput(`${where}: ${key} ${what}`));
  switch (spec.type) {
    case 'duration': {
      const ms = typeof raw === 'string' ? durationMs(raw) : undefined;
      const range = `more than 0 and at most ${formatDurationMs(spec.max!)}`;
      if (ms === undefined) throw fail(`must be a duration such as 500ms, 2s or 5m (${range}), got ${JSON.stringify(raw)}`);
      if (ms < spec.min! || ms > spec.max!) throw fail(`must be ${range}, got ${JSON.stringify(raw)}`);
      // In units PostgreSQL reads the same way as a setting and as an interval (5m becomes 5min).
      return formatDurationMs(ms);
    }
    case 'string':
      if (typeof raw !== 'string' || raw === '') throw fail('must be a non-empty string');
      return raw;
    case 'boolean':
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      throw fail('must be true or false');
    case 'integer':
    case 'number': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
      if (!Number.isFinite(n) || (spec.type === 'integer' && !Number.isInteger(n)))
        throw fail(`must be ${spec.type === 'integer' ? 'a whole number' : 'a number'}, got ${JSON.stringify(raw)}`);
      if (spec.min !== undefined && n < spec.min) throw fail(`must be at least ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) throw fail(`must be at most ${spec.max}, got ${n}`);
      return n;
    }
  }
}

export interface LoadedSettings {
  values: Settings;
  origin: Record<SettingKey, SettingOrigin>;
  configFile?: string;
  /** Deprecated forms that still work (a warning for stderr each). */
  warnings: string[];
}

const THRESHOLD_VALUE = z.union([z.number(), z.string()]);

/** The schema of one setting's value in the config file. */
function fileSchema(key: string, spec: SettingSpec): z.ZodType {
  if (key === 'healthThresholds')
    return z.union([z.record(z.string(), THRESHOLD_VALUE), z.string().describe('deprecated: JSON text of the object')]).describe(spec.description);
  switch (spec.type) {
    case 'duration':
      return z.string().describe(`${spec.description}; a duration such as 500ms, 2s or 5m`);
    case 'string':
      return z.string().min(1).describe(spec.description);
    case 'boolean':
      return z.boolean().describe(spec.description);
    case 'integer':
    case 'number': {
      let n = spec.type === 'integer' ? z.number().int() : z.number();
      if (spec.min !== undefined) n = n.min(spec.min);
      if (spec.max !== undefined) n = n.max(spec.max);
      return n.describe(spec.description);
    }
  }
}

/**
 * The schema of qmaint.config.json (zod): every setting optional, nothing
 * else but "$schema" (the editor's pointer to qmaint.schema.json).
 */
export const configFileSchema = z
  .object({
    $schema: z.string().optional(),
    ...Object.fromEntries(Object.entries(settingSpecs).map(([key, spec]) => [key, fileSchema(key, spec).optional()])),
  })
  .strict();

/** The JSON Schema of qmaint.config.json for editors (qmaint.schema.json at the repository root is this, committed). */
export function configJsonSchema(): Record<string, unknown> {
  return { ...z.toJSONSchema(configFileSchema), title: 'qmaint.config.json' };
}

/** One line per problem zod found in a config file: where, and what is wrong. */
function describeIssues(file: string, error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const at = issue.path.join('.');
      if (issue.code === 'unrecognized_keys')
        return `unknown setting ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}; known settings are ${Object.keys(settingSpecs).join(', ')}`;
      return `${at}: ${issue.message}`;
    })
    .map((line) => `${file}: ${line}`)
    .join('; ');
}

/**
 * Resolve every setting. `flags` holds only what the user passed on the command
 * line (undefined means not passed).
 */
export function loadSettings(
  flags: Partial<Record<SettingKey, unknown>> = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): LoadedSettings {
  const file = env.QMAINT_CONFIG ?? path.join(cwd, 'qmaint.config.json');
  let fromFile: Record<string, unknown> = {};
  let configFile: string | undefined;
  const warnings: string[] = [];
  if (existsSync(file)) {
    configFile = file;
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
      fromFile = parsed as Record<string, unknown>;
    } catch (err) {
      throw new QmaintError('config', `${file} is not a JSON object (${(err as Error).message}); fix or remove it`);
    }
    const checked = configFileSchema.safeParse(fromFile);
    if (!checked.success) throw new QmaintError('config', describeIssues(file, checked.error));
    delete fromFile.$schema;
    const thresholds = fromFile.healthThresholds;
    if (typeof thresholds === 'string') {
      warnings.push(`${path.basename(file)}: healthThresholds as JSON text is deprecated; write the object itself, e.g. "healthThresholds": ${thresholds}`);
    } else if (thresholds !== undefined) {
      fromFile.healthThresholds = JSON.stringify(thresholds);
    }
  } else if (env.QMAINT_CONFIG) {
    throw new QmaintError('config', `QMAINT_CONFIG names ${file}, which does not exist; fix the path or unset it`);
  }
  const values: Record<string, unknown> = {};
  const origin: Record<string, SettingOrigin> = {};
  for (const [key, spec] of Object.entries(settingSpecs) as [SettingKey, SettingSpec][]) {
    const flag = flags[key];
    const envValue = env[envName(key)];
    if (flag !== undefined) {
      values[key] = coerce(key, spec, flag, null);
      origin[key] = 'flag';
    } else if (envValue !== undefined && envValue !== '') {
      values[key] = coerce(key, spec, envValue, envName(key));
      origin[key] = 'env';
    } else if (key in fromFile) {
      values[key] = coerce(key, spec, fromFile[key], path.basename(file));
      origin[key] = 'file';
    } else {
      values[key] = spec.default;
      origin[key] = 'default';
    }
  }
  return { values: values as Settings, origin, configFile, warnings };
}
