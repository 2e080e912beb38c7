// One producer or consumer of a seed-style queue table (id, payload, status,
// retry_count, created_at), run as its own process during `qmaint adopt` by
// test/adopt/ and the adopt benchmark. It works until a line arrives on stdin,
// then prints one JSON line: what it did, every error, and the longest time
// one statement took (its stall).
//   node scripts/adopt/load.mjs producer|consumer DATABASE_URL TABLE TAG
// Producers insert one row at a time (payload {"tag", "n"}); consumers claim
// with the classic CTE (FOR UPDATE SKIP LOCKED, LIMIT 10) and mark rows done.
import pg from 'pg';

const [role, url, table, tag] = process.argv.slice(2);
const client = new pg.Client({ connectionString: url, application_name: `adopt-load-${role}` });
await client.connect();
let stop = false;
process.stdin.on('data', () => (stop = true));
process.stdin.on('end', () => (stop = true));

const ids = [];
const errors = [];
let ops = 0;
let maxMs = 0;
let maxAt = null;
const claim = `WITH c AS (SELECT id, created_at FROM ${table} WHERE status = 'queued' ORDER BY created_at LIMIT 10 FOR UPDATE SKIP LOCKED)
  UPDATE ${table} j SET status = 'done', retry_count = j.retry_count + 0 FROM c WHERE j.id = c.id AND j.created_at = c.created_at RETURNING j.id`;
const insert = `INSERT INTO ${table} (payload, status) VALUES ($1, 'queued') RETURNING id`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

while (!stop) {
  const started = performance.now();
  try {
    if (role === 'producer') {
      const { rows } = await client.query(insert, [JSON.stringify({ tag, n: ops })]);
      ids.push(rows[0].id);
    } else {
      const { rows } = await client.query(claim);
      for (const r of rows) ids.push(r.id);
    }
  } catch (err) {
    errors.push(`${err.code ?? ''} ${err.message}`);
  }
  const ms = performance.now() - started;
  if (ms > maxMs) {
    maxMs = ms;
    maxAt = new Date().toISOString();
  }
  ops++;
  await sleep(role === 'producer' ? 2 : 5);
}
await client.end();
process.stdout.write(JSON.stringify({ role, ops, ids, errors, maxMs: Math.round(maxMs), maxAt }) + '\n');
