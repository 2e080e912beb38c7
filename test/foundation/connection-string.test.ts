import { describe, expect, it } from 'vitest';
import { connectionTarget, parseConnectionString, redactSecrets, redactUrl, resolveConnection, withDatabase } from '../../src/config.js';
import { QmaintError } from '../../src/errors.js';
import { clientOptions, FailoverClient } from '../../src/failover.js';

describe('multi-host connection strings', () => {
  it('splits a URL with several hosts into one URL per host, in order', () => {
    const plan = parseConnectionString('postgres://u:p%40ss@a:5432,b:5433/app?target_session_attrs=read-write&sslmode=disable', 'x');
    expect(plan.urls).toEqual([
      'postgres://u:p%40ss@a:5432/app?target_session_attrs=read-write&sslmode=disable',
      'postgres://u:p%40ss@b:5433/app?target_session_attrs=read-write&sslmode=disable',
    ]);
    expect(plan.hosts).toEqual(['a:5432', 'b:5433']);
    expect(plan.targetSessionAttrs).toBe('read-write');
    expect(plan.database).toBe('app');
  });

  it('reads the libpq keyword=value form, with one port for all or one per host', () => {
    const plan = parseConnectionString(String.raw`host=a,b port=5432,5433 dbname=app user=me password='it\'s' target_session_attrs=primary`, 'x');
    expect(plan.hosts).toEqual(['a:5432', 'b:5433']);
    expect(plan.targetSessionAttrs).toBe('primary');
    const first = new URL(plan.urls[0]!);
    expect([first.hostname, first.port, first.username, decodeURIComponent(first.password), first.pathname]).toEqual(['a', '5432', 'me', "it's", '/app']);
    expect(parseConnectionString(String.raw`host=/run/pg,h2 port=6000 password='a\'b c'`, 'x').urls).toEqual([
      'postgres://localhost:6000/?host=%2Frun%2Fpg',
      'postgres://h2:6000/',
    ]);
    expect(parseConnectionString(String.raw`host=h user=me password='a\'b c'`, 'x').urls).toEqual(["postgres://me:a'b%20c@h:5432/"]);
  });

  it('refuses malformed strings with a config error that never repeats the password', () => {
    for (const bad of [
      'postgres://u:secret@a:1,,b:2/db',
      'host=a,b port=1,2,3 password=secret',
      "host=a password='secret",
      'postgres://u:secret@a,b/db?target_session_attrs=sometimes',
      'host=a port=99999 password=secret',
    ]) {
      let caught: unknown;
      try {
        parseConnectionString(bad, 'the database URL');
      } catch (err) {
        caught = err;
      }
      expect(caught, bad).toBeInstanceOf(QmaintError);
      expect((caught as QmaintError).code).toBe('config');
      expect((caught as Error).message).not.toContain('secret');
    }
  });

  it('redacts the password of every form', () => {
    expect(redactUrl('postgres://me:hunter2@a:5432,b:5433/app')).toBe('postgres://me:***@a:5432,b:5433/app');
    expect(redactSecrets('host=a,b port=1,2 password=hunter2 user=me')).toBe('host=a,b port=1,2 password=*** user=me');
    expect(redactSecrets("host=a,b password='hun ter2'")).toBe('host=a,b password=***');
    expect(redactUrl('postgres://a,b/app?password=hunter2')).not.toContain('hunter2');
  });

  it('names every host in error messages', () => {
    expect(connectionTarget('postgres://u@a:5432,b:5433/app')).toEqual({ host: 'a,b', port: '5432,5433', database: 'app' });
  });

  it('a PGHOST listing several hosts becomes a keyword string; one host stays node-pg’s', () => {
    const r = resolveConnection(undefined, { PGHOST: 'a,b', PGPORT: '5432,5433', PGUSER: 'me', PGPASSWORD: 'p w' });
    expect(r.source).toBe('libpq');
    expect(parseConnectionString(r.url!, 'x').hosts).toEqual(['a:5432', 'b:5433']);
    expect(resolveConnection(undefined, { PGHOST: 'a' })).toEqual({ source: 'libpq' });
  });

  it('names another database in the same form', () => {
    expect(withDatabase('postgres://u:p@a:1,b:2/app?target_session_attrs=read-write', 'cron')).toBe(
      'postgres://u:p@a:1,b:2/cron?target_session_attrs=read-write',
    );
    expect(parseConnectionString(withDatabase('host=a,b dbname=app', 'cron'), 'x').database).toBe('cron');
  });

  it('uses a FailoverClient for several hosts or a target_session_attrs, a plain client otherwise', () => {
    expect(clientOptions('postgres://u@a/app', 'x')).toEqual({ connectionString: 'postgres://u@a/app' });
    const many = clientOptions('postgres://u@a,b/app', 'x');
    expect(many.Client).toBe(FailoverClient);
    expect(many.qmaintFailover?.attrs).toBe('read-write');
    expect(clientOptions('postgres://u@a,b/app', 'x', 'any').qmaintFailover?.attrs).toBe('any');
    expect(clientOptions('postgres://u@a/app?target_session_attrs=standby', 'x').qmaintFailover?.attrs).toBe('standby');
  });
});
