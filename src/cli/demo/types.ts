import type { Db } from '../../db.js';
import type { Output } from '../output.js';

/** What a demo step can use: a fresh demo database and a way to run qmaint commands in it. */
export interface DemoContext {
  out: Output;
  /** Pool on the demo database. */
  db: Db;
  /** Connection string of the demo database (password included; never print it). */
  url: string;
  /** Fixed "now" of the demo, so every run tells the same story. */
  now: Date;
  /** Narrate in plain words. */
  say(text: string): void;
  /** Run `qmaint ARGS` against the demo database, showing the command and its output. Returns the exit code. */
  qmaint(args: string[], options?: { expectExit?: number; quiet?: boolean }): Promise<number>;
  /** A scratch directory for files a step writes (handlers, NDJSON). */
  scratch: string;
}

export interface DemoStep {
  title: string;
  run(d: DemoContext): Promise<void>;
}
