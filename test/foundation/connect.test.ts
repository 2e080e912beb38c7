import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { connect, Db } from '../../src/db.js';
import { Consumer } from '../../src/queue/consumer.js';
import { enqueue } from '../../src/queue/enqueue.js';
import { QmaintError } from '../../src/errors.js';
import { freshDatabase } from '../helpers.js';

describe('connect() in an application', () => {
  it('with nothing configured it fails loudly and starts no embedded server unless asked', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-connect-'));
    try {
      const err = await connect({ env: {}, embeddedHome: home }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QmaintError);
      expect((err as QmaintError).code).toBe('config');
      expect((err as QmaintError).message).toMatch(/no database is configured .*embedded: true/);
      expect((err as QmaintError).message).not.toMatch(/--/);
      expect(existsSync(home) ? readdirSync(home) : []).toEqual([]);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('connects where it is told: a URL, or DATABASE_URL', async () => {
    const t = await freshDatabase();
    for (const db of [await connect({ databaseUrl: t.url, env: {} }), await connect({ env: { DATABASE_URL: t.url } })]) {
      expect(db.source).not.toBe('embedded');
      expect((await db.query<{ d: string }>('SELECT current_database() AS d')).rows[0]!.d).toBe(t.name);
      await db.close();
    }
  });
});

describe("Db.fromPool: an application's own pg.Pool", () => {
  it('runs qmaint on the pool, and close() leaves the pool to its owner', async () => {
    const t = await freshDatabase();
    const pool = new pg.Pool({ connectionString: t.url, max: 3 });
    try {
      const db = Db.fromPool(pool);
      expect(db.source).toBe('pool');
      expect(db.target.database).toBe(t.name);
      const id = await enqueue(db, 'app', { n: 1 });
      const consumer = new Consumer(db, { queue: 'app', handler: () => undefined, listen: false, drain: true, pollMinMs: 10, pollMaxMs: 20 });
      await consumer.start();
      await consumer.done;
      expect((await pool.query<{ status: string }>('SELECT status::text FROM qmaint.jobs WHERE id = $1', [id])).rows).toEqual([{ status: 'completed' }]);
      await db.close();
      expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });
});
