import { Chalk, type ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import { redactSecrets } from '../config.js';
import { stringifyJson } from '../json.js';
import type { PlanStep, StepEvent } from '../plan.js';
import { invocation, type OutStream } from './invocation.js';

/**
 * The one module that renders: tables (cli-table3), colour (chalk), progress.
 * With --json nothing human is printed; the command emits one JSON document.
 */
export interface OutputOptions {
  json: boolean;
  color: boolean;
  verbose: boolean;
  /** Default: the current invocation's streams. */
  stdout?: OutStream;
  stderr?: OutStream;
}

export interface Column<T> {
  key: keyof T & string;
  header: string;
  align?: 'left' | 'right';
  format?: (value: T[keyof T], row: T) => string;
}

export class Output {
  readonly json: boolean;
  readonly verbose: boolean;
  readonly c: ChalkInstance;
  private readonly stdout: OutStream;
  private readonly stderr: OutStream;

  constructor(options: OutputOptions) {
    this.json = options.json;
    this.verbose = options.verbose;
    this.stdout = options.stdout ?? invocation().io.stdout;
    this.stderr = options.stderr ?? invocation().io.stderr;
    const colour = options.color && !process.env.NO_COLOR && this.stdout.isTTY === true;
    this.c = new Chalk({ level: colour ? 1 : 0 });
  }

  /** A line for people (suppressed under --json). */
  line(text = ''): void {
    if (!this.json) this.stdout.write(text + '\n');
  }

  heading(text: string): void {
    this.line(this.c.bold(text));
  }

  ok(text: string): void {
    this.line(`${this.c.green('✔')} ${text}`);
  }

  warn(text: string): void {
    this.line(`${this.c.yellow('!')} ${text}`);
  }

  bad(text: string): void {
    this.line(`${this.c.red('✖')} ${text}`);
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

  table<T extends object>(columns: Column<T>[], rows: T[]): void {
    if (this.json) return;
    const table = new Table({
      head: columns.map((col) => this.c.bold(col.header)),
      colAligns: columns.map((col) => col.align ?? 'left'),
      style: { head: [], border: [] },
    });
    for (const row of rows) {
      table.push(
        columns.map((col) => {
          const value = row[col.key];
          if (col.format) return col.format(value, row);
          return value === null || value === undefined ? '' : String(value);
        }),
      );
    }
    this.stdout.write(table.toString() + '\n');
  }

  /** Print the one JSON document of a --json run. */
  emitJson(doc: unknown): void {
    this.stdout.write(stringifyJson(doc, 2) + '\n');
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
          this.note(`${this.c.yellow('lock busy:')} ${name(event.step)}, attempt ${event.attempts + 1} in ${event.delayMs} ms`);
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
            `${name(event.step)}${event.moved !== undefined ? ` (${event.moved} jobs moved)` : ''} ${this.dim(`${event.ms} ms${tries(event.attempts)}`)}`,
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
