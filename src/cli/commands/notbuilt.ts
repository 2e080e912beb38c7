import { QmaintError } from '../../errors.js';
import { handler } from '../context.js';
import type { Register } from './index.js';

/** A group whose issue has not landed yet: one line, exit 2. */
export function notBuilt(group: string, description: string, issue: number): Register {
  return (y) => {
    y.command(
      `${group} [args..]`,
      description,
      (b) => b.strict(false),
      handler(async () => {
        throw new QmaintError('not_implemented', `qmaint ${group} is not built yet (issue #${issue}); see README.md for what works today`);
      }),
    );
  };
}
