import { migrate, migrationStatus } from '../../migrate.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

const register: Register = (y) => {
  y.command(
    'migrate',
    'install or upgrade the qmaint schema (numbered migrations, then the function files that changed)',
    (b) =>
      b
        .option('status', { type: 'boolean', default: false, description: 'list migrations and function files, and whether each is applied' })
        .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL of pending migrations and changed function files, change nothing' }),
    handler<{ status: boolean; dryRun: boolean }>(async (ctx, argv) => {
      const db = await ctx.db();
      const out = ctx.out;
      if (argv.status) {
        const status = await migrationStatus(db);
        out.emit({ ok: true, database: db.display, ...status }, () => {
          const state = (v: unknown): string => (v === 'applied' ? out.c.green('applied') : out.c.yellow(String(v)));
          out.table(
            [
              { key: 'version', header: 'version', align: 'right' },
              { key: 'name', header: 'migration' },
              { key: 'state', header: 'state', format: state },
              { key: 'appliedAt', header: 'applied at' },
            ],
            status.migrations,
          );
          out.table(
            [
              { key: 'file', header: 'function file' },
              { key: 'state', header: 'state', format: state },
              { key: 'appliedAt', header: 'applied at' },
            ],
            status.functions,
          );
          for (const file of status.retiredFunctionFiles) out.line(out.c.dim(`-- ${file}: recorded, no longer shipped (its row goes at the next migrate)`));
        });
        return;
      }
      const result = await migrate(db, { dryRun: argv.dryRun });
      const applied = result.applied.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum }));
      const functions = result.functions.map((f) => ({ file: f.file, checksum: f.checksum }));
      if (argv.dryRun) {
        const pending = result.applied.map((m) => ({ version: m.version, name: m.name, sql: m.sql }));
        const pendingFunctions = result.functions.map((f) => ({ file: f.file, sql: f.sql }));
        out.emit({ ok: true, dryRun: true, database: db.display, pending, pendingFunctions }, () => {
          if (result.applied.length === 0 && result.functions.length === 0) out.line('-- nothing to apply: the schema and its functions are up to date');
          for (const m of result.applied) {
            out.line(out.c.dim(`-- ${m.file} (runs in one transaction with the others, under an advisory lock)`));
            out.line(m.sql);
          }
          for (const f of result.functions) {
            out.line(out.c.dim(`-- sql/functions/${f.file} (new or changed: re-applied after the migrations, in the same transaction)`));
            out.line(f.sql);
          }
        });
        return;
      }
      out.emit({ ok: true, database: db.display, applied, functions, alreadyApplied: result.alreadyApplied }, () => {
        if (applied.length === 0 && functions.length === 0)
          out.ok(`schema up to date (${result.alreadyApplied} migrations, functions current) in ${db.display}`);
        if (applied.length > 0) out.ok(`applied ${applied.length} migration(s) in ${db.display}: ${result.applied.map((m) => m.file).join(', ')}`);
        if (functions.length > 0) out.ok(`applied ${functions.length} function file(s) in ${db.display}: ${functions.map((f) => f.file).join(', ')}`);
      });
    }),
  );
};

export default register;
