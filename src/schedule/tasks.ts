import { validateDetailed } from 'node-cron';
import type { LoadedSettings, SettingKey, SettingOrigin } from '../config.js';
import { envName } from '../config.js';
import { QmaintError } from '../errors.js';

/** The maintenance tasks a schedule runs, each through SELECT qmaint.run_task(task). */
export const TASKS = ['rotate', 'vacuum', 'rescue', 'health'] as const;
/** A scheduled maintenance task. */
export type TaskName = (typeof TASKS)[number];

/** What each task does, for help texts and listings. */
export const TASK_PURPOSE: Record<TaskName, string> = {
  rotate: 'make partitions ahead and retire old ones (qmaint.rotate_all)',
  vacuum: 're-profile partitions for autovacuum as they age (qmaint.vacuum_tune_all)',
  rescue: 'put jobs with expired leases back in the queue (qmaint.rescue_expired)',
  health: 'run the health checks and record the verdict (qmaint.health_checks)',
};

/** A task's schedule: a cron expression, or null when switched off. */
export type Schedules = Record<TaskName, string | null>;

/** Which dialect an expression must fit: pg_cron has no seconds field, node-cron has one. */
export type CronDialect = 'pg_cron' | 'node-cron';

export function settingKey(task: TaskName): SettingKey {
  return `${task}Cron` as SettingKey;
}

/** "rotateCron", "QMAINT_ROTATE_CRON", ...: where a schedule came from, for error messages. */
export function scheduleSource(task: TaskName, origin: SettingOrigin, configFile?: string): string {
  const key = settingKey(task);
  switch (origin) {
    case 'flag':
      return key;
    case 'env':
      return envName(key);
    case 'file':
      return `${configFile ?? 'qmaint.config.json'} ${key}`;
    case 'default':
      return `the default ${key}`;
  }
}

const PG_CRON_SECONDS = /^\s*([1-9]|[1-5][0-9])\s+seconds?\s*$/;

/**
 * Check one cron expression. Returns null when it is fine, otherwise what is
 * wrong. "off" is handled by the caller.
 */
export function cronProblem(expression: string, dialect: CronDialect): string | null {
  const trimmed = expression.trim();
  if (dialect === 'pg_cron' && PG_CRON_SECONDS.test(trimmed)) return null;
  const result = validateDetailed(trimmed);
  if (!result.valid) {
    const first = result.errors[0];
    return first ? first.message.replace(/ a invalid /, ' an invalid ') : 'not a cron expression';
  }
  const fields = trimmed.startsWith('@') ? 5 : trimmed.split(/\s+/).length;
  if (dialect === 'pg_cron' && fields !== 5) {
    return 'pg_cron takes 5 fields (minute hour day month weekday), or "N seconds" from pg_cron 1.5; it has no seconds field';
  }
  return null;
}

/**
 * The schedule of every task from settings (flags > QMAINT_* env > config file >
 * defaults). An invalid expression is bad input naming where it came from.
 */
export function schedulesFrom(settings: LoadedSettings, dialect: CronDialect): Schedules {
  const out = {} as Schedules;
  for (const task of TASKS) {
    const key = settingKey(task);
    const raw = String(settings.values[key]).trim();
    if (raw.toLowerCase() === 'off') {
      out[task] = null;
      continue;
    }
    const problem = cronProblem(raw, dialect);
    if (problem) {
      const source = scheduleSource(task, settings.origin[key], settings.configFile);
      throw new QmaintError(
        'bad_input',
        `${source} ${JSON.stringify(raw)} is not a valid ${dialect} expression (${problem}); use e.g. "*/15 * * * *"${dialect === 'node-cron' ? ' or, with seconds, "*/10 * * * * *"' : ''}, or "off"`,
        { details: { task, expression: raw, source }, option: settings.origin[key] === 'flag' ? key : undefined },
      );
    }
    out[task] = raw;
  }
  return out;
}
