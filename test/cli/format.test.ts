import { describe, expect, it } from 'vitest';
import { bytes, duration, elapsed, timestamp } from '../../src/cli/format.js';
import { durationMs } from '../../src/duration.js';

describe('one formatter for sizes, durations and times', () => {
  it('bytes: powers of 1024, one decimal below 10', () => {
    expect([0, 512, 1024, 3_565_158, 125_829_120, null].map(bytes)).toEqual(['0 B', '512 B', '1.0 kB', '3.4 MB', '120 MB', '']);
  });

  it('durations and ages, in the spelling the duration flags read back', () => {
    const written = [0.85, 1.25, 2, 45, 720, 12_600, 345_600].map(duration);
    expect(written).toEqual(['850ms', '1.3s', '2s', '45s', '12min', '3.5h', '4d']);
    expect(written.map(durationMs)).toEqual([850, 1300, 2000, 45_000, 720_000, 12_600_000, 345_600_000]);
    expect([12, 1500, null].map(elapsed)).toEqual(['12ms', '1.5s', '']);
  });

  it('timestamps for tables whose header says UTC', () => {
    expect(timestamp('2026-01-31T12:00:00.000Z')).toBe('2026-01-31 12:00:00');
    expect(timestamp(null)).toBe('');
  });
});
