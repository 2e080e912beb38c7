/**
 * The qmaint dashboard as a Node request handler: static pages from the
 * package's ui/ folder, a JSON API over the library, and the actions (retry,
 * cancel, redrive, pause, resume, rotate, vacuum tune), which answer 403
 * unless the handler was made with allowActions. `qmaint ui` serves it;
 * an application can mount it (Express, Fastify, Hono through its Node adapter).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { redactSecrets } from '../config.js';
import type { Db } from '../db.js';
import { QmaintError, toQmaintError } from '../errors.js';
import { packageRoot } from '../package-root.js';
import type { Thresholds } from '../health/thresholds.js';
import { rotate } from '../partitions/index.js';
import { cancelJobs, retryJobs } from '../queue/admin.js';
import { checkQueueName } from '../queue/enqueue.js';
import { pauseQueue, redriveJobs, resumeQueue } from '../queue/queues.js';
import { tune } from '../vacuum/tune.js';
import * as data from './data.js';
import { DEFAULT_UI_SETTINGS, type UiSettings } from './data.js';

/** Options of {@link createUiHandler}. */
export interface UiHandlerOptions {
  /** The database (from {@link connect}); the handler never closes it. */
  db: Db;
  /** Allow the actions (retry, cancel, redrive, pause, resume, rotate, tune). Default false: they answer 403. */
  allowActions?: boolean;
  /** Require this token: an `Authorization: Bearer` header, or `?token=` once (it sets a cookie). */
  token?: string;
  /** The path the handler is mounted under, e.g. `/qmaint` (default: the root, or whatever the framework strips). */
  basePath?: string;
  /** Show the query text of the sessions holding the xmin horizon back (default false). */
  showQueries?: boolean;
  /** statement_timeout of health and the claim explain (default '30s'). */
  statementTimeout?: string;
  /** Jobs per claim of the explained claim (default 100). */
  batch?: number;
  /** Lease of the explained claim in seconds (default 60). */
  leaseSeconds?: number;
  /** lock_timeout of rotate and tune (default: the policy's). */
  lockTimeout?: string;
  /** Health thresholds (default: the built-in ones; see docs/health.md). */
  thresholds?: Thresholds;
  /** The clock (default: the real one). */
  now?: () => Date;
}

/** A Node `http` request handler (what Express, Fastify's raw request and Hono's Node adapter can hand on). */
export type UiHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** The package's ui/ folder: beside dist/ when installed and when built. */
const UI_DIR = path.join(packageRoot(), 'ui');
const require = createRequire(import.meta.url);

