import ms from 'ms';

/**
 * The one duration syntax of qmaint, for flags, settings and config files:
 * a number and a unit, as the `ms` package reads them (`500ms`, `30s`, `5m`,
 * `1.5h`, `2d`, `1min`, `2 seconds`); a bare whole number is milliseconds, as
 * PostgreSQL reads lock_timeout. Undefined when the text is not a duration, is
 * negative, or is not a whole number of milliseconds.
 */
export function durationMs(text: string): number | undefined {
  const t = text.trim();
  if (t === '' || t.startsWith('-') || /^\d*\.\d*$/.test(t)) return undefined;
  const value = ms(t as ms.StringValue) as number | undefined;
  if (value === undefined || !Number.isFinite(value)) return undefined;
  // 1.1 * 1000 is 1100.0000000000002 in floating point.
  const whole = Math.round(value);
  return Number.isSafeInteger(whole) && Math.abs(value - whole) < 1e-6 ? whole : undefined;
}

/** True when text names its unit (a bare number does not). */
export function hasUnit(text: string): boolean {
  return /[a-z]\s*$/i.test(text.trim());
}

const UNITS = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['min', 60_000],
  ['s', 1000],
] as const;

/**
 * Milliseconds as the shortest exact duration in units PostgreSQL also reads
 * (`2s`, `5min`, `1500ms`), so the text works as a flag, in a config file and
 * as lock_timeout or statement_timeout.
 */
export function formatDurationMs(value: number): string {
  if (value === 0) return '0s';
  const unit = UNITS.find(([, size]) => value % size === 0);
  return unit ? `${value / unit[1]}${unit[0]}` : `${value}ms`;
}
