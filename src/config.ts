import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { z as Z } from 'zod';
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

/**
 * The given URL (the databaseUrl option, a CLI's --database-url), then DATABASE_URL, then libpq PG* variables, then the embedded default.
 * A PGHOST listing several hosts (or a PGTARGETSESSIONATTRS) becomes a keyword=value
 * string here, since node-pg reads PG* itself and knows only one host.
 */
export function resolveConnection(flagUrl: string | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedConnection {
  checkPgPort(env);
  if (flagUrl !== undefined) return { source: 'flag', url: checkConnectionUrl(flagUrl, 'databaseUrl', 'databaseUrl') };
  if (env.DATABASE_URL) return { source: 'DATABASE_URL', url: checkConnectionUrl(env.DATABASE_URL, 'DATABASE_URL') };
  if (LIBPQ_VARS.some((name) => env[name])) {
    if (env.PGHOST?.includes(',') || env.PGPORT?.includes(',') || env.PGTARGETSESSIONATTRS) {
      const pairs: [string, string | undefined][] = [
        ['host', env.PGHOST],
        ['port', env.PGPORT],
        ['dbname', env.PGDATABASE],
        ['user', env.PGUSER],
        ['password', env.PGPASSWORD],
        ['target_session_attrs', env.PGTARGETSESSIONATTRS],
      ];
      const text = pairs
        .filter((p): p is [string, string] => p[1] !== undefined && p[1] !== '')
        .map(([k, v]) => `${k}=${quoteKeywordValue(v)}`)
        .join(' ');
      return { source: 'libpq', url: checkConnectionUrl(text, 'the PG* variables') };
    }
    return { source: 'libpq' };
  }
  return { source: 'embedded' };
}

const USE_URL = 'use postgres://user:password@host:port/database';

/**
 * A connection string qmaint can use, or a config error that never repeats
 * the text: it may hold a password. Accepted: a postgres:// or postgresql://
 * URL, with one host or several (host1:port1,host2:port2), and a libpq
 * keyword=value string (host=a,b port=5432,5433 dbname=... user=...). `where`
 * names the string in the message; `option`, when it came from an option, is
 * that option's name (see QmaintError.options).
 */
export function checkConnectionUrl(url: string, where: string, option?: string): string {
  try {
    parseConnectionString(url, where);
  } catch (err) {
    if (err instanceof QmaintError && option !== undefined) throw new QmaintError(err.code, err.message, { option });
    throw err;
  }
  return url;
}

/** libpq's target_session_attrs values: which node of several a connection keeps. */
export const TARGET_SESSION_ATTRS: readonly TargetSessionAttrs[] = ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby'];
/** One of libpq's target_session_attrs values: which node of several a connection keeps. */
export type TargetSessionAttrs = 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby';

/** A connection string split into one single-host URL per host (node-pg knows one host per connection). */
export interface ConnectionPlan {
  /** One postgres:// URL per host, in the order given; everything but the host and port is the same in each. */
  urls: string[];
  /** host:port of each, for messages. */
  hosts: string[];
  /** target_session_attrs as given (undefined when absent). */
  targetSessionAttrs?: TargetSessionAttrs;
  /** The database named (undefined: node-pg's default). */
  database?: string;
}

const URL_PARTS = /^(postgres(?:ql)?:\/\/)(?:([^@/?#]*)@)?([^/?#]*)([/?#].*)?$/i;

/** Parse a connection string (see checkConnectionUrl) into a ConnectionPlan; config errors never repeat the text. */
export function parseConnectionString(text: string, where: string): ConnectionPlan {
  if (text.trim() === '') throw new QmaintError('config', `${where} is empty; ${USE_URL}, or leave it out`);
  if (/^\s*[a-z_]+\s*=/i.test(text)) return keywordPlan(parseKeywords(text, where), where);
  const parts = URL_PARTS.exec(text.trim());
  if (!parts || !parts[3]!.includes(',')) return singleUrlPlan(checkSingleUrl(text, where), where);
  const [, scheme, userinfo, authority, rest = ''] = parts;
  const tokens = authority!.split(',');
  if (tokens.some((t) => t === '')) throw new QmaintError('config', `${where} lists an empty host between commas; write host1:port1,host2:port2`);
  const urls = tokens.map((t) => checkSingleUrl(`${scheme}${userinfo !== undefined ? userinfo + '@' : ''}${t}${rest}`, where));
  const plans = urls.map((u) => singleUrlPlan(u, where));
  return { urls, hosts: plans.map((p) => p.hosts[0]!), targetSessionAttrs: plans[0]!.targetSessionAttrs, database: plans[0]!.database };
}

/** One URL, as checkConnectionUrl always checked it. */
function checkSingleUrl(url: string, where: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new QmaintError('config', `${where} is not a valid URL; ${USE_URL} (several hosts: host1:port1,host2:port2), or host=... port=... keywords`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new QmaintError('config', `${where} must start with postgres:// or postgresql://, got ${parsed.protocol}//; ${USE_URL}`);
  }
  try {
    for (const part of [parsed.username, parsed.password, parsed.pathname]) decodeURIComponent(part);
  } catch {
    throw new QmaintError('config', `${where} holds a malformed %-escape in its user, password or database; write a literal % as %25`);
  }
  return url;
}

function singleUrlPlan(url: string, where: string): ConnectionPlan {
  const parsed = new URL(url);
  const host = parsed.searchParams.get('host') ?? (decodeURIComponent(parsed.hostname) || 'localhost');
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, '')) || undefined;
  return {
    urls: [url],
    hosts: [`${host}:${parsed.port || '5432'}`],
    targetSessionAttrs: checkAttrs(parsed.searchParams.get('target_session_attrs'), where),
    database,
  };
}

function checkAttrs(value: string | null | undefined, where: string): TargetSessionAttrs | undefined {
  if (value === null || value === undefined) return undefined;
  if ((TARGET_SESSION_ATTRS as readonly string[]).includes(value)) return value as TargetSessionAttrs;
  throw new QmaintError('config', `${where}: target_session_attrs must be one of ${TARGET_SESSION_ATTRS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** libpq keyword=value pairs: values bare or in single quotes, backslash escapes \\ and \'. */
function parseKeywords(text: string, where: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const malformed = (what: string) =>
    new QmaintError('config', `${where}: the keyword=value string ${what} at character ${i + 1}; write key=value pairs separated by spaces`);
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  for (skipSpace(); i < text.length; skipSpace()) {
    const key = /^[a-z_]+/i.exec(text.slice(i))?.[0];
    if (!key) throw malformed('expects a keyword');
    i += key.length;
    skipSpace();
    if (text[i] !== '=') throw malformed('expects =');
    i++;
    skipSpace();
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= text.length) throw malformed('has an unterminated quoted value');
        const c = text[i++]!;
        if (c === "'") break;
        value += c === '\\' && i < text.length ? text[i++]! : c;
      }
    } else {
      while (i < text.length && !/\s/.test(text[i]!)) {
        const c = text[i++]!;
        value += c === '\\' && i < text.length ? text[i++]! : c;
      }
    }
    out.set(key.toLowerCase(), value);
  }
  return out;
}

function quoteKeywordValue(value: string): string {
  return /^[^\s'\\]+$/.test(value) ? value : `'${value.replace(/[\\']/g, (c) => '\\' + c)}'`;
}

