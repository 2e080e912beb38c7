import { durationMs, formatDurationMs, hasUnit } from '../duration.js';
import { badInput } from '../errors.js';
import type { Options } from 'yargs';
import type { Output } from './output.js';

/**
 * A duration flag (`--lease 30s`), and the flag with a unit in its name it
 * replaces (`--lease-seconds 30`), kept for one release as a deprecated alias.
 */
export interface DurationFlag {
  /** The flag's name without dashes: lease. */
  flag: string;
  /** Smallest and largest value in milliseconds. */
  min: number;
  max: number;
  /** The value must be a whole number of this many milliseconds (1000: whole seconds). */
  step?: number;
  /** The old flag and the unit its bare numbers are in. */
  old?: { flag: string; unit: 'ms' | 's' };
  /** A bare number given to this flag itself is in this unit (deprecated: the flag took a number before). */
  bare?: 'ms' | 's';
}

const UNIT_MS = { ms: 1, s: 1000 } as const;

/** yargs options for a duration flag and its deprecated alias. */
export function durationOptions(spec: DurationFlag, description: string): Record<string, Options> {
  const options: Record<string, Options> = { [spec.flag]: { type: 'string', description: `${description} (a duration: 500ms, 30s, 5m)` } };
  if (spec.old) options[spec.old.flag] = { type: 'number', description: `deprecated: use --${spec.flag}`, deprecated: `use --${spec.flag}`, hidden: true };
  return options;
}

/**
 * Milliseconds of a duration flag, or undefined when neither it nor its old
 * alias was given. The old alias, or a bare number where one used to be
 * accepted, works with a warning on stderr; anything else wrong is bad input.
 */
export function readDuration(out: Output, spec: DurationFlag, value: string | number | undefined, oldValue?: number): number | undefined {
  const flag = `--${spec.flag}`;
  let result: number | undefined;
  if (oldValue !== undefined && value !== undefined) throw badInput(`give ${flag} or --${spec.old!.flag}, not both (${flag} replaces it)`);
  if (oldValue !== undefined && spec.old) {
    if (!Number.isFinite(oldValue)) throw badInput(`--${spec.old.flag} must be a number of ${spec.old.unit === 's' ? 'seconds' : 'milliseconds'}`);
    result = Math.round(oldValue * UNIT_MS[spec.old.unit]);
    out.note(`warning: --${spec.old.flag} is deprecated and goes away in the next release; use ${flag} ${formatDurationMs(result)}`);
  } else if (value !== undefined) {
    const text = String(value);
    if (!hasUnit(text)) {
      const n = Number(text);
      if (!spec.bare || text.trim() === '' || !Number.isFinite(n))
        throw badInput(`${flag} ${JSON.stringify(text)} needs a unit: e.g. ${flag} 500ms, ${flag} 30s or ${flag} 5m`);
      result = Math.round(n * UNIT_MS[spec.bare]);
      out.note(
        `warning: a bare number for ${flag} is deprecated (read as ${spec.bare === 's' ? 'seconds' : 'milliseconds'}); write ${flag} ${formatDurationMs(result)}`,
      );
    } else {
      result = durationMs(text);
      if (result === undefined) throw badInput(`${flag} ${JSON.stringify(text)} is not a duration; write e.g. 500ms, 30s, 5m or 1h`);
    }
  } else {
    return undefined;
  }
  if (result < spec.min || result > spec.max)
    throw badInput(`${flag} must be from ${formatDurationMs(spec.min)} to ${formatDurationMs(spec.max)}, got ${String(value ?? oldValue)}`);
  if (spec.step !== undefined && result % spec.step !== 0)
    throw badInput(`${flag} must be whole ${spec.step === 1000 ? 'seconds' : `multiples of ${formatDurationMs(spec.step)}`}, got ${formatDurationMs(result)}`);
  return result;
}
