// Producers and consumers as separate processes around `qmaint adopt` (the
// proof in test/adopt/ and the adopt benchmark share this driver).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load.mjs');

export interface WorkerReport {
  role: 'producer' | 'consumer';
  ops: number;
  /** Producers: ids inserted; consumers: ids claimed. */
  ids: string[];
  errors: string[];
  /** The longest one statement took (ms). */
  maxMs: number;
  maxAt: string | null;
}

export interface Load {
  /** Ask every worker to stop and collect their reports. */
  stop(): Promise<WorkerReport[]>;
}

/** The seed-style queue table the proof and the benchmark adopt, filled with `rows` rows (a third done). */
export function seedTableSql(table: string, rows: number): string {
  return `CREATE TABLE ${table} (id bigserial, payload jsonb NOT NULL DEFAULT '{}', status text NOT NULL DEFAULT 'queued',
            retry_count integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at));
          CREATE INDEX ON ${table} (created_at) WHERE status = 'queued';
          INSERT INTO ${table} (payload, status, created_at)
            SELECT jsonb_build_object('seed', i), CASE WHEN i % 3 = 0 THEN 'done' ELSE 'queued' END, now() - interval '1 hour' + i * interval '1 millisecond'
              FROM generate_series(1, ${rows}) i;
          ANALYZE ${table};`;
}

/** Start producers and consumers on `table`, each its own process. */
export async function startLoad(url: string, table: string, options: { producers: number; consumers: number; tag: string }): Promise<Load> {
  const children: { child: ChildProcess; out: Promise<string> }[] = [];
  const start = (role: string) => {
    const child = spawn(process.execPath, [WORKER, role, url, table, options.tag], { stdio: ['pipe', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
    const out = new Promise<string>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`${role} worker exited with ${code}: ${text}`))));
    });
    children.push({ child, out });
  };
  for (let i = 0; i < options.producers; i++) start('producer');
  for (let i = 0; i < options.consumers; i++) start('consumer');
  // Let every worker connect and do some work before the caller goes on.
  await new Promise((r) => setTimeout(r, 1500));
  return {
    async stop() {
      for (const c of children) c.child.stdin!.end('stop\n');
      const texts = await Promise.all(children.map((c) => c.out));
      return texts.map((t) => JSON.parse(t.trim()) as WorkerReport);
    },
  };
}