const STATIC: Record<string, { file: () => string; type: string }> = {
  '/': { file: () => path.join(UI_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/assets/app.js': { file: () => path.join(UI_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/app.css': { file: () => path.join(UI_DIR, 'app.css'), type: 'text/css; charset=utf-8' },
  '/assets/uplot.js': { file: () => require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uplot.css': { file: () => require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

const COOKIE = 'qmaint_ui_token';
/** The header every action must carry: a form or a plain link from another site cannot send it. */
export const ACTION_HEADER = 'x-qmaint-action';

/** Seconds each read is kept before the database is asked again, whoever asks. */
const TTL_MS = {
  overview: 1500,
  health: 15_000,
  cron: 15_000,
  partitions: 1500,
  rotatePlan: 5000,
  tunePlan: 10_000,
  vacuum: 1500,
  samples: 30_000,
  explain: 5000,
  runs: 2000,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The dashboard as a Node request handler. Read-only unless `allowActions`;
 * with `token`, every request must carry it. Errors of the database answer
 * 503 with a message (the handler and its process live on).
 *
 * @param options - see {@link UiHandlerOptions}
 * @returns a `(req, res)` handler for `http.createServer` or a framework's mount
 */
export function createUiHandler(options: UiHandlerOptions): UiHandler {
  const db = options.db;
  const allowActions = options.allowActions === true;
  const basePath = normalizeBase(options.basePath);
  const clock = options.now ?? (() => new Date());
  const settings: UiSettings = {
    ...DEFAULT_UI_SETTINGS,
    showQueries: options.showQueries === true,
    ...(options.statementTimeout !== undefined ? { statementTimeout: options.statementTimeout } : {}),
    ...(options.batch !== undefined ? { batch: options.batch } : {}),
    ...(options.leaseSeconds !== undefined ? { leaseSeconds: options.leaseSeconds } : {}),
    ...(options.lockTimeout !== undefined ? { lockTimeout: options.lockTimeout } : {}),
    ...(options.thresholds !== undefined ? { thresholds: options.thresholds } : {}),
  };
  const tokenDigest = options.token !== undefined && options.token !== '' ? digest(options.token) : null;
  const cache = new Map<string, { at: number; value: Promise<unknown> }>();
  const cached = <T>(key: string, ttl: number, read: () => Promise<T>): Promise<T> => {
    const hit = cache.get(key);
    if (hit && Date.now() - hit.at < ttl) return hit.value as Promise<T>;
    const value = read();
    cache.set(key, { at: Date.now(), value });
    // A failed read is not kept: the next request asks again.
    value.catch(() => cache.delete(key));
    return value;
  };
  const forget = () => cache.clear();

  const reads: Record<string, (q: URLSearchParams) => Promise<unknown>> = {
    '/api/meta': () =>
      Promise.resolve({
        allowActions,
        showQueries: settings.showQueries,
        database: `${db.target.host}:${db.target.port}/${db.target.database}`,
        tokenRequired: tokenDigest !== null,
      }),
    '/api/overview': () => cached('overview', TTL_MS.overview, () => data.overview(db, clock())),
    '/api/health': () => cached('health', TTL_MS.health, () => data.health(db, clock(), settings)),
    '/api/cron': () => cached('cron', TTL_MS.cron, () => data.pgCron(db, 10)),
    '/api/jobs': (q) => data.jobs(db, q),
    '/api/partitions': () => cached('partitions', TTL_MS.partitions, () => data.partitions(db, clock())),
    '/api/plan/rotate': () => cached('rotatePlan', TTL_MS.rotatePlan, () => data.rotatePlan(db, clock(), settings)),
    '/api/plan/tune': () => cached('tunePlan', TTL_MS.tunePlan, () => data.tunePlan(db, clock(), settings)),
    '/api/vacuum': () => cached('vacuum', TTL_MS.vacuum, () => data.vacuum(db, clock(), settings)),
    '/api/vacuum/samples': () => cached('samples', TTL_MS.samples, () => data.churnSamples(db, clock())),
    '/api/explain': (q) => {
      const queue = q.get('queue') || undefined;
      return cached(`explain:${queue ?? ''}`, TTL_MS.explain, () => data.explain(db, settings, queue));
    },
    '/api/runs': () => cached('runs', TTL_MS.runs, () => data.runs(db)),
  };

  async function act(route: string, body: Record<string, unknown>): Promise<unknown> {
    const now = clock();
    let m = /^\/api\/actions\/jobs\/([^/]+)\/(retry|cancel|redrive)$/.exec(route);
    if (m) {
      const [id] = data.checkIds([decodeURIComponent(m[1]!)])!;
      const found = await data.job(db, id!);
      if (!found) throw new HttpError(404, `no job ${id}`);
      const ids =
        m[2] === 'retry'
          ? await retryJobs(db, { ids: [id!] }, now)
          : m[2] === 'cancel'
            ? (await cancelJobs(db, { ids: [id!] }, now)).ids
            : await redriveJobs(db, { from: found.queue, ids: [id!], ...(typeof body.to === 'string' && body.to !== '' ? { to: body.to } : {}) }, now);
      return { action: m[2], ids, changed: ids.length };
    }
    m = /^\/api\/actions\/queues\/([^/]+)\/(pause|resume)$/.exec(route);
    if (m) {
      const queue = checkQueueName(decodeURIComponent(m[1]!));
      const result = m[2] === 'pause' ? await pauseQueue(db, queue) : await resumeQueue(db, queue);
      return { action: m[2], ...result };
    }
    if (route === '/api/actions/rotate') {
      requireConfirmed(body);
      return { action: 'rotate', result: await rotate(db, { now, lockTimeout: settings.lockTimeout }) };
    }
    if (route === '/api/actions/tune') {
      requireConfirmed(body);
      return { action: 'tune', result: await tune(db, { now, lockTimeout: settings.lockTimeout ?? '2s' }) };
    }
    throw new HttpError(404, `no action at ${route}`);
  }

  async function serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let route = url.pathname;
    if (basePath !== '' && (route === basePath || route.startsWith(basePath + '/'))) route = route.slice(basePath.length);
    // Relative links need the page at a path ending in '/': /qmaint -> /qmaint/.
    const external = externalPath(req, url.pathname);
    if ((route === '' || route === '/') && !external.endsWith('/')) {
      res.writeHead(302, { location: external + '/' + url.search }).end();
      return;
    }
    if (route === '') route = '/';

    if (tokenDigest !== null) {
      const given = url.searchParams.get('token');
      if (given !== null) {
        if (!sameDigest(digest(given), tokenDigest)) throw new HttpError(401, 'wrong token');
        url.searchParams.delete('token');
        const cookiePath = external.slice(0, external.length - (route.length - 1)) || '/';
        res
          .writeHead(303, {
            'set-cookie': `${COOKIE}=${encodeURIComponent(given)}; HttpOnly; SameSite=Strict; Path=${cookiePath}`,
            location: external + url.search,
          })
          .end();
        return;
      }
      const presented = bearer(req) ?? cookie(req, COOKIE);
      if (presented === null || !sameDigest(digest(presented), tokenDigest))
        throw new HttpError(401, 'this dashboard needs its token: open it with ?token=... once, or send Authorization: Bearer ...');
    }

    if (req.method === 'POST') {
      if (!route.startsWith('/api/actions/')) throw new HttpError(405, 'only actions take POST');
      if (!allowActions) throw new HttpError(403, 'this dashboard is read-only: it was started without actions allowed');
      if (req.headers[ACTION_HEADER] !== '1') throw new HttpError(403, `actions need the header ${ACTION_HEADER}: 1 (the dashboard sends it)`);
      const body = await readBody(req);
      const result = await act(route, body);
      forget();
      sendJson(res, 200, result);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'use GET, or POST for an action');
    if (route.startsWith('/api/actions/')) throw new HttpError(405, 'actions take POST');

    const asset = STATIC[route];
    if (asset) {
      const body = await readFile(asset.file());
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', ...SECURITY_HEADERS });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const read = reads[route];
    if (read) {
      sendJson(res, 200, await read(url.searchParams));
      return;
    }
    const jobMatch = /^\/api\/jobs\/([^/]+)$/.exec(route);
    if (jobMatch) {
      const [id] = data.checkIds([decodeURIComponent(jobMatch[1]!)])!;
      const found = await data.job(db, id!);
      if (!found) throw new HttpError(404, `no job ${id}`);
      sendJson(res, 200, found);
      return;
    }
    throw new HttpError(404, `nothing at ${route}`);
  }

  return (req, res) => {
    serve(req, res).catch((err: unknown) => {
      const { status, message } = errorResponse(err);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendJson(res, status, { error: message });
    });
  };
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

function errorResponse(err: unknown): { status: number; message: string } {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  const error = toQmaintError(err);
  const status = error.code === 'bad_input' ? 400 : error.code === 'permission' ? 403 : 503;
  return { status, message: redactSecrets(error.message) };
}

function requireConfirmed(body: Record<string, unknown>): void {
  if (body.confirm !== true) throw new HttpError(400, 'confirm the plan first: send {"confirm": true}');
}

function sendJson(res: http.ServerResponse, status: number, doc: unknown): void {
  const text = JSON.stringify(doc, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...SECURITY_HEADERS }).end(text);
}

async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new HttpError(413, 'request body over 64 KiB');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    const value: unknown = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch {
    throw new HttpError(400, 'the request body must be a JSON object');
  }
}

function normalizeBase(base: string | undefined): string {
  if (base === undefined || base === '' || base === '/') return '';
  if (!/^\/[A-Za-z0-9._~\-/]*$/.test(base))
    throw new QmaintError('bad_input', `basePath ${JSON.stringify(base)} must be a URL path such as /qmaint`, { option: 'basePath' });
  return base.replace(/\/+$/, '');
}

/** The path the browser asked for (Express strips its mount path from req.url and keeps it in originalUrl). */
function externalPath(req: http.IncomingMessage, pathname: string): string {
  const original = (req as { originalUrl?: unknown }).originalUrl;
  return typeof original === 'string' ? new URL(original, 'http://localhost').pathname : pathname;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function sameDigest(a: Buffer, b: Buffer): boolean {
  return timingSafeEqual(a, b);
}

function bearer(req: http.IncomingMessage): string | null {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  return m ? m[1]!.trim() : null;
}

function cookie(req: http.IncomingMessage, name: string): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return null;
      }
    }
  }
  return null;
}

/** Is this listen address this machine only? */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** Options of {@link serveUi}. */
export interface ServeUiOptions extends UiHandlerOptions {
  /** Port to listen on; 0: any free port. */
  port: number;
  /** Address to listen on (default 127.0.0.1). Anything but loopback needs `token`. */
  host?: string;
}

/** The dashboard's own server, as {@link serveUi} started it. */
export interface ServedUi {
  /** Where it serves, ending in '/' (never with the token in it). */
  url: string;
  host: string;
  port: number;
  /** Stop listening and end open connections (the database stays open). */
  close(): Promise<void>;
}

/**
 * Serve the dashboard on its own HTTP server.
 *
 * @param options - see {@link ServeUiOptions}
 * @returns the URL it serves at (no token in it) and a close function
 * @throws {@link QmaintError} `bad_input` for a non-loopback host without a token (`options: ['host', 'token']`); `config` when the port cannot be bound
 */
export async function serveUi(options: ServeUiOptions): Promise<ServedUi> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopback(host) && (options.token === undefined || options.token === ''))
    throw new QmaintError('bad_input', `serving the dashboard on ${host} lets other machines in: give it a token, or serve on 127.0.0.1`, {
      option: ['host', 'token'],
    });
  const handler = createUiHandler(options);
  const server = http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new QmaintError('config', `cannot serve the dashboard on ${host}:${options.port} (${err.code ?? err.message}); pick a free port or another address`, {
          cause: err,
          option: ['host', 'port'],
        }),
      ),
    );
    server.listen(options.port, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}${normalizeBase(options.basePath)}/`,
    host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
