/**
 * The one small HTTP server `qmaint work` and `qmaint schedule daemon` serve
 * their metrics from: /metrics (the registry, Prometheus text) and /healthz.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { QmaintError } from '../errors.js';

/** What /healthz answers: `ok` false answers 503; the other fields are the body's. */
export type HealthBody = { ok: boolean } & Record<string, unknown>;

/** Options of {@link serveMetrics}. */
export interface MetricsServerOptions {
  /** The port (0: any free port; the bound one is {@link MetricsServer.port}). */
  port: number;
  /** The address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface). */
  host?: string;
  /** What /healthz answers (default `{ ok: true }`); a rejection answers 503 with its message. */
  health?: () => HealthBody | Promise<HealthBody>;
  /** Told about a scrape that failed (answered 500) or a server error; default: nothing. */
  onError?: (err: Error) => void;
}

/** A listening metrics server. */
export interface MetricsServer {
  /** The address it listens on. */
  host: string;
  /** The port it listens on (the one picked, when asked for 0). */
  port: number;
  /** Stop listening and close open connections. */
  close(): Promise<void>;
}

const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));

/**
 * Serve `registry` at /metrics and a health document at /healthz over HTTP
 * on host:port. A scrape never throws out of the process: a failing one
 * answers 500 and is reported to `onError`.
 *
 * @param registry - the metrics to serve (e.g. from {@link createMetrics})
 * @param options - port, address (default 127.0.0.1), health and error reporting
 * @returns the server, once it listens
 * @throws {@link QmaintError} `config` when it cannot listen on host:port (in use, or not an address of this machine)
 */
export async function serveMetrics(registry: Registry, options: MetricsServerOptions): Promise<MetricsServer> {
  const host = options.host ?? '127.0.0.1';
  const report = (err: unknown) => options.onError?.(asError(err));
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => {
          report(err);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${asError(err).message}\n`);
        },
      );
    } else if (path === '/healthz') {
      Promise.resolve()
        .then(() => options.health?.() ?? { ok: true })
        .catch((err: unknown): HealthBody => ({ ok: false, error: asError(err).message }))
        .then((body) => res.writeHead(body.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n'))
        .catch(report);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new QmaintError(
          'config',
          `cannot serve /metrics on ${host}:${options.port} (${err.code ?? err.message}); give metricsHost an address of this machine (127.0.0.1, 0.0.0.0) and metricsPort a free port`,
          { cause: err, option: ['metricsHost', 'metricsPort'] },
        ),
      );
    });
    server.listen(options.port, host, () => resolve());
  });
  // Once listening, trouble (a broken client connection, say) is reported, never thrown.
  server.on('error', report);
  server.on('clientError', (_err, socket) => socket.destroy());
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
