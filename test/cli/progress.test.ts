import { describe, expect, it } from 'vitest';
import { Capture } from '../../src/cli/invocation.js';
import { runCommand } from '../../src/cli/main.js';
import { freshDatabase } from '../helpers.js';

describe('vacuum tune: waiting for a churn sample', () => {
  it('draws a progress bar when stderr is a terminal, and only the one line when it is not', async () => {
    const t = await freshDatabase();
    const args = ['vacuum', 'tune', '--dry-run', '--sample', '1s', '--database-url', t.url, '--now', '2030-01-01T00:00:00Z'];
    const tty = Object.assign(new Capture(), { isTTY: true });
    expect((await runCommand(args, { stderr: tty })).exitCode).toBe(0);
    expect(tty.text()).toContain('sampling pg_stat_user_tables for 1s');
    expect(tty.text()).toMatch(/\rsampling churn, seconds █+ 1\/1\n/);
    const piped = await runCommand(args);
    expect(piped.exitCode).toBe(0);
    expect(piped.stderr).toContain('sampling pg_stat_user_tables for 1s');
    expect(piped.stderr).not.toContain('█');
  });
});
