import { badInput, badOption, QmaintError, sqlState } from '../errors.js';
import { DEFAULT_DEQUEUE_THRESHOLDS, type DequeueThresholds } from './plan.js';

/**
 * Health thresholds come in two families: `dequeue_*` judge the claim's plan
 * (in TypeScript, src/health/plan.ts); every other name is a server-side check
 * threshold, validated and defaulted by qmaint.health_checks() itself.
 */
export interface Thresholds {
  /** Limits of the dequeue plan rules. */
  dequeue: DequeueThresholds;
  /** Passed to qmaint.health_checks(p_thresholds) as they are. */
  server: Record<string, string | number>;
}

export type ThresholdInput = Record<string, unknown>;

function isDequeueKey(key: string): key is keyof DequeueThresholds {
  return key in DEFAULT_DEQUEUE_THRESHOLDS;
}

/** Merge threshold sources (later ones win) and check the dequeue_* ones. */
export function resolveThresholds(...sources: ThresholdInput[]): Thresholds {
  const dequeue: DequeueThresholds = { ...DEFAULT_DEQUEUE_THRESHOLDS };
  const server: Record<string, string | number> = {};
  for (const source of sources) {
    for (const [key, raw] of Object.entries(source)) {
      if (key.startsWith('dequeue_')) {
        if (!isDequeueKey(key)) {
          throw badInput(`unknown threshold ${key}; the plan thresholds are ${Object.keys(DEFAULT_DEQUEUE_THRESHOLDS).join(', ')}`);
        }
        const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
        if (!Number.isFinite(n) || n < 0) throw badInput(`threshold ${key} must be a number >= 0, got ${JSON.stringify(raw)}`);
        dequeue[key] = n;
      } else if (typeof raw === 'number' || typeof raw === 'string') {
        server[key] = raw;
      } else {
        throw badInput(`threshold ${key} must be a number or a string such as "10 minutes", got ${JSON.stringify(raw)}`);
      }
    }
  }
  return { dequeue, server };
}

/** The healthThresholds setting: a JSON object of name -> value. */
export function parseThresholdSetting(text: string, where = 'healthThresholds'): ThresholdInput {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw badInput(`${where} is not valid JSON (${(err as Error).message}); use e.g. {"oldest_queued_warn": "5 minutes"}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badInput(`${where} must be a JSON object such as {"oldest_queued_warn": "5 minutes"}`);
  }
  return parsed as ThresholdInput;
}

/** Thresholds given as name=value texts (the threshold option); a numeric value becomes a number. */
export function parseThresholdFlags(flags: string[]): ThresholdInput {
  const out: ThresholdInput = {};
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    if (eq <= 0 || eq === flag.length - 1)
      throw badOption('threshold', `threshold ${JSON.stringify(flag)} must look like name=value, e.g. oldest_queued_warn="5 minutes"`);
    const key = flag.slice(0, eq).trim();
    const value = flag.slice(eq + 1).trim();
    out[key] = /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
  }
  return out;
}

/** A threshold error raised by qmaint.health_checks() becomes bad input (exit 2). */
export function thresholdError(err: unknown): QmaintError | undefined {
  const pgErr = err instanceof QmaintError && err.cause !== undefined ? err.cause : err;
  if (sqlState(pgErr) !== '22023') return undefined;
  const message = pgErr instanceof Error ? pgErr.message : String(pgErr);
  if (!/health threshold/.test(message)) return undefined;
  const hint = /unknown health threshold/.test(message) ? `; plan thresholds are ${Object.keys(DEFAULT_DEQUEUE_THRESHOLDS).join(', ')}` : '';
  return badInput(message + hint);
}
