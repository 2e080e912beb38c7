import { describe, expect, it } from 'vitest';
import { cliDetails, cliMessage, exitCodeFor, flagFor } from '../../src/cli/exit.js';
import { resolveConnection } from '../../src/config.js';
import type { Queryable } from '../../src/db.js';
import { QmaintError, type ErrorCode } from '../../src/errors.js';
import { listJobs, retryJobs } from '../../src/queue/admin.js';

/** A Queryable that must never be reached: these errors come before any statement. */
const unreachable: Queryable = {
  query: () => Promise.reject(new Error('no statement should have been sent')),
};

async function caught(p: Promise<unknown> | (() => unknown)): Promise<QmaintError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(QmaintError);
    return err as QmaintError;
  }
  throw new Error('expected a QmaintError');
}

describe('library errors name options, the CLI names flags', () => {
  it('a bad option is bad_input naming the option the library way, with no --flag', async () => {
    const err = await caught(listJobs(unreachable, { limit: 0 }));
    expect(err).toMatchObject({ code: 'bad_input', options: ['limit'], message: 'limit must be a whole number from 1 to 100000, got 0' });
    expect(cliMessage(err)).toBe('--limit must be a whole number from 1 to 100000, got 0');
    expect(exitCodeFor(err)).toBe(2);
  });

  it('an option named inside the message becomes its flag there', async () => {
    const err = await caught(retryJobs(unreachable, {}, new Date()));
    expect(err.message).toBe('name the jobs: give job ids, or queue for all its jobs');
    expect(cliMessage(err)).toBe('name the jobs: give job ids, or --queue for all its jobs');
  });

  it('a connection URL given as an option is named as databaseUrl, and as --database-url by the CLI', async () => {
    const err = await caught(() => resolveConnection('http://u:secret@h/db', {}));
    expect(err).toMatchObject({ code: 'config', options: ['databaseUrl'] });
    expect(err.message).toMatch(/^databaseUrl must start with postgres:\/\//);
    expect(cliMessage(err)).toMatch(/^--database-url must start with postgres:\/\//);
    expect(cliMessage(err)).not.toContain('secret');
  });

  it('only whole words are replaced, never part of a name or a quoted value', () => {
    const err = new QmaintError('bad_input', '2 tables have a policy (public.table, "table"); name one with the table option', { option: 'table' });
    expect(cliMessage(err)).toBe('2 tables have a policy (public.table, "table"); name one with the --table option');
    expect(flagFor('cronDatabaseUrl')).toBe('--cron-database-url');
  });

  it('texts in the details name flags too, for --json', () => {
    const err = new QmaintError('config', 'cronDatabaseUrl points elsewhere', {
      option: 'cronDatabaseUrl',
      details: { reason: 'cronDatabaseUrl points elsewhere', steps: ['point cronDatabaseUrl at db'], count: 2 },
    });
    expect(cliDetails(err)).toEqual({ reason: '--cron-database-url points elsewhere', steps: ['point --cron-database-url at db'], count: 2 });
  });

  it('exit codes are the CLI mapping of error codes', () => {
    const codes: Record<ErrorCode, number> = {
      bad_input: 2,
      config: 2,
      migration: 2,
      connection: 3,
      permission: 3,
      critical: 4,
      lock_timeout: 5,
      unexpected: 1,
    };
    for (const [code, exit] of Object.entries(codes)) expect(exitCodeFor(new QmaintError(code as ErrorCode, 'x')), code).toBe(exit);
    expect(new QmaintError('bad_input', 'x')).not.toHaveProperty('exitCode');
  });
});
