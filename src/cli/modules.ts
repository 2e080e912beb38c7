/**
 * The user's modules the CLI imports: a handler module (qmaint work
 * --handler) and a tasks module (qmaint work --tasks, qmaint explain dequeue
 * --tasks). Anything wrong with one is bad input (exit 2), in one line.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { badInput } from '../errors.js';
import type { Handler, QueueTasks } from '../queue/consumer.js';

/** Import a module, or say in one line (bad input, exit 2) why it cannot be: what it is, and how to fix it. */
async function importModule(file: string, what: string, shape: string): Promise<{ default?: unknown; close?: unknown }> {
  const full = path.resolve(file);
  if (!existsSync(full)) throw badInput(`${what} ${file} not found; give the path of a module whose default export is ${shape}`);
  try {
    return (await import(pathToFileURL(full).href)) as { default?: unknown; close?: unknown };
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    const ts = /\.[cm]?tsx?$/.test(file) ? ' (a TypeScript module needs Node 22.6+ type stripping or a loader: node --import tsx; see docs/queue.md)' : '';
    throw badInput(`${what} ${file} failed to load (${message})${ts}; fix the module`);
  }
}

/** The module's optional `close` export: called once the consumer stopped, so a module holding pools or timers lets the process exit. */
function closeOf(mod: { close?: unknown }): { close?: () => unknown } {
  return typeof mod.close === 'function' ? { close: mod.close as () => unknown } : {};
}

/**
 * Import the handler module; anything wrong with it is bad input (exit 2), in
 * one line. An optional `close` export is called once the consumer stopped.
 */
export async function loadHandler(file: string): Promise<{ handler: Handler; close?: () => unknown }> {
  const mod = await importModule(file, 'handler module', 'async (job) => {}');
  if (typeof mod.default !== 'function') throw badInput(`handler module ${file} has no default export function; export default async (job) => {}`);
  return { handler: mod.default as Handler, ...closeOf(mod) };
}

/**
 * Import a tasks module: its default export maps queue names to handlers, or
 * to { handler, concurrency } (defineQueue's task() makes these). Anything
 * wrong with it is bad input (exit 2), in one line.
 */
export async function loadTasks(file: string): Promise<{ tasks: QueueTasks; close?: () => unknown }> {
  const shape = '{ queue: async (job) => {}, ... }';
  const mod = await importModule(file, 'tasks module', shape);
  const tasks = mod.default;
  if (tasks === null || typeof tasks !== 'object' || Array.isArray(tasks))
    throw badInput(`tasks module ${file} has no default export object; export default ${shape}`);
  const entries = Object.entries(tasks as Record<string, unknown>);
  if (entries.length === 0) throw badInput(`tasks module ${file} names no queue; export default ${shape}`);
  for (const [queue, task] of entries) {
    const handler = typeof task === 'object' && task !== null ? (task as { handler?: unknown }).handler : task;
    if (typeof handler !== 'function')
      throw badInput(`tasks module ${file}: the handler of queue ${queue} is not a function; map it to async (job) => {} or { handler, concurrency }`);
  }
  return { tasks: tasks as QueueTasks, ...closeOf(mod) };
}
