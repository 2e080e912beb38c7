import { describe, expect, it } from 'vitest';
import { runCommand } from '../../src/cli/main.js';
import { fitColumns, outputWidth, wrapText } from '../../src/cli/output.js';
import { Capture } from '../../src/cli/invocation.js';
import { freshDatabase } from '../helpers.js';

/** A terminal-like stdout of the given width (not a TTY, so no colour). */
function screen(columns?: number): Capture & { columns?: number } {
  return Object.assign(new Capture(), columns === undefined ? {} : { columns });
}

const longest = (text: string) => Math.max(...text.split('\n').map((l) => l.length));

describe('output fits the terminal', () => {
  it('health, explain dequeue, vacuum status and partitions list print no line longer than 80 at 80 columns', async () => {
    const t = await freshDatabase();
    const args = ['--database-url', t.url, '--now', '2030-01-15T12:00:00Z'];
    // A long error and dead tuples make the observed texts long.
    for (let i = 0; i < 3; i++) {
      const r = await runCommand(['enqueue', '--queue', 'a-rather-long-queue-name', '--payload', `{"n":${i}}`, ...args]);
      expect(r.exitCode).toBe(0);
    }
    await t.db.query(`DELETE FROM qmaint.jobs WHERE payload->>'n' = '0'`);
    for (const command of [['health'], ['explain', 'dequeue', '--plan'], ['vacuum', 'status'], ['partitions', 'list']]) {
      const narrow = screen(80);
      const result = await runCommand([...command, ...args], { stdout: narrow });
      expect([0, 4], `${command.join(' ')}: ${result.stderr}`).toContain(result.exitCode);
      expect(narrow.text().length).toBeGreaterThan(0);
      const tooLong = narrow
        .text()
        .split('\n')
        .filter((l) => l.length > 80);
      expect(tooLong, command.join(' ')).toEqual([]);
      // The same command piped (no width) or with --wide is wider: the limit is what kept it in 80.
      const piped = await runCommand([...command, ...args]);
      const wide = screen(80);
      await runCommand([...command, ...args, '--wide'], { stdout: wide });
      expect(longest(piped.stdout), command.join(' ')).toBeGreaterThan(80);
      expect(longest(wide.text())).toBe(longest(piped.stdout));
    }
  });

  it('names the columns it hid, and --wide shows them', async () => {
    const t = await freshDatabase();
    const narrow = screen(80);
    await runCommand(['vacuum', 'status', '--database-url', t.url], { stdout: narrow });
    expect(narrow.text()).toMatch(/not shown at 80 columns: .*xid/s);
    expect(narrow.text()).not.toMatch(/xid age\s*│/);
    const wide = screen(80);
    await runCommand(['vacuum', 'status', '--database-url', t.url, '--wide'], { stdout: wide });
    expect(wide.text()).toMatch(/xid age/);
    expect(wide.text()).not.toMatch(/not shown/);
  });

  it('takes the width from the stream, then COLUMNS; none when piped or --wide', () => {
    expect(outputWidth({ write: () => true, columns: 100 }, false, { COLUMNS: '80' })).toBe(100);
    expect(outputWidth({ write: () => true }, false, { COLUMNS: '80' })).toBe(80);
    expect(outputWidth({ write: () => true }, false, {})).toBeUndefined();
    expect(outputWidth({ write: () => true, columns: 100 }, true, { COLUMNS: '80' })).toBeUndefined();
  });

  it('hides columns by priority, then narrows wrapping columns', () => {
    const cols = [{}, { priority: 1 }, { wrap: true }, { priority: 2 }];
    // Natural widths 10+10+40+10 = 70, plus 3 per column and 1: 83.
    expect(fitColumns(cols, [10, 10, 40, 10], 100)).toEqual({ shown: [0, 1, 2, 3] });
    // At 70 the wrapping column narrows first: nothing is hidden.
    const wrapped = fitColumns(cols, [10, 10, 40, 10], 70);
    expect(wrapped.shown).toEqual([0, 1, 2, 3]);
    expect(wrapped.widths).toEqual([12, 12, 29, 12]);
    // At 50 even a 12-character wrap does not fit: priority 2 goes first.
    const fit = fitColumns(cols, [10, 10, 40, 10], 50);
    expect(fit.shown).toEqual([0, 1, 2]);
    expect(fit.widths!.reduce((a, b) => a + b, 0) + fit.shown.length + 1).toBe(50);
  });

  it('wraps long text at word boundaries with a hanging indent, keeping its own indent', () => {
    expect(wrapText('aaa bbb ccc ddd', 8)).toBe('aaa bbb\n  ccc\n  ddd');
    expect(wrapText('  -> scan on a_long_name', 12, '     ')).toBe('  -> scan on\n     a_long_name');
    expect(wrapText('short', undefined)).toBe('short');
  });
});
