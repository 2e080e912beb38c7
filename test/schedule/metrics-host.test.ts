import { spawn } from 'node:child_process';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { accepts, CLI, cleanEnv, eventually, freshDatabase, ROOT, runCli } from '../helpers.js';

describe('the daemon /metrics server', () => {
  it('listens on 127.0.0.1 unless told otherwise', async () => {
    const t = await freshDatabase();
    const child = spawn(
      process.execPath,
      [
        CLI,
        'schedule',
        'run',
        '--json-lines',
        '--database-url',
        t.url,
        '--metrics-port',
        '0',
        '--exit-after',
        '60s',
        '--rescue-cron',
        '0 0 1 1 *',
        '--rotate-cron',
        'off',
        '--vacuum-cron',
        'off',
        '--health-cron',
        'off',
      ],
      { env: cleanEnv(), cwd: ROOT },
    );
    const exited = new Promise((resolve) => child.on('close', resolve));
    const events: { event: string; host?: string; port?: number }[] = [];
    let buffer = '';
    child.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        events.push(JSON.parse(buffer.slice(0, nl)) as (typeof events)[number]);
        buffer = buffer.slice(nl + 1);
      }
    });
    try {
      const metrics = await eventually(() => events.find((e) => e.event === 'metrics'), 20_000);
      expect(metrics.host).toBe('127.0.0.1');
      expect(await accepts('127.0.0.1', metrics.port!)).toBe(true);
      // Another address of this machine is refused (when it has one).
      const external = Object.values(os.networkInterfaces())
        .flat()
        .find((a) => a && a.family === 'IPv4' && !a.internal);
      if (external) expect(await accepts(external.address, metrics.port!)).toBe(false);
      // A second daemon cannot have the same port, nor an address this machine does not have: exit 2.
      for (const [host, port] of [
        ['127.0.0.1', String(metrics.port)],
        ['192.0.2.123', '0'],
        ['no-such-host.invalid', '0'],
      ]) {
        const r = await runCli([
          'schedule',
          'run',
          '--database-url',
          t.url,
          '--metrics-port',
          port!,
          '--metrics-host',
          host!,
          '--exit-after',
          '30s',
          '--rescue-cron',
          '0 0 1 1 *',
          '--rotate-cron',
          'off',
          '--vacuum-cron',
          'off',
          '--health-cron',
          'off',
        ]);
        expect(r.code, host).toBe(2);
        expect(r.stderr, host).toMatch(
          new RegExp(`error: cannot serve /metrics on ${host!.replace(/\./g, '\\.')}:${port} \\(\\w+\\); give --metrics-host an address of this machine`),
        );
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
