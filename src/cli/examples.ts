import type { Argv } from 'yargs';

/** One --help example: a command line as typed into a POSIX shell, and what it does. */
export type Example = readonly [command: string, what: string];

/**
 * The examples of every command, keyed by command path ('' is qmaint itself).
 * They are real: the test suite runs each one against a test database (in
 * this order, after seeding what they name: jobs 41-43, partitions of
 * 2026-01-01 and -02, files in the working directory) and expects exit 0;
 * the many partitions of `partitions create` come late, after explain and
 * health have judged the claim.
 * Examples that would run until stopped carry --drain or --exit-after.
 */
export const EXAMPLES: Record<string, readonly Example[]> = {
  '': [
    ['qmaint demo', 'a guided tour on a fresh database (the embedded PostgreSQL unless one is configured)'],
    ['qmaint migrate', 'install or upgrade the schema in the database DATABASE_URL (or PG*, or --database-url) names'],
    ['qmaint work --queue emails --handler ./send-email.mjs --drain', 'handle every ready job of a queue, then exit'],
    ['qmaint health', 'every check at once; exit 4 when something is critical'],
  ],
  migrate: [
    ['qmaint migrate --dry-run', 'print the SQL of pending migrations and changed function files'],
    ['qmaint migrate', 'apply them, in one transaction'],
    ['qmaint migrate --status', 'which migrations and function files are applied'],
  ],
  enqueue: [
    ['qmaint enqueue --queue emails --payload \'{"to":"ada@example.com","subject":"welcome"}\'', 'one job (quote the JSON for the shell)'],
    ['qmaint enqueue --queue emails --file emails.ndjson --max-retries 3', 'one job per line of a file, through COPY in one transaction'],
    ["qmaint enqueue --queue reports --payload '{}' --run-at 2030-01-01T09:00:00Z --priority 10", 'not before a time, ahead of lower priorities'],
    ["qmaint enqueue --queue emails --payload '{}' --dry-run", 'check the input and print the SQL, enqueue nothing'],
  ],
  work: [
    ['qmaint work --queue emails --handler ./send-email.mjs --drain', 'handle every ready job, then exit (without --drain: until SIGINT/SIGTERM)'],
    ['qmaint work --queue emails --handler ./send-email.mjs --concurrency 20 --batch 50 --drain', 'more handlers at once, smaller claims'],
    ['qmaint work --queue reports --handler ./report.mjs --mode transaction --drain', 'one job per transaction; the handler gets job.client'],
    ['qmaint work --tasks ./tasks.mjs --concurrency 20 --metrics-port 0 --drain', 'one worker for every queue the module maps; /metrics on a free port'],
  ],
  status: [
    ['qmaint status', 'queue depth per queue and status, oldest queued job, jobs per partition'],
    ['qmaint status --json', 'the same as one JSON document'],
    ['qmaint status --exact', 'count completed, failed and cancelled jobs too (reads every row)'],
  ],
  jobs: [
    ['qmaint jobs list --status failed', 'what failed, with the last error'],
    ['qmaint jobs retry --queue emails --dry-run', 'how many failed jobs of emails a retry would put back, and the SQL'],
  ],
  'jobs list': [
    ['qmaint jobs list --queue emails --status failed', 'failed jobs of one queue, newest first'],
    ['qmaint jobs list 41 42', 'these jobs (the same as --id 41 --id 42)'],
    ['qmaint jobs list --limit 500 --json', 'up to 500 jobs as JSON'],
  ],
  'jobs retry': [
    ['qmaint jobs retry 41 42', 'put these failed jobs back in the queue'],
    ['qmaint jobs retry --queue emails --dry-run', 'print the SQL and how many failed jobs of emails match'],
    ['qmaint jobs retry --queue emails', 'every failed job of emails'],
  ],
  'jobs cancel': [
    ['qmaint jobs cancel 43', 'cancel one job, queued or running (its worker aborts the handler)'],
    ['qmaint jobs cancel --queue reports --dry-run', 'how many queued and running jobs of reports match, and the SQL'],
    ['qmaint jobs cancel --queue reports', 'cancel every queued and running job of reports'],
  ],
  'jobs redrive': [
    ['qmaint jobs redrive --from emails-dead --to emails --dry-run', 'how many failed jobs of the dead-letter queue would go back, and the SQL'],
    ['qmaint jobs redrive --from emails-dead --to emails', 'put every failed job of emails-dead back on emails'],
  ],
  vacuum: [
    ['qmaint vacuum status', 'dead rows, last vacuum, bloat and xid age per partition'],
    ['qmaint vacuum tune --dry-run --sample 2s', 'proposed autovacuum settings and the SQL'],
  ],
  'vacuum tune': [
    ['qmaint vacuum tune --dry-run --sample 2s', 'measure churn for 2 s, show current and proposed settings and the SQL'],
    ['qmaint vacuum tune --sample 2s', 'apply them, each ALTER TABLE under lock_timeout'],
    ['qmaint vacuum tune --server-side', 'the same in one transaction in the server (what pg_cron runs; works through PgBouncer)'],
  ],
  'vacuum status': [
    ['qmaint vacuum status', 'per partition, and what holds the xmin horizon back'],
    ['qmaint vacuum status --bloat estimate --json', 'bloat from statistics only (no pgstattuple), as JSON'],
  ],
  'vacuum run': [
    ['qmaint vacuum run --dry-run', 'the VACUUM statements for every non-future partition'],
    ['qmaint vacuum run --analyze', 'vacuum and analyze them now, with progress'],
    ['qmaint vacuum run qmaint.jobs_p20260102 --freeze', 'freeze one partition'],
  ],
  explain: [
    ['qmaint explain dequeue', "run the consumer's claim under EXPLAIN ANALYZE (rolled back) and judge the plan"],
    ['qmaint explain dequeue --queue emails --plan', 'one queue, with the plan tree'],
    ['qmaint explain dequeue --no-analyze', 'plan only (what the qmaint_readonly role may run)'],
    ['qmaint explain dequeue --tasks ./tasks.mjs', "judge the claim of each queue of a worker's tasks module"],
  ],
  health: [
    ['qmaint health', 'every check; exit 4 on anything critical'],
    ['qmaint health --queue emails --json', 'explain the claim of one queue; one JSON document'],
    ["qmaint health --threshold 'xmin_horizon_warn=30min'", 'override one threshold (see docs/health.md)'],
  ],
  partitions: [
    ['qmaint partitions list', 'every partition with its state, rows, live jobs and profile'],
    ['qmaint partitions rotate --dry-run', 'the DDL a rotate would run, with the lock each statement takes'],
  ],
  'partitions apply': [
    ['qmaint partitions apply', 'every policy file in partitions/*.json'],
    ['qmaint partitions apply partitions/jobs.json --dry-run', 'check one file and print the SQL'],
  ],
  'partitions list': [
    ['qmaint partitions list', 'bounds, state, rows, live jobs, size and profile of each partition'],
    ['qmaint partitions list --table qmaint.jobs --json', 'one managed table, as JSON'],
  ],
  'partitions plan': [
    ['qmaint partitions plan', 'the ordered DDL rotate would run now'],
    ['qmaint partitions plan --table qmaint.jobs --json', 'as JSON: statement, lock level and reason of each step'],
  ],
  'partitions rotate': [
    ['qmaint partitions rotate --dry-run', 'print the plan and change nothing'],
    ['qmaint partitions rotate', 'make the runway, retire expired drained partitions'],
    ['qmaint partitions rotate --lock-timeout 5s --lock-retries 5', 'wait longer for locks on a busy table'],
  ],
  'partitions create': [
    ['qmaint partitions create --until 2027-03-31 --dry-run', 'print the partitions from now through March 2027'],
    ['qmaint partitions create --until 2027-03-31 --max 200', 'create them, refusing more than 200'],
  ],
  'partitions detach': [
    ['qmaint partitions detach qmaint.jobs_p20260101 --dry-run', 'print the DETACH ... CONCURRENTLY steps'],
    ['qmaint partitions detach qmaint.jobs_p20260101', 'detach a drained day and keep it as a table'],
  ],
  'partitions drop': [
    ['qmaint partitions drop qmaint.jobs_p20260102 --dry-run', 'print the detach and DROP steps'],
    ['qmaint partitions drop qmaint.jobs_p20260101', 'drop a table that qmaint detached'],
  ],
  'partitions compact': [
    ['qmaint partitions compact --dry-run', 'which queued jobs would move out of expired partitions'],
    ['qmaint partitions compact', 'move them, so retention can retire those partitions'],
  ],
  schedule: [
    ['qmaint schedule install --dry-run', 'the pg_cron jobs that install would create'],
    ['qmaint schedule daemon --exit-after 3s', 'the node-cron daemon instead (without --exit-after: until SIGTERM)'],
  ],
  'schedule install': [
    ['qmaint schedule install --dry-run', 'print the cron.schedule calls; pg_cron is the only backend to install'],
    ["qmaint schedule install --rotate-cron '*/5 * * * *' --health-cron off --dry-run", 'rotate every 5 minutes, no health job'],
  ],
  'schedule uninstall': [
    ['qmaint schedule uninstall --dry-run', 'print the cron.unschedule calls'],
    ['qmaint schedule uninstall --job-prefix qmaint-staging --dry-run', 'the jobs of another prefix'],
  ],
  'schedule list': [
    ['qmaint schedule list', 'pg_cron jobs, the daemon leader, recent maintenance runs'],
    ['qmaint schedule list --limit 20 --json', 'more runs, as JSON'],
  ],
  'schedule daemon': [
    ['qmaint schedule daemon --exit-after 3s', 'run the default schedules for 3 s (without --exit-after: until SIGTERM)'],
    ["qmaint schedule daemon --rescue-cron '*/10 * * * * *' --metrics-port 0 --exit-after 3s", 'rescue every 10 s; Prometheus /metrics on a free port'],
  ],
  ui: [
    ['qmaint ui --port 0 --exit-after 2s', 'serve the read-only dashboard on a free port for 2 s (without --exit-after: until Ctrl-C)'],
    ['qmaint ui --port 0 --allow-actions --exit-after 2s', 'with retry, cancel, redrive, pause, resume, rotate and tune'],
    ['qmaint ui --port 0 --token 0123456789abcdef0123 --json --exit-after 2s', 'require a token; print {"url": ...}'],
  ],
  roles: [
    ['qmaint roles install --dry-run', 'print the CREATE ROLE and GRANT statements'],
    ['qmaint roles install', 'create the four group roles and grant each its share'],
  ],
  'roles install': [
    ['qmaint roles install --dry-run', 'print the statements'],
    ['qmaint roles install', 'create the roles (idempotent)'],
    ['qmaint roles install --member worker=app_worker --dry-run', 'also make the login role app_worker a worker'],
  ],
  demo: [
    ['qmaint demo --dry-run', 'list the steps'],
    ['qmaint demo', 'the tour, in its own fresh database qmaint_demo'],
  ],
  embedded: [
    ['qmaint embedded status', 'where the server keeps its data and log, and a psql line that connects'],
    ['qmaint embedded status --show-password', 'the psql line with the password in it'],
    ['qmaint embedded start', 'start it (any command with no database configured does)'],
    ['qmaint embedded stop', 'stop it; the data stays'],
  ],
  config: [
    ['qmaint config', 'every setting with its value and where it came from; the connection, password masked'],
    ['qmaint config --concurrency 20', 'what a command given --concurrency 20 would use'],
    ['qmaint config --json', 'the same as one JSON document'],
  ],
  queues: [
    ['qmaint queues list', 'every queue: paused or not, depth and completions per minute'],
    ['qmaint queues pause emails', 'stop claiming from a queue; running jobs finish'],
  ],
  'queues list': [
    ['qmaint queues list', 'depth, state and dead-letter queue of every queue'],
    ['qmaint queues list --window 1m', 'completions per minute over the last minute'],
  ],
  'queues pause': [
    ['qmaint queues pause emails --dry-run', 'print the SQL'],
    ['qmaint queues pause emails', 'consumers stop claiming from emails'],
  ],
  'queues resume': [
    ['qmaint queues resume emails --dry-run', 'print the SQL'],
    ['qmaint queues resume emails', 'consumers claim from emails again'],
  ],
  'queues dead-letter': [
    ['qmaint queues dead-letter emails --to emails-dead', 'jobs of emails that fail for good move to emails-dead'],
    ['qmaint queues dead-letter emails --clear --dry-run', 'print the SQL that would stop moving them'],
  ],
  cron: [
    ["qmaint cron add nightly-report --schedule '30 2 * * *' --tz Europe/Berlin --queue reports", 'a job on queue reports every night at 02:30 Berlin time'],
    ['qmaint cron list', 'recurring jobs with their next runs'],
  ],
  'cron add': [
    ["qmaint cron add nightly-report --schedule '30 2 * * *' --tz Europe/Berlin --queue reports", 'every night at 02:30 in Berlin (DST handled)'],
    ["qmaint cron add heartbeat --schedule '*/5 * * * *' --queue pings --missed backfill:3", 'every 5 minutes; after downtime, up to 3 missed runs'],
    ['qmaint cron add hourly --schedule @hourly --queue reports --dry-run', 'check the expression and print the SQL'],
  ],
  'cron list': [
    ['qmaint cron list', 'every recurring job, its schedule read out and its next 3 runs'],
    ['qmaint cron list --next 5 --json', 'the next 5 runs of each, as JSON'],
  ],
  'cron remove': [
    ['qmaint cron remove hourly --dry-run', 'print the SQL'],
    ['qmaint cron remove heartbeat', 'remove a recurring job and its stored ticks'],
  ],
  'cron refill': [
    ['qmaint cron refill', 'store the ticks of the next days (the daemon does this itself)'],
    ['qmaint cron refill --json', 'how many ticks were added, as JSON'],
  ],
  completion: [
    ['qmaint completion bash', 'save as ~/.local/share/bash-completion/completions/qmaint'],
    ['qmaint completion zsh', 'save as _qmaint in a directory of $fpath'],
    ['qmaint completion fish', 'save as ~/.config/fish/completions/qmaint.fish'],
  ],
  adopt: [
    ["qmaint adopt --table public.legacy_jobs --column created_at --interval '1 day' --dry-run", 'the checks, then every statement with its lock level'],
    ["qmaint adopt --table public.legacy_jobs --column created_at --interval '1 day'", 'put the live table behind daily partitions'],
    ['qmaint adopt --table public.legacy_jobs --revert --dry-run', 'what undoing it would run'],
    ['qmaint adopt --table public.legacy_jobs --revert', 'the table as it was, with the rows written since'],
  ],
};

