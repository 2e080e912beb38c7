import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { ensureEmbedded, stopEmbedded } from '../src/embedded.js';
import { connect } from '../src/db.js';
import { migrate } from '../src/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin URL of the server under test (database "postgres" or as configured). */
    serverUrl: string;
    /** Name of the migrated template every test database is cloned from. */
    templateDb: string;
    /** "embedded" or "external". */
    serverKind: string;
    /** Prefix of every database this run creates (dropped at teardown). */
    runPrefix: string;
  }
}

/**
 * Starts an embedded PostgreSQL on a free port in a temp directory unless
 * QMAINT_TEST_DATABASE_URL is set, then builds one migrated template database
 * that every test file clones.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let serverUrl = process.env.QMAINT_TEST_DATABASE_URL;
  let home: string | undefined;
  if (!serverUrl) {
    home = mkdtempSync(path.join(os.tmpdir(), 'qmaint-test-'));
    const server = await ensureEmbedded({ home, throwaway: true });
    serverUrl = server.url;
  }
  const templateDb = `qmaint_tpl_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${templateDb}`);
  await admin.query(`CREATE DATABASE ${templateDb}`);
  await admin.end();
  const templateUrl = withDatabase(serverUrl, templateDb);
  const db = await connect({ databaseUrl: templateUrl });
  await migrate(db);
  await db.close();

  project.provide('serverUrl', serverUrl);
  project.provide('templateDb', templateDb);
  project.provide('serverKind', home ? 'embedded' : 'external');
  project.provide('runPrefix', `qmt_${process.pid}_`);

  return async () => {
    const client = new pg.Client({ connectionString: serverUrl });
    await client.connect();
    const { rows } = await client.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2`, [
      templateDb,
      `qmt_${process.pid}_%`,
    ]);
    for (const row of rows) await client.query(`DROP DATABASE IF EXISTS "${row.datname}" WITH (FORCE)`).catch(() => undefined);
    await client.end();
    if (home) {
      await stopEmbedded({ home });
      rmSync(home, { recursive: true, force: true });
    }
  };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = '/' + database;
  return parsed.toString();
}
