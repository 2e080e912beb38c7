import { migrate, migrationStatus } from '../../migrate.js';
import { handler } from '../context.js';
import type { Register } from './index.js';

const register: Register = (y) => {
  y.command(
    'migrate',
    'install or upgrade the qmaint schema (numbered SQL migrations, recorded with checksums)',
    (b) =>
      b
        .option('status', { type: 'boolean', default: false, description: 'list migrations and whether each is applied' })
        .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL of pending migrations, change nothing' }),
    handler<{ status: boolean; dryRun: boolean }>(async (ctx, argv) => {
      const db = await ctx.db();
      const out = ctx.out;
      if (argv.status) {
        const status = await migrationStatus(db);
        out.emit({ ok: true, database: db.display, migrations: status }, () => {
          out.table(
            [
              { key: 'version', header: 'version', align: 'right' },
              { key: 'name', header: 'name' },
              { key: 'state', header: 'state', format: (v) => (v === 'applied' ? out.c.green('applied') : out.c.yellow('pending')) },
              { key: 'appliedAt', header: 'applied at' },
            ],
            status,
          );
        });
        return;
      }
      const result = await migrate(db, { dryRun: argv.dryRun });
      const applied = result.applied.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum }));
      if (argv.dryRun) {
        out.emit({ ok: true, dryRun: true, database: db.display, pending: result.applied.map((m) => ({ version: m.version, name: m.name, sql: m.sql })) }, () => {
          if (result.applied.length === 0) out.line('-- nothing to apply: the schema is up to date');
          for (const m of result.applied) {
            out.line(out.c.dim(`-- ${m.file} (runs in one transaction with the others, under an advisory lock)`));
            out.line(m.sql);
          }
        });
        return;
      }
      out.emit({ ok: true, database: db.display, applied, alreadyApplied: result.alreadyApplied }, () => {
        if (applied.length === 0) out.ok(`schema up to date (${result.alreadyApplied} migrations) in ${db.display}`);
        else out.ok(`applied ${applied.length} migration(s) in ${db.display}: ${result.applied.map((m) => m.file).join(', ')}`);
      });
    }),
  );
};

export default register;
