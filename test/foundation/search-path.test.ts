import { describe, expect, it } from 'vitest';
import { freshDatabase } from '../helpers.js';

describe('qmaint functions and search_path', () => {
  it('every qmaint function pins search_path to pg_catalog, pg_temp', async () => {
    const t = await freshDatabase();
    const { rows } = await t.db.query<{ fn: string }>(
      `SELECT p.oid::regprocedure::text AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'qmaint' AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false) ORDER BY 1`,
    );
    expect(rows).toEqual([]);
  });

  it('a function planted in public is never called by qmaint functions (rotate, dispose, health, enqueue)', async () => {
    const t = await freshDatabase();
    await t.db.query(`CREATE TABLE public.planted_calls (at timestamptz DEFAULT now())`);
    // An exact (text, text) match wins over pg_catalog.format(text, VARIADIC "any"), even with
    // pg_catalog searched first: the default search_path ("$user", public) is enough.
    await t.db.query(`CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE sql VOLATILE AS $$
                        INSERT INTO public.planted_calls DEFAULT VALUES RETURNING 'planted' $$`);
    const client = await t.client();
    // The plant works: an unpinned caller runs it.
    expect((await client.query<{ f: string }>(`SELECT format('%s'::text, 'x'::text) AS f`)).rows[0]!.f).toBe('planted');
    await client.query('TRUNCATE public.planted_calls');

    await client.query(`SELECT qmaint.enqueue('q', '{}')`);
    await client.query(`SELECT qmaint.rotate_all(now() + interval '10 days')`);
    await client.query(`SELECT qmaint.dispose_sql('qmaint.jobs_p20000101', 'qmaint.jobs', 'archive', 'qmaint_archive', now())`);
    await client.query(`SELECT * FROM qmaint.health_checks(now(), '{}')`);
    await client.query(`SELECT qmaint.vacuum_tune_all(now())`);
    const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM public.planted_calls`);
    expect(rows[0]!.n).toBe('0');
  });
});
