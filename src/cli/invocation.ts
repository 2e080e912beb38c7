import { AsyncLocalStorage } from 'node:async_hooks';

/** Where a command writes: a Node stream, or anything with write(). */
export interface OutStream {
  write(chunk: string): boolean;
  /** A terminal: colour and progress bars are allowed. */
  isTTY?: boolean;
  /** Terminal width, when it is one. */
  columns?: number;
}

/** The streams one CLI invocation uses. */
export interface CommandIO {
  stdout: OutStream;
  stderr: OutStream;
  stdin: NodeJS.ReadableStream;
}

/** What runCommand() gives back. stdout/stderr hold what was written unless the caller passed its own stream. */
export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a CLI command line; handed to commands that run other commands (the demo). */
export type CommandRunner = (argv: string[], io?: Partial<CommandIO>) => Promise<CommandResult>;

/** One CLI invocation: its streams, the exit code it will end with, and the runner for nested commands. */
export interface Invocation {
  io: CommandIO;
  exitCode: number;
  run: CommandRunner;
}

const current = new AsyncLocalStorage<Invocation>();

/** Run fn as invocation inv: everything it awaits sees inv through invocation(). */
export function withInvocation<T>(inv: Invocation, fn: () => Promise<T>): Promise<T> {
  return current.run(inv, fn);
}

/**
 * Run fn as the process's own invocation (bin/qmaint.js, one command per
 * process): invocation() returns inv wherever no withInvocation() is active,
 * with no AsyncLocalStorage context. On Node 20 the first
 * AsyncLocalStorage.run() hooks every promise the process makes from then on;
 * that was 6-8% of a worker's CPU in a drain. Nested commands (the demo's) still
 * run under withInvocation(). Once per process.
 */
export function asProcessInvocation<T>(inv: Invocation, fn: () => Promise<T>): Promise<T> {
  if (processWide !== processInvocation) throw new Error('the process runs one command as its own');
  processWide = inv;
  return fn();
}

/** The invocation this code runs in; outside any command (library use), the process's own streams. */
export function invocation(): Invocation {
  return current.getStore() ?? processWide;
}

const processInvocation: Invocation = {
  io: { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
  exitCode: 0,
  run: () => Promise.reject(new Error('no CLI runner outside runCommand')),
};
let processWide = processInvocation;

/** A stream that keeps what is written to it. */
export class Capture implements OutStream {
  private readonly chunks: string[] = [];
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  text(): string {
    return this.chunks.join('');
  }
}
