import { embeddedPassword, embeddedStatus, ensureEmbedded, stopEmbedded, type EmbeddedStatus } from '../../embedded.js';
import { redactUrl } from '../../config.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';
import { shellLine } from '../shell.js';

/** A psql command line that connects to the embedded server; the password only when asked for. */
function psqlLine(status: EmbeddedStatus, showPassword: boolean): string | null {
  if (status.port === null || status.user === null) return null;
  const password = showPassword ? embeddedPassword() : null;
  const command = shellLine(['psql', '-h', '127.0.0.1', '-p', String(status.port), '-U', status.user, 'postgres']);
  return password === null ? command : `PGPASSWORD=${shellLine([password])} ${command}`;
}

const register: Register = (y) => {
  y.command(
    'embedded <action>',
    'manage the embedded PostgreSQL used when no database is configured',
    (b) =>
      b
        .positional('action', { choices: ['start', 'stop', 'status'] as const, description: 'start, stop or show the embedded server' })
        .option('dry-run', { type: 'boolean', default: false, description: 'say what start/stop would do, change nothing' })
        .option('show-password', { type: 'boolean', default: false, description: 'status: put the password in the psql command line (PGPASSWORD=...)' }),
    handler<{ action: 'start' | 'stop' | 'status'; dryRun: boolean; showPassword: boolean }>(async (ctx, argv) => {
      const out = ctx.out;
      const before = await embeddedStatus();
      if (argv.action === 'status' || argv.dryRun) {
        const would =
          argv.action === 'start'
            ? before.running
              ? 'nothing (already running)'
              : before.initialised
                ? 'start it'
                : 'create and start it'
            : argv.action === 'stop'
              ? before.running
                ? 'stop it'
                : 'nothing (not running)'
              : undefined;
        const psql = psqlLine(before, argv.showPassword);
        out.emit({ ok: true, ...before, psql, ...(would ? { dryRun: true, wouldDo: would } : {}) }, () => {
          out.line(`home:        ${before.home}`);
          out.line(`data:        ${before.dataDir}`);
          out.line(`log:         ${before.log}`);
          out.line(`initialised: ${before.initialised ? 'yes' : 'no'}`);
          out.line(`running:     ${before.running ? out.c.green('yes') : 'no'}`);
          if (before.port) out.line(`port:        ${before.port}`);
          if (before.url) out.line(`url:         ${before.url}`);
          if (before.version) out.line(`version:     PostgreSQL ${before.version}`);
          if (psql) out.line(`psql:        ${psql}${argv.showPassword ? '' : out.dim('  (asks for the password; --show-password puts it in)')}`);
          if (!before.running && before.initialised) out.line(out.dim('qmaint embedded start (or any qmaint command with no database configured) starts it'));
          else if (before.running) out.line(out.dim('qmaint embedded stop stops it; the data stays'));
          if (would) out.line(`--dry-run: ${argv.action} would ${would}`);
        });
        return;
      }
      if (argv.action === 'start') {
        const server = await ensureEmbedded({ onLog: (line) => out.note(line) });
        const url = redactUrl(server.url);
        out.emit({ ok: true, started: server.started, running: true, home: server.home, port: server.port, url, version: server.version }, () => {
          out.ok(`${server.started ? 'started' : 'already running:'} PostgreSQL ${server.version} on 127.0.0.1:${server.port} (${url})`);
        });
        return;
      }
      const stopped = await stopEmbedded();
      out.emit({ ok: true, stopped, running: false, home: before.home }, () => {
        out.ok(stopped ? 'stopped the embedded PostgreSQL' : 'the embedded PostgreSQL was not running');
      });
    }),
  );
};

export default register;
