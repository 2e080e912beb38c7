// npm run bench [-- SUITE... | --suite SUITE ... | --server embedded|pg15|both |
// --scale FACTOR | --write]: run the benchmark suites (all by default) and write
// their sections of docs/benchmarks.md.
//
// --server picks where: the embedded PostgreSQL 18 (the default; or the server
// at QMAINT_BENCH_DATABASE_URL), Debian's PostgreSQL 15 in a throwaway cluster
// of scripts/pg15.sh (root, Debian; or the server at QMAINT_BENCH_PG15_URL), or
// both, one after the other, each suite on each. A suite that makes sense on one
// server only (pooler needs PgBouncer, adopt compares with Debian's pg_partman)
// runs there whatever --server says, on the run's one PostgreSQL 15 cluster.
//
// --scale (or QMAINT_BENCH_SCALE) shrinks the suites' sizes for a quick run,
// e.g. --scale 0.1; such a run leaves docs/benchmarks.md alone unless --write.
import { SERVERS, BenchUsageError, sectionOf, startBenchServer, writeSection, type BenchServer, type BenchServerHandle, type BenchSuite } from './harness.js';
import { vacuumSuite } from './vacuum.js';
import { queueSuite } from './queue.js';
import { partitionsSuite } from './partitions.js';
import { adoptSuite } from './adopt.js';
import { peersSuite } from './peers.js';
import { poolerSuite } from './pooler.js';
import { scaleSuite } from './scale.js';

const suites: BenchSuite[] = [queueSuite, peersSuite, poolerSuite, partitionsSuite, vacuumSuite, scaleSuite, adoptSuite];

interface Options {
  wanted: string[];
  servers: BenchServer[];
  write: boolean;
}

function parse(args: string[]): Options {
  const wanted: string[] = [];
  let servers: BenchServer[] = ['embedded'];
  let write = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (flag: string) => (a === flag ? args[++i] : a.slice(flag.length + 1));
    if (a === '--suite' || a.startsWith('--suite=')) {
      const next = value('--suite');
      if (next === undefined) throw new BenchUsageError(`--suite needs a name; choose from ${suites.map((s) => s.id).join(', ')}`);
      wanted.push(...next.split(','));
    } else if (a === '--server' || a.startsWith('--server=')) {
      const next = value('--server');
      if (next === 'both') servers = [...SERVERS];
      else if (SERVERS.some((s) => s === next)) servers = [next as BenchServer];
      else throw new BenchUsageError(`--server needs embedded, pg15 or both, got ${next ?? 'nothing'}`);
    } else if (a === '--scale' || a.startsWith('--scale=')) {
      const text = value('--scale');
      const factor = Number(text);
      if (text === undefined || !Number.isFinite(factor) || factor <= 0)
        throw new BenchUsageError(`--scale needs a positive number (1 is full size, 0.1 a tenth), got ${text ?? 'nothing'}`);
      process.env.QMAINT_BENCH_SCALE = String(factor);
    } else if (a === '--write') write = true;
    else if (a.startsWith('-')) throw new BenchUsageError(`unknown option ${a}; use --suite, --server, --scale or --write`);
    else wanted.push(a);
  }
  const unknown = wanted.filter((w) => !suites.some((s) => s.id === w));
  if (unknown.length > 0) throw new BenchUsageError(`unknown benchmark suite ${unknown.join(', ')}; choose from ${suites.map((s) => s.id).join(', ')}`);
  return { wanted, servers, write };
}

/** The servers a suite runs on in this run: those asked for that it makes sense on, else the one it makes sense on. */
function serversOf(suite: BenchSuite, asked: BenchServer[]): BenchServer[] {
  const own = suite.servers ?? SERVERS;
  const both = asked.filter((s) => own.includes(s));
  return both.length > 0 ? both : [own[0]!];
}

async function run(): Promise<number> {
  let options: Options;
  try {
    options = parse(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  const selected = options.wanted.length > 0 ? suites.filter((s) => options.wanted.includes(s.id)) : suites;
  const scale = Number(process.env.QMAINT_BENCH_SCALE ?? '1') || 1;
  const write = scale === 1 || options.write;
  let sections = 0;
  let missed = 0;
  let current: BenchServerHandle | undefined;
  // Ctrl-C or a kill stops the server the run started (a PostgreSQL 15 cluster would run on otherwise).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`${signal}: stopping the benchmark server\n`);
      void (current?.kill() ?? Promise.resolve()).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }
  for (const server of SERVERS) {
    const here = selected.filter((s) => serversOf(s, options.servers).includes(server));
    if (here.length === 0) continue;
    let handle: BenchServerHandle;
    try {
      handle = await startBenchServer(server);
    } catch (err) {
      if (!(err instanceof BenchUsageError)) throw err;
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    current = handle;
    process.stderr.write(`== on ${handle.provenance}\n`);
    try {
      for (const suite of here) {
        const { title } = sectionOf(suite, server);
        process.stderr.write(`== ${title}\n`);
        const result = await suite.run(handle.ctx);
        if (write) writeSection(suite, handle, result);
        process.stdout.write(`\n## ${title}\n\n_${handle.provenance}_\n\n${result.markdown.trim()}\n`);
        sections++;
        if (result.targetsMet === false) missed++;
      }
    } finally {
      await handle.stop();
      current = undefined;
    }
  }
  process.stdout.write(
    `\n${sections} section(s) run; ${missed === 0 ? 'every target met' : `${missed} section(s) missed a target`}; ` +
      (write ? 'docs/benchmarks.md updated\n' : `scale ${scale}: docs/benchmarks.md left as it is (only a scale 1 run writes it; --write writes anyway)\n`),
  );
  return 0;
}

run().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`benchmark failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
