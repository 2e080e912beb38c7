import { formatDurationMs } from '../../duration.js';
import { badInput, badOption } from '../../errors.js';
import { parseThresholdSetting, resolveThresholds } from '../../health/thresholds.js';
import { isLoopback, serveUi } from '../../ui/server.js';
import { handler, type Context } from '../context.js';
import { durationOptions, readDuration, type DurationFlag } from '../durations.js';
import type { Register } from '../register.js';

interface UiFlags {
  port: number;
  host: string;
  allowActions: boolean;
  token?: string;
  basePath?: string;
  showQueries: boolean;
  exitAfter?: string;
}

const EXIT_AFTER: DurationFlag = { flag: 'exit-after', min: 1, max: 2_147_483_647 };

const register: Register = (y) => {
  y.command(
    'ui',
    'the web dashboard: queues, jobs, partitions, vacuum, the claim plan and maintenance runs (read-only by default)',
    (b) =>
      b
        .option('port', { type: 'number', default: 7411, description: 'port to serve on (0: any free port)' })
        .option('host', { type: 'string', default: '127.0.0.1', description: 'address to serve on; anything but loopback needs --token' })
        .option('allow-actions', {
          type: 'boolean',
          default: false,
          description: 'allow retry, cancel, redrive, pause, resume, rotate and vacuum tune (else they answer 403)',
        })
        .option('token', { type: 'string', description: 'require this token (default: QMAINT_UI_TOKEN); open the page once with ?token=...' })
        .option('base-path', { type: 'string', description: 'serve under this path, e.g. /qmaint (behind a proxy)' })
        .option('show-queries', { type: 'boolean', default: false, description: 'show the query text of sessions holding the xmin horizon' })
        .options(durationOptions(EXIT_AFTER, 'stop by itself after this long')),
    handler<UiFlags>(ui),
  );
};

async function ui(ctx: Context, argv: UiFlags): Promise<void> {
  if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw badInput(`--port ${argv.port} must be a whole number from 0 to 65535`);
  const token = argv.token ?? (process.env.QMAINT_UI_TOKEN || undefined);
  if (token !== undefined && token.length < 16) throw badInput('--token must be at least 16 characters (e.g. openssl rand -hex 16)');
  if (!isLoopback(argv.host) && token === undefined)
    throw badOption(['host', 'token'], `--host ${argv.host} lets other machines reach the dashboard: give --token (or QMAINT_UI_TOKEN), or serve on 127.0.0.1`);
  const exitAfter = readDuration(ctx.out, EXIT_AFTER, argv.exitAfter);
  const { values: settings } = ctx.settings();
  const db = await ctx.migratedDb({ applicationName: 'qmaint-ui', max: 6 });
  const server = await serveUi({
    db,
    port: argv.port,
    host: argv.host,
    token,
    basePath: argv.basePath,
    allowActions: argv.allowActions,
    showQueries: argv.showQueries,
    statementTimeout: settings.statementTimeout,
    batch: settings.batch,
    leaseSeconds: settings.leaseSeconds,
    lockTimeout: String(settings.lockTimeout),
    thresholds: resolveThresholds(parseThresholdSetting(settings.healthThresholds)),
  });
  const mode = argv.allowActions ? 'actions allowed' : 'read-only';
  ctx.out.emit({ ok: true, url: server.url, host: server.host, port: server.port, allowActions: argv.allowActions, tokenRequired: token !== undefined }, () => {
    ctx.out.line(`qmaint ui serves ${server.url} (${mode}${token !== undefined ? '; open it once with ?token=<your token>' : ''})`);
    ctx.out.line(exitAfter !== undefined ? `it stops after ${formatDurationMs(exitAfter)}` : 'Ctrl-C stops it');
  });
  let stop: (why: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals) => stop(`received ${signal}`);
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const timer = exitAfter !== undefined ? setTimeout(() => stop(`--exit-after ${formatDurationMs(exitAfter)}`), exitAfter) : undefined;
  try {
    const reason = await stopped;
    ctx.out.note(`qmaint ui stopped (${reason})`);
  } finally {
    if (timer) clearTimeout(timer);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await server.close();
  }
}

export default register;
