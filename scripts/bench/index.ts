// npm run bench [-- SUITE... | --suite SUITE ... | --scale FACTOR]: run the
// benchmark suites (all by default) on a fresh embedded PostgreSQL and write
// their sections of docs/benchmarks.md. --scale (or QMAINT_BENCH_SCALE) shrinks
// the suites' sizes for a quick run, e.g. --scale 0.1.
import { gitRevision, machineInfo, startBenchServer, writeSection, type BenchSuite } from './harness.js';
import { vacuumSuite } from './vacuum.js';
import { queueSuite } from './queue.js';
import { partitionsSuite } from './partitions.js';
import { adoptSuite } from './adopt.js';
import { peersSuite } from './peers.js';
import { poolerSuite } from './pooler.js';
import { scaleSuite } from './scale.js';

const suites: BenchSuite[] = [queueSuite, peersSuite, poolerSuite, partitionsSuite, vacuumSuite, scaleSuite, adoptSuite];

async function run(): Promise<number> {
  const wanted: string[] = [];
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--suite') {
      const next = args[++i];
      if (next === undefined) {
        process.stderr.write(`--suite needs a name; choose from ${suites.map((s) => s.id).join(', ')}\n`);
        return 2;
      }
      wanted.push(...next.split(','));
    } else if (a.startsWith('--suite=')) wanted.push(...a.slice('--suite='.length).split(','));
    else if (a === '--scale' || a.startsWith('--scale=')) {
      const text = a === '--scale' ? args[++i] : a.slice('--scale='.length);
      const factor = Number(text);
      if (text === undefined || !Number.isFinite(factor) || factor <= 0) {
        process.stderr.write(`--scale needs a positive number (1 is full size, 0.1 a tenth), got ${text ?? 'nothing'}\n`);
        return 2;
      }
      process.env.QMAINT_BENCH_SCALE = String(factor);
    } else if (!a.startsWith('-')) wanted.push(a);
  }
  const unknown = wanted.filter((w) => !suites.some((s) => s.id === w));
  if (unknown.length > 0) {
    process.stderr.write(`unknown benchmark suite ${unknown.join(', ')}; choose from ${suites.map((s) => s.id).join(', ')}\n`);
    return 2;
  }
  const selected = wanted.length > 0 ? suites.filter((s) => wanted.includes(s.id)) : suites;
  const server = await startBenchServer();
  const header = `${machineInfo(server.ctx.serverVersion)}\n- Commit ${gitRevision()}, run on ${new Date().toISOString().slice(0, 10)}`;
  let missed = 0;
  try {
    for (const suite of selected) {
      process.stderr.write(`== ${suite.title}\n`);
      const result = await suite.run(server.ctx);
      writeSection(suite, result, header);
      process.stdout.write(`\n## ${suite.title}\n\n${result.markdown.trim()}\n`);
      if (result.targetsMet === false) missed++;
    }
  } finally {
    await server.stop();
  }
  process.stdout.write(
    `\n${selected.length} suite(s) run; ${missed === 0 ? 'every target met' : `${missed} suite(s) missed a target (see docs/benchmarks.md)`}\n`,
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
