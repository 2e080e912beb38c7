import { embeddedStatus, ensureEmbedded, stopEmbedded } from '../../embedded.js';
import { redactUrl } from '../../config.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

const register: Register = (y) => {
  y.command(
    'embedded <action>',
    'manage the embedded PostgreSQL used when no database is configured',
    (b) =>
      b
        .positional('action', { choices: ['start', 'stop', 'status'] as const, description: 'start, stop or show the embedded server' })
        .option('dry-run', { type: 'boolean', default: false, description: 'say what start/stop would do, change nothing' }),
    handler<{ action: 'start' | 'stop' | 'status'; dryRun: boolean }>(async (ctx, argv) => {
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
        out.emit({ ok: true, ...before, ...(would ? { dryRun: true, wouldDo: would } : {}) }, () => {
          out.line(`home:        ${before.home}`);
          out.line(`initialised: ${before.initialised ? 'yes' : 'no'}`);
          out.line(`running:     ${before.running ? out.c.green('yes') : 'no'}`);
          if (before.port) out.line(`port:        ${before.port}`);
          if (before.url) out.line(`url:         ${before.url}`);
          if (before.version) out.line(`version:     PostgreSQL ${before.version}`);
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
