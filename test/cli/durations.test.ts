import { describe, expect, it } from 'vitest';
import { readDuration, type DurationFlag } from '../../src/cli/durations.js';
import { Capture } from '../../src/cli/invocation.js';
import { runCommand } from '../../src/cli/main.js';
import { Output } from '../../src/cli/output.js';
import { formatDurationMs } from '../../src/duration.js';

const LEASE: DurationFlag = { flag: 'lease', min: 1000, max: 86_400_000, step: 1000, old: { flag: 'lease-seconds', unit: 's' } };
const EXIT_AFTER: DurationFlag = { flag: 'exit-after', min: 1, max: 10_000_000, bare: 's' };

function output() {
  const stderr = new Capture();
  return { out: new Output({ json: false, color: false, verbose: false, stdout: new Capture(), stderr }), stderr };
}

describe('duration flags', () => {
  it('read 500ms, 30s, 5m alike, and refuse a bare number, a range or step violation, and both spellings at once', () => {
    const { out, stderr } = output();
    expect(['2s', '5m', '1.5h', '2000ms'].map((v) => readDuration(out, LEASE, v))).toEqual([2000, 300_000, 5_400_000, 2000]);
    expect(readDuration(out, LEASE, undefined)).toBeUndefined();
    expect(() => readDuration(out, LEASE, '30')).toThrow('--lease "30" needs a unit: e.g. --lease 500ms, --lease 30s or --lease 5m');
    expect(() => readDuration(out, LEASE, 'soon')).toThrow('--lease "soon" is not a duration');
    expect(() => readDuration(out, LEASE, '1500ms')).toThrow('--lease must be whole seconds, got 1500ms');
    expect(() => readDuration(out, LEASE, '2d')).toThrow('--lease must be from 1s to 1d, got 2d');
    expect(() => readDuration(out, LEASE, '2s', 2)).toThrow('give --lease or --lease-seconds, not both');
    expect(stderr.text()).toBe('');
  });

  it('keep the old flag, and a bare number where the flag took one, with a warning on stderr', () => {
    const { out, stderr } = output();
    expect(readDuration(out, LEASE, undefined, 30)).toBe(30_000);
    expect(readDuration(out, EXIT_AFTER, '90')).toBe(90_000);
    expect(stderr.text().split('\n')).toEqual([
      'warning: --lease-seconds is deprecated and goes away in the next release; use --lease 30s',
      'warning: a bare number for --exit-after is deprecated (read as seconds); write --exit-after 90s',
      '',
    ]);
  });

  it('print in units PostgreSQL reads', () => {
    expect([0, 500, 2000, 90_000, 300_000, 7_200_000, 86_400_000].map(formatDurationMs)).toEqual(['0s', '500ms', '2s', '90s', '5min', '2h', '1d']);
  });

  it('on the command line: checked before anything connects, old spellings warn', async () => {
    const bad = await runCommand(['work', '--queue', 'q', '--handler', 'nowhere.js', '--lease', '1500ms']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toBe('error: --lease must be whole seconds, got 1500ms\n');
    const old = await runCommand(['work', '--queue', 'q', '--handler', 'nowhere.js', '--lease-seconds', '30', '--poll-max-ms', '200']);
    expect(old.exitCode).toBe(2);
    expect(old.stderr).toContain('warning: --lease-seconds is deprecated and goes away in the next release; use --lease 30s');
    expect(old.stderr).toContain('use --poll-max 200ms');
    expect(old.stderr).toContain('handler module nowhere.js not found');
    const daemon = await runCommand(['schedule', 'run', '--leader-interval', '10ms']);
    expect(daemon.exitCode).toBe(2);
    expect(daemon.stderr).toContain('--leader-interval must be from 50ms to 10min, got 10ms');
  });
});
