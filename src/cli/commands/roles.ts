import { requireMigrated } from '../../migrate.js';
import { assertMayInstallRoles, installRoles, parseMember, ROLE_KINDS, ROLE_NAMES, ROLE_PURPOSE, type RolesResult } from '../../roles.js';
import { handler } from '../context.js';
import type { Output } from '../output.js';
import type { Register } from '../register.js';

interface InstallArgs {
  dryRun: boolean;
  member: string[];
  lockTimeout?: string;
}

const register: Register = (y) => {
  y.command('roles', 'least privilege: the qmaint_admin, qmaint_producer, qmaint_worker and qmaint_readonly group roles', (b) =>
    b
      .command(
        'install',
        'create the four NOLOGIN roles (idempotent), make qmaint_admin the owner of the qmaint schema, grant each role exactly its share',
        (c) =>
          c
            .option('member', {
              type: 'string',
              array: true,
              default: [],
              description: `add a login role to a group: KIND=LOGIN, KIND one of ${ROLE_KINDS.join(', ')} (repeatable)`,
            })
            .option('lock-timeout', {
              type: 'string',
              description: 'lock_timeout of the install (ALTER ... OWNER locks each table; default: the lockTimeout setting, 2s)',
            })
            .option('dry-run', { type: 'boolean', default: false, description: 'print the SQL, change nothing' }),
        handler<InstallArgs>(async (ctx, argv) => {
          const members = argv.member.map(parseMember);
          const { values: settings } = ctx.settings({ lockTimeout: argv.lockTimeout });
          const db = await ctx.db({ max: 2 });
          // Before the schema check, which such a role may not even read.
          if (!argv.dryRun) await assertMayInstallRoles(db);
          await requireMigrated(db);
          const result = await installRoles(db, { dryRun: argv.dryRun, members, lockTimeout: settings.lockTimeout });
          report(ctx.out, result, db.target.database);
        }),
      )
      .demandCommand(1, 'name a roles command: install'),
  );
};

function report(out: Output, result: RolesResult, database: string): void {
  const roles = ROLE_KINDS.map((k) => ({ role: ROLE_NAMES[k], purpose: ROLE_PURPOSE[k], created: result.createRoles.includes(ROLE_NAMES[k]) }));
  const doc = {
    ok: true,
    dryRun: result.dryRun,
    database,
    roles,
    ownerChanges: result.ownerChanges,
    members: result.members,
    steps: result.steps,
  };
  out.emit(doc, () => {
    if (result.dryRun) {
      out.line(
        out.dim(
          `-- qmaint roles install in database ${database}: roles and memberships commit first; the rest runs in one transaction, under the lock qmaint migrate takes`,
        ),
      );
      out.plan(result.steps);
      return;
    }
    const created = result.createRoles.length;
    out.ok(
      `roles in ${database}: ${created === 0 ? 'all four existed' : `created ${result.createRoles.join(', ')}`}; ${result.ownerChanges.length} object(s) handed to qmaint_admin; grants applied`,
    );
    out.table(
      [
        { key: 'role', header: 'role' },
        { key: 'created', header: 'new', format: (v) => (v ? 'yes' : '') },
        { key: 'purpose', header: 'what it may do' },
      ],
      roles,
    );
    for (const m of result.members) out.line(`${m.member} ${m.present ? 'was already' : 'is now'} a member of ${m.role}`);
  });
}

export default register;