// yargs' builder types grow with every option; examples only need example().
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Parser = Argv<any>;

/**
 * Add the examples of one command path to the parser (yargs shows them in
 * that command's --help): what it does as a # comment, then the command on a
 * line of its own, so it is never wrapped into a column and pastes as it is.
 */
export function addExamples(y: Parser, path: string): void {
  for (const [command, what] of EXAMPLES[path] ?? []) y.example(`# ${what}`, '').example(command, '');
}

/**
 * The parser as command groups see it: every command they define gets the
 * examples of its path from EXAMPLES, added after its own builder ran, so the
 * command files stay free of them. Chained calls keep going through the wrapper.
 */
export function withExamples(y: Parser, parent = ''): Parser {
  const proxy: Parser = new Proxy(y, {
    get(target, key, receiver) {
      const value: unknown = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      if (key === 'command') {
        return (cmd: string | readonly string[], description: string, builder?: (b: Parser) => unknown, ...rest: unknown[]) => {
          const name = (typeof cmd === 'string' ? cmd : cmd[0]!).split(' ')[0]!;
          const path = parent ? `${parent} ${name}` : name;
          const wrapped = (b: Parser) => {
            const built = builder?.(withExamples(b, path));
            addExamples(b, path);
            ownOptionsFirst(b);
            return built;
          };
          (value as (...args: unknown[]) => unknown).call(target, cmd, description, wrapped, ...rest);
          return proxy;
        };
      }
      return (...args: unknown[]) => {
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        return result === target ? proxy : result;
      };
    },
  });
  return proxy;
}

/**
 * yargs lists the global options' group (kept from the top level) before the
 * default "Options:" group it makes while rendering; naming the command's own
 * options group here puts them first, then "Global options:".
 */
function ownOptionsFirst(b: Parser): void {
  // getOptions() and getGroups() are yargs API its typings leave out.
  const api = b as unknown as { getOptions(): { key: Record<string, unknown> }; getGroups(): Record<string, string[]> };
  const grouped = new Set(Object.values(api.getGroups()).flat());
  const own = Object.keys(api.getOptions().key).filter((key) => !grouped.has(key) && !/[A-Z]/.test(key) && key !== '_');
  if (own.length > 0) b.group(own, 'Options:');
}
