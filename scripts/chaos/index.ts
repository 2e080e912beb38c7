// npm run chaos [-- --jobs N --consumers N --idle-consumers N --duration S --kill-every S --terminate-every S --no-restart ...]
// The bigger, configurable version of test/chaos/ledger.test.ts on the same
// harness: prints a report and exits 1 when an invariant broke (or when the run
// did not inject the faults it was asked to), 2 on bad arguments.
import { parseArgs } from 'node:util';
import { ChaosRun, coverageProblems, formatReport, TEST_OPTIONS, type ChaosOptions } from './harness.js';

const USAGE = `usage: npm run chaos -- [options]
  --jobs N              jobs of the busy queue (default 60000)
  --idle-jobs N         jobs of the idle queue, enqueued after the restart (default 2000)
  --consumers N         consumers of the busy queue (default 6)
  --idle-consumers N    consumers of the idle queue (default 2)
  --concurrency N       handlers per consumer (default ${TEST_OPTIONS.concurrency})
  --batch N             jobs per claim (default ${TEST_OPTIONS.batch})
  --lease-seconds N     lease of a claimed job (default ${TEST_OPTIONS.leaseSeconds})
  --poll-max-ms N       longest idle poll of a consumer (default 250)
  --duration S          seconds over which the jobs are enqueued, with faults (default 45)
  --kill-every S        mean seconds between SIGKILLs, 0 for none (default 2)
  --terminate-every S   mean seconds between pg_terminate_backend calls, 0 for none (default 0.5)
  --restart-at F        restart the server after this fraction of the jobs (default 0.6)
  --no-restart          no server restart
  --tick S              seconds per virtual minute, i.e. per partition (default ${TEST_OPTIONS.tickMs / 1000})
  --drain-timeout S     longest wait for the drain once the producer is done (default 180)`;

function options(argv: string[]): ChaosOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      jobs: { type: 'string' },
      'idle-jobs': { type: 'string' },
      consumers: { type: 'string' },
      'idle-consumers': { type: 'string' },
      concurrency: { type: 'string' },
      batch: { type: 'string' },
      'lease-seconds': { type: 'string' },
      'poll-max-ms': { type: 'string' },
      duration: { type: 'string' },
      'kill-every': { type: 'string' },
      'terminate-every': { type: 'string' },
      'restart-at': { type: 'string' },
      'no-restart': { type: 'boolean' },
      tick: { type: 'string' },
      'drain-timeout': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  const num = (name: keyof typeof values, fallback: number, min: number, integer: boolean): number => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (typeof raw !== 'string' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
      throw new RangeError(`--${name} must be ${integer ? 'a whole number' : 'a number'} of at least ${min}, got ${String(raw)}`);
    return n;
  };
  const restartAt = num('restart-at', 0.6, 0, false);
  if (restartAt > 1) throw new RangeError(`--restart-at must be between 0 and 1, got ${restartAt}`);
  return {
    jobs: num('jobs', 60_000, 1, true),
    idleJobs: num('idle-jobs', 2_000, 0, true),
    busyConsumers: num('consumers', 6, 1, true),
    idleConsumers: num('idle-consumers', 2, 0, true),
    concurrency: num('concurrency', TEST_OPTIONS.concurrency, 1, true),
    batch: num('batch', TEST_OPTIONS.batch, 1, true),
    leaseSeconds: num('lease-seconds', TEST_OPTIONS.leaseSeconds, 1, true),
    pollMaxMs: num('poll-max-ms', 250, 1, true),
    produceMs: num('duration', 45, 1, false) * 1000,
    waveSize: TEST_OPTIONS.waveSize,
    killEveryMs: num('kill-every', 2, 0, false) * 1000,
    terminateEveryMs: num('terminate-every', 0.5, 0, false) * 1000,
    restartAt: values['no-restart'] ? null : restartAt,
    tickMs: num('tick', TEST_OPTIONS.tickMs / 1000, 0.5, false) * 1000,
    drainTimeoutMs: num('drain-timeout', 180, 1, false) * 1000,
    log: (line) => process.stderr.write(`[chaos] ${line}\n`),
  };
}

async function main(): Promise<number> {
  let o: ChaosOptions;
  try {
    o = options(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const run = new ChaosRun(o);
  const onSignal = () => void run.cleanup().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const report = await run.run();
  process.stdout.write(`\n${formatReport(report)}\n`);
  const problems = [...report.violations, ...coverageProblems(report).map((p) => `the run did not exercise what it should: ${p}`)];
  if (problems.length === 0) {
    process.stdout.write('\nevery invariant held: 0 lost, duplicates only after a fault, nothing left live, no consumer exited on its own\n');
    return 0;
  }
  process.stdout.write(`\n${problems.length} invariant(s) violated:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  return 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`chaos run failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
