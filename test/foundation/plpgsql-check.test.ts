import { describe, expect, it } from 'vitest';
import { freshDatabase, pgcronUrl } from '../helpers.js';

// The PostgreSQL 15 rig (scripts/pg15.sh, which CI always runs) installs
// plpgsql_check; the embedded server does not ship it.
describe.runIf(pgcronUrl)('plpgsql_check over every qmaint function', () => {
  it('finds no error and no warning (extra and security warnings included)', async () => {
    const t = await freshDatabase();
    await t.db.query('CREATE EXTENSION plpgsql_check');
    const { rows: checked } = await t.db.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = 'qmaint' AND l.lanname = 'plpgsql'`,
    );
    expect(Number(checked[0]!.n)).toBeGreaterThan(40);
    // Trigger functions are checked against the table they guard (a partition of qmaint.jobs).
    const { rows } = await t.db.query<{ fn: string; level: string; message: string; lineno: number | null }>(
      `SELECT p.oid::regprocedure::text AS fn, r.level, r.message, r.lineno
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
        CROSS JOIN LATERAL plpgsql_check_function_tb(p.oid,
                 CASE WHEN p.prorettype = 'trigger'::regtype THEN 'qmaint.jobs'::regclass ELSE 0 END,
                 extra_warnings => true, security_warnings => true) r
        WHERE n.nspname = 'qmaint' AND l.lanname = 'plpgsql'
        ORDER BY 1, 4`,
    );
    expect(rows).toEqual([]);
  });
});