function keywordPlan(kv: Map<string, string>, where: string): ConnectionPlan {
  const hosts = (kv.get('host') || kv.get('hostaddr') || 'localhost').split(',');
  const portList = (kv.get('port') ?? '').split(',');
  if (hosts.some((h) => h === '')) throw new QmaintError('config', `${where}: host lists an empty host between commas; write host=a,b`);
  if (portList.length !== 1 && portList.length !== hosts.length) {
    throw new QmaintError('config', `${where}: port must list one port, or one per host (${hosts.length}), got ${portList.length}`);
  }
  const ports = hosts.map((_, i) => (portList.length === 1 ? portList[0]! : portList[i]!) || '5432');
  for (const port of ports) {
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      throw new QmaintError('config', `${where}: port ${JSON.stringify(port)} is not a port number; use a number from 1 to 65535`);
    }
  }
  const user = kv.get('user');
  const password = kv.get('password');
  const database = kv.get('dbname') || undefined;
  const query = new URLSearchParams();
  for (const [key, value] of kv) if (!['host', 'hostaddr', 'port', 'user', 'password', 'dbname'].includes(key)) query.set(key, value);
  const auth = user !== undefined ? encodeURIComponent(user) + (password !== undefined ? ':' + encodeURIComponent(password) : '') + '@' : '';
  const urls = hosts.map((host, i) => {
    const q = new URLSearchParams(query);
    let name = host;
    if (host.startsWith('/')) {
      q.set('host', host);
      name = 'localhost';
    } else if (host.includes(':')) {
      name = `[${host}]`;
    }
    const qs = q.toString();
    return `postgres://${auth}${name}:${ports[i]}/${encodeURIComponent(database ?? '')}${qs ? '?' + qs : ''}`;
  });
  return { urls, hosts: hosts.map((h, i) => `${h}:${ports[i]}`), targetSessionAttrs: checkAttrs(kv.get('target_session_attrs'), where), database };
}

