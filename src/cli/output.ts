import { Chalk, type ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import { redactSecrets } from '../config.js';
import { stringifyJson } from '../json.js';
import type { PlanStep, StepEvent } from '../plan.js';
import { elapsed } from './format.js';
import { invocation, type OutStream } from './invocation.js';
import { stripVTControlCharacters } from 'node:util';

/**
 * The one module that renders: tables (cli-table3), colour (chalk), progress.
 * With --json nothing human is printed; the command emits one JSON document.
 */
export interface OutputOptions {
  json: boolean;
  color: boolean;
  verbose: boolean;
  /** --wide: tables and lines at their full width, whatever the terminal's. */
  wide?: boolean;
  /** Default: the current invocation's streams. */
  stdout?: OutStream;
  stderr?: OutStream;
}

export interface Column<T> {
  key: keyof T & string;
  header: string;
  align?: 'left' | 'right';
  format?: (value: T[keyof T], row: T) => string;
  /** Hidden when the table does not fit the width; the highest number goes first. Unset: always shown. */
  priority?: number;
  /** Long text (a reason, a message): wrapped to fit rather than cut. */
  wrap?: boolean;
}

/**
 * The width output must fit: the stream's own (a terminal), else COLUMNS when
 * it is set (tests, scripts that want it), else none: piped output keeps every
 * column at its full width. --wide lifts the limit.
 */
export function outputWidth(stream: OutStream, wide = false, env: NodeJS.ProcessEnv = process.env): number | undefined {
  if (wide) return undefined;
  if (stream.columns !== undefined && stream.columns > 0) return stream.columns;
  const columns = Number(env.COLUMNS);
  return Number.isInteger(columns) && columns > 0 ? columns : undefined;
}

/** Visible width of text (colour codes do not count); the widest line of a multi-line cell. */
export function visibleWidth(text: string): number {
  return Math.max(
    0,
    ...stripVTControlCharacters(text)
      .split('\n')
      .map((l) => l.length),
  );
}

/** Words of text wrapped to width, later lines indented; a word longer than a line stays whole. */
export function wrapText(text: string, width: number | undefined, indent = '  '): string {
  if (width === undefined || visibleWidth(text) <= width) return text;
  const lead = /^ */.exec(text)![0];
  const lines: string[] = [];
  let line = lead;
  for (const word of text.slice(lead.length).split(' ')) {
    const candidate = line.trim() === '' ? line + word : `${line} ${word}`;
    if (line.trim() !== '' && visibleWidth(candidate) > width) {
      lines.push(line);
      line = indent + word;
    } else {
      line = candidate;
    }
  }
  lines.push(line);
  return lines.join('\n');
}

const FRAME_MIN_WRAP = 12;
const FRAME_MIN = 4;

/**
 * Which columns to show and how wide (padding included) to fit width: the least
 * important columns (highest priority number) are hidden until the rest fit
 * with their wrapping columns at FRAME_MIN_WRAP characters; then wrapping
 * columns, and if need be the widest others, are narrowed. Widths undefined:
 * everything fits as it is.
 */
export function fitColumns(
  columns: { priority?: number; wrap?: boolean }[],
  natural: number[],
  width: number | undefined,
): { shown: number[]; widths?: number[] } {
  const shown = columns.map((_, i) => i);
  const total = (w: (i: number) => number) => shown.reduce((sum, i) => sum + w(i) + 2, 0) + shown.length + 1;
  if (width === undefined || total((i) => natural[i]!) <= width) return { shown };
  const least = (i: number) => (columns[i]!.wrap ? Math.min(natural[i]!, FRAME_MIN_WRAP) : natural[i]!);
  while (total(least) > width) {
    const droppable = shown.filter((i) => columns[i]!.priority !== undefined);
    if (droppable.length === 0) break;
    // The highest number goes first; of equals, the rightmost.
    const drop = droppable.reduce((a, b) => (columns[b]!.priority! >= columns[a]!.priority! ? b : a));
    shown.splice(shown.indexOf(drop), 1);
  }
  const widths = new Map(shown.map((i) => [i, natural[i]!]));
  let excess = total((i) => natural[i]!) - width;
  const narrow = (candidates: number[], floor: (i: number) => number) => {
    while (excess > 0) {
      const widest = candidates.filter((i) => widths.get(i)! > floor(i)).sort((a, b) => widths.get(b)! - widths.get(a)!)[0];
      if (widest === undefined) return;
      widths.set(widest, widths.get(widest)! - 1);
      excess--;
    }
  };
  narrow(
    shown.filter((i) => columns[i]!.wrap),
    () => FRAME_MIN_WRAP,
  );
  narrow(shown, () => FRAME_MIN);
  return { shown, widths: shown.map((i) => widths.get(i)! + 2) };
}

export class Output {
  readonly json: boolean;
  readonly verbose: boolean;
  readonly c: ChalkInstance;
  /** The width lines and tables fit (undefined: no limit; piped output and --wide). */
  readonly width: number | undefined;
  private readonly stdout: OutStream;
  private readonly stderr: OutStream;

  constructor(options: OutputOptions) {
    this.json = options.json;
    this.verbose = options.verbose;
    this.stdout = options.stdout ?? invocation().io.stdout;
    this.stderr = options.stderr ?? invocation().io.stderr;
    this.width = outputWidth(this.stdout, options.wide);
    const colour = options.color && !process.env.NO_COLOR && this.stdout.isTTY === true;
    this.c = new Chalk({ level: colour ? 1 : 0 });
  }

  /** A line for people (suppressed under --json). */
  line(text = ''): void {
    if (!this.json) this.stdout.write(text + '\n');
  }

  /** A line for people, wrapped at word boundaries to the output width. */
  wrapped(text: string): void {
    this.line(this.wrap(text));
  }

  heading(text: string): void {
    this.line(this.c.bold(this.wrap(text)));
  }

  /** Text wrapped at word boundaries to the output width (reasons, messages); SQL and key=value lines are never wrapped. */
  wrap(text: string, indent = '  '): string {
    return wrapText(text, this.width, indent);
  }

  ok(text: string): void {
    this.line(this.wrap(`${this.c.green('✔')} ${text}`));
  }

  warn(text: string): void {
    this.line(this.wrap(`${this.c.yellow('!')} ${text}`));
  }

  bad(text: string): void {
    this.line(this.wrap(`${this.c.red('✖')} ${text}`));
  }

  dim(text: string): string {
    return this.c.dim(text);
  }

  /** Verdict colouring shared by checks: ok / warn / critical. */
  verdict(level: string): string {
    if (level === 'ok') return this.c.green(level);
    if (level === 'warn' || level === 'warning') return this.c.yellow(level);
    if (level === 'critical') return this.c.red(level);
    return level;
  }

  /** Diagnostics on stderr (shown under --json too, never on stdout); passwords redacted, as in every error. */
  note(text: string): void {
    this.stderr.write(redactSecrets(text) + '\n');
  }

  debug(text: string): void {
    if (this.verbose) this.stderr.write(this.c.dim(redactSecrets(text)) + '\n');
  }

  /**
   * A table fitted to the output width: columns hidden by priority (a line
   * names them and --wide), long text wrapped, the rest cut with an ellipsis.
   */
  table<T extends object>(columns: Column<T>[], rows: T[]): void {
    if (this.json) return;
    const cells = rows.map((row) =>
      columns.map((col) => {
        const value = row[col.key];
        if (col.format) return col.format(value, row);
        return value === null || value === undefined ? '' : String(value);
      }),
    );
    const natural = columns.map((col, i) => Math.max(visibleWidth(col.header), ...cells.map((r) => visibleWidth(r[i]!))));
    const { shown, widths } = fitColumns(columns, natural, this.width);
    const table = new Table({
      head: shown.map((i) => this.c.bold(columns[i]!.header)),
      colAligns: shown.map((i) => columns[i]!.align ?? 'left'),
      style: { head: [], border: [] },
      ...(widths ? { colWidths: widths, wordWrap: true, wrapOnWordBoundary: true } : {}),
    });
    for (const r of cells) table.push(shown.map((i) => r[i]!));
    this.stdout.write(table.toString() + '\n');
    if (shown.length < columns.length) {
      const hidden = columns.filter((_, i) => !shown.includes(i)).map((col) => col.header);
      this.line(this.dim(this.wrap(`not shown at ${this.width} columns: ${hidden.join(', ')} (--wide shows every column, --json everything)`)));
    }
  }

  /** Print the one JSON document of a --json run. */
  emitJson(doc: unknown): void {
    this.stdout.write(stringifyJson(doc, 2) + '\n');
  }

  /** Text as it is, on stdout (a document written in pieces as its rows arrive). */
  raw(text: string): void {
    this.stdout.write(text);
  }

  /** One JSON document on one line (a stream of events under --json: `schedule run`). */
  jsonLine(doc: unknown): void {
    this.stdout.write(stringifyJson(doc) + '\n');
  }

  /** --json: print doc; otherwise call human(). */
  emit(doc: unknown, human: () => void): void {
    if (this.json) this.emitJson(doc);
    else human();
  }

  /** Plan steps as --dry-run shows them: the exact SQL with its lock level. */
  plan(steps: Pick<PlanStep, 'seq' | 'action' | 'statement' | 'lockLevel' | 'reason'>[]): void {
    if (this.json) return;
    if (steps.length === 0) {
      this.line('nothing to do');
      return;
    }
    for (const step of steps) {
      this.line(this.c.dim(`-- ${step.seq}. ${step.action}: ${step.reason}`));
      this.line(this.c.dim(`-- lock: ${step.lockLevel}`));
      this.line(step.statement.trim().replace(/;?\s*$/, ';'));
      this.line();
    }
  }

  /**
   * The one printer of executed steps (partitions and vacuum, run here or by
   * qmaint.run_steps): a line per step result with its attempts, retries and
   * long statements on stderr, a progress bar for straggler moves.
   */
  stepPrinter(): (event: StepEvent) => void {
    let bar: Progress | undefined;
    const name = (step: PlanStep) => `${step.action} ${step.target ?? ''}`.trim();
    const tries = (n: number) => (n > 1 ? `, ${n} attempts` : '');
    return (event) => {
      switch (event.outcome) {
        case 'start':
          if (event.step.action === 'move') {
            bar = this.progress(event.total ?? 0, `moving jobs out of ${event.step.target}`);
          } else if (!event.step.transactional) {
            this.note(this.c.dim(`${event.step.statement} ...`));
          }
          break;
        case 'moved':
          bar?.tick(event.moved);
          break;
        case 'retry':
          this.note(`${this.c.yellow('lock busy:')} ${name(event.step)}, attempt ${event.attempts + 1} in ${elapsed(event.delayMs)}`);
          break;
        case 'skipped':
          this.warn(`skipped ${name(event.step)}: ${event.reason ?? ''}`);
          break;
        case 'gave_up':
          bar?.finish();
          bar = undefined;
          this.bad(`${name(event.step)}: gave up after ${event.attempts} attempts`);
          break;
        case 'done':
          bar?.finish();
          bar = undefined;
          this.ok(
            `${name(event.step)}${event.moved !== undefined ? ` (${event.moved} jobs moved)` : ''} ${this.dim(`${elapsed(event.ms)}${tries(event.attempts)}`)}`,
          );
          break;
      }
    };
  }

  /**
   * Progress for long work: a bar on a TTY (stderr), otherwise a line at every
   * 10%. Silent under --json.
   */
  progress(total: number, label: string): Progress {
    return new Progress(total, label, this.json ? null : this.stderr, this.c);
  }

  /** A progress bar on a terminal (stderr); silent when stderr is not one, and under --json. */
  ttyProgress(total: number, label: string): Progress {
    return new Progress(total, label, this.json || !this.stderr.isTTY ? null : this.stderr, this.c);
  }
}

export class Progress {
  private done = 0;
  private lastDecile = -1;
  private lastDraw = 0;
  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly stream: OutStream | null,
    private readonly c: ChalkInstance,
  ) {}

  tick(n = 1): void {
    this.done += n;
    if (!this.stream) return;
    const fraction = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    if (this.stream.isTTY) {
      const now = Date.now();
      if (now - this.lastDraw < 80 && this.done < this.total) return;
      this.lastDraw = now;
      const width = 30;
      const filled = Math.round(fraction * width);
      this.stream.write(`\r${this.label} ${this.c.cyan('█'.repeat(filled))}${'░'.repeat(width - filled)} ${this.done}/${this.total}`);
    } else {
      const decile = Math.floor(fraction * 10);
      if (decile > this.lastDecile) {
        this.lastDecile = decile;
        this.stream.write(`${this.label}: ${this.done}/${this.total} (${decile * 10}%)\n`);
      }
    }
  }

  finish(): void {
    if (this.stream?.isTTY) this.stream.write('\n');
  }
}
