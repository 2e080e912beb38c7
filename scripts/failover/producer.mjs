// A producer of the failover run (scripts/failover/harness.ts): enqueues one
// job at a time through the library with the multi-host DATABASE_URL, and
// prints "ack N ID" on stdout only once qmaint.enqueue() has returned, that is
// once the commit was acknowledged. A failed enqueue is retried with the same
// N (an acknowledgement lost in flight may then leave two jobs for one N).
import { connect, enqueue } from '../../dist/index.js';

const base = Number(process.env.FAILOVER_PRODUCER_BASE ?? 0);
const queue = process.env.FAILOVER_QUEUE ?? 'failover';
let stopping = false;
process.on('SIGTERM', () => (stopping = true));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let db = null;
for (let n = base; !stopping;) {
  try {
    db ??= await connect({ databaseUrl: process.env.DATABASE_URL, max: 2, applicationName: 'failover-producer', connectTimeoutMs: 2000 });
    const id = await enqueue(db, queue, { n }, { maxRetries: 100 });
    process.stdout.write(`ack ${n} ${id}\n`);
    n++;
    await sleep(2);
  } catch (err) {
    process.stderr.write(`enqueue ${n} failed: ${err.message}\n`);
    await sleep(100);
  }
}
await db?.close();
