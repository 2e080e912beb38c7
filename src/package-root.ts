import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/**
 * The package's own folder, the one holding package.json and the files qmaint
 * ships beside its code (sql/, partitions/, ui/). Found by walking up from
 * this module's file, so it holds wherever that file is: src/ under tsx and
 * vitest, dist/ when built, and the CLI's single bundled file (dist/cli.js,
 * see scripts/bundle-cli.mjs), where every module shares one import.meta.url.
 */
export function packageRoot(): string {
  if (root !== undefined) return root;
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'sql', 'migrations'))) return (root = dir);
    if (path.dirname(dir) === dir) throw new Error(`qmaint's package folder (package.json beside sql/migrations) is not above ${start}`);
  }
}