/**
 * The same connection string naming another database (pg_cron's, say), in
 * the form it was given.
 */
export function withDatabase(text: string, database: string): string {
  if (/^\s*[a-z_]+\s*=/i.test(text)) {
    const kv = parseKeywords(text, 'the connection string');
    kv.set('dbname', database);
    return [...kv].map(([k, v]) => `${k}=${quoteKeywordValue(v)}`).join(' ');
  }
  const parts = URL_PARTS.exec(text.trim());
  if (!parts) return text;
  const [, scheme, userinfo, authority, rest = ''] = parts;
  const query = rest.replace(/^[^?#]*/, '');
  return `${scheme}${userinfo !== undefined ? userinfo + '@' : ''}${authority}/${encodeURIComponent(database)}${query}`;
}

/** PGPORT, when set, must be a port number (or one per PGHOST host): node-pg would otherwise connect to NaN. */
function checkPgPort(env: NodeJS.ProcessEnv): void {
  const port = env.PGPORT;
  if (port === undefined || port === '') return;
  for (const one of port.split(',')) {
    if (!/^\d{1,5}$/.test(one.trim()) || Number(one) < 1 || Number(one) > 65535) {
      throw new QmaintError(
        'config',
        `PGPORT ${JSON.stringify(port)} is not a port number; set it to a number from 1 to 65535 (one per PGHOST host), or unset it`,
      );
    }
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

/** Host and port a connection will reach (each host, comma-separated, for several), for error messages. */
export function connectionTarget(url: string | undefined, env: NodeJS.ProcessEnv = process.env): { host: string; port: string; database: string } {
  if (url) {
    try {
      const plan = parseConnectionString(url, 'the connection string');
      const split = plan.hosts.map((h) => /^(.*):(\d+)$/.exec(h)!);
      return {
        host: split.map((m) => m[1]).join(','),
        port: [...new Set(split.map((m) => m[2]))].join(','),
        database: plan.database ?? env.PGDATABASE ?? env.PGUSER ?? 'postgres',
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

type Zod = typeof Z;
let zod: Zod | undefined;
let fileSchemaCache: Z.ZodType | undefined;

/**
 * zod, loaded the first time a config file is read or its schema is asked for:
 * loading it costs about 0.1 s, which every command run without a config file
 * (most of them) would otherwise pay at start-up.
 */
function loadZod(): Zod {
  zod ??= (createRequire(import.meta.url)('zod') as { z: Zod }).z;
  return zod;
}

/** The schema of one setting's value in the config file. */
function fileSchema(z: Zod, key: string, spec: SettingSpec): Z.ZodType {
  if (key === 'healthThresholds')
    return z
      .union([z.record(z.string(), z.union([z.number(), z.string()])), z.string().describe('deprecated: JSON text of the object')])
      .describe(spec.description);
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
function configFileSchema(): Z.ZodType {
  const z = loadZod();
  fileSchemaCache ??= z
    .object({
      $schema: z.string().optional(),
      ...Object.fromEntries(Object.entries(settingSpecs).map(([key, spec]) => [key, fileSchema(z, key, spec).optional()])),
    })
    .strict();
  return fileSchemaCache;
}

/** The JSON Schema of qmaint.config.json for editors (qmaint.schema.json at the repository root is this, committed). */
export function configJsonSchema(): Record<string, unknown> {
  return { ...loadZod().toJSONSchema(configFileSchema()), title: 'qmaint.config.json' };
}

/** One line per problem zod found in a config file: where, and what is wrong. */
function describeIssues(file: string, error: Z.ZodError): string {
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
    const checked = configFileSchema().safeParse(fromFile);
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
