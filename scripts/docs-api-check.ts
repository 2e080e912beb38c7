// `npm run docs:api:check` (part of `npm run lint`): docs/api must be what
// typedoc generates from the current source, so the API reference cannot go
// stale. Generates into a temporary folder and compares file by file.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const committed = path.resolve('docs/api');
const fresh = mkdtempSync(path.join(tmpdir(), 'qmaint-api-'));

function files(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(path.join(dir, e.name), base) : [path.relative(base, path.join(dir, e.name))],
  );
}

try {
  // typedoc.json fails the run on any warning (an undocumented export included).
  execFileSync(process.execPath, [path.resolve('node_modules/typedoc/bin/typedoc'), '--out', fresh, '--logLevel', 'Warn'], { stdio: 'inherit' });
  const want = files(fresh).sort();
  const have = files(committed).sort();
  const stale = [...new Set([...want, ...have])].filter((f) => {
    try {
      return readFileSync(path.join(fresh, f), 'utf8') !== readFileSync(path.join(committed, f), 'utf8');
    } catch {
      return true;
    }
  });
  if (stale.length > 0) {
    console.error(`docs/api is out of date (${stale.join(', ')}); run npm run docs:api and commit the result`);
    process.exitCode = 1;
  }
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
