import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect } from '../../src/db.js';
import { QmaintError } from '../../src/errors.js';
import { freshDatabase } from '../helpers.js';

describe('connect() in an application', () => {
  it('with nothing configured it fails loudly and starts no embedded server unless asked', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-connect-'));
    try {
      const err = await connect({ env: {}, embeddedHome: home }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QmaintError);
      expect((err as QmaintError).exitCode).toBe(2);
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
