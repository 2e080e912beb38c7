import pg from 'pg';
import { redactUrl, withDatabase } from '../config.js';
import type { Db } from '../db.js';
import { badInput, badOption, QmaintError, sqlState, toQmaintError } from '../errors.js';
import { newClientFor } from '../failover.js';
import { TASKS, type Schedules, type TaskName } from './tasks.js';

/** A connection to the database pg_cron lives in, checked to be usable for the queue database. */
export interface PgCronSite {
  client: pg.Client;
  /** cron.database_name: where pg_cron keeps its jobs. */
  cronDatabase: string;
  /** The queue database the jobs run in. */
  queueDatabase: string;
  /** pg_cron's extension version. */
  version: string;
  /** Where the pg_cron connection points, password masked. */
  display: string;
  /** cron.schedule_in_database exists (pg_cron 1.4+). */
  inDatabase: boolean;
  /** End the pg_cron connection. */
  close(): Promise<void>;
}

/** pg_cron cannot be used as things stand: why, and the steps that fix it. */
export function pgCronProblem(reason: string, steps: string[], code: 'config' | 'permission' = 'config', option?: string): QmaintError {
  const numbered = steps.map((s, i) => `(${i + 1}) ${s}`).join(' ');
  return new QmaintError(code, `${reason}; to fix it: ${numbered}`, { details: { reason, steps }, option });
}

const quoteLiteral = (value: string) => `'${value.replace(/'/g, "''")}'`;
const quoteIdentText = (value: string) => `"${value.replace(/"/g, '""')}"`;

interface ServerFacts {
  database: string;
  cron_database: string | null;
  available: boolean;
  version_num: string;
  started: Date;
}

/**
 * Find and check pg_cron for the queue database behind `queue`. The pg_cron
 * connection is cronDatabaseUrl when given, else the same server with the database
 * named by cron.database_name. Throws a `config` error carrying the
 * exact steps when pg_cron is missing, not preloaded, in another database than
 * cronDatabaseUrl names, too old to run jobs in another database, or on another server.
 *
 * @param queue - the queue database
 * @param cronDatabaseUrl - a connection URL to the database pg_cron keeps its jobs in (cron.database_name), when the queue's connection cannot reach it as it is
 * @returns the site, with a connection of its own: close it with {@link PgCronSite.close}
 * @throws {@link QmaintError} `config` (or `permission`) whose message and `details.steps` say how to fix it; `options: ['cronDatabaseUrl']` when that URL is what is wrong
 */
export async function locatePgCron(queue: Db, cronDatabaseUrl?: string): Promise<PgCronSite> {
  const facts = (
    await queue.query<ServerFacts>(
      `SELECT current_database() AS database,
              (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
              EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') AS available,
              current_setting('server_version_num') AS version_num,
              pg_postmaster_start_time() AS started`,
    )
  ).rows[0]!;
  const major = Math.floor(Number(facts.version_num) / 10000);
  if (facts.cron_database === null) throw notPreloaded(facts, major);

  const client = await connectCron(queue, facts.cron_database, cronDatabaseUrl);
  try {
    const site = await checkCronDatabase(client, facts, cronDatabaseUrl);
    return {
      ...site,
      client,
      display: cronDatabaseUrl ? redactUrl(cronDatabaseUrl) : `${queue.target.host}:${queue.target.port}/${facts.cron_database}`,
      close: () => client.end(),
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}

function notPreloaded(facts: ServerFacts, major: number): QmaintError {
  const db = facts.database;
  const preload = `add pg_cron to shared_preload_libraries and set cron.database_name = '${db}' in postgresql.conf (or ALTER SYSTEM SET shared_preload_libraries = 'pg_cron'; ALTER SYSTEM SET cron.database_name = '${db}')`;
  const rest = [
    'restart PostgreSQL',
    `run CREATE EXTENSION pg_cron; in database ${db} as a superuser`,
    'install the pg_cron jobs again (or skip pg_cron: the qmaint daemon needs no extension)',
  ];
  if (!facts.available) {
    return pgCronProblem(`pg_cron is not installed on this PostgreSQL ${major} server`, [
      `install the pg_cron package (Debian/Ubuntu: apt install postgresql-${major}-cron; RHEL: dnf install pg_cron_${major})`,
      preload,
      ...rest,
    ]);
  }
  return pgCronProblem('pg_cron is installed on this server but not loaded (it must be in shared_preload_libraries)', [preload, ...rest]);
}

async function connectCron(queue: Db, cronDatabase: string, cronUrl?: string): Promise<pg.Client> {
  const extra = { application_name: 'qmaint', connectionTimeoutMillis: queue.clientConfig().connectionTimeoutMillis };
  // Several hosts: the cron database is reached on the node that is primary now, as the queue's is.
  const client = cronUrl
    ? newClientFor(cronUrl, 'the pg_cron database URL', extra)
    : queue.url
      ? newClientFor(withDatabase(queue.url, cronDatabase), 'the pg_cron database URL', extra)
      : // libpq variables: node-pg reads PGHOST etc. itself; only the database differs.
        new pg.Client({ ...extra, database: cronDatabase });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    const error = toQmaintError(err, queue.target);
    throw new QmaintError(error.code, `cannot reach the pg_cron database ${cronDatabase}: ${error.message}`, { cause: err });
  }
  return client;
}

async function checkCronDatabase(client: pg.Client, queue: ServerFacts, cronDatabaseUrl: string | undefined) {
  const { rows } = await client.query<{
    database: string;
    cron_database: string | null;
    started: Date;
    version: string | null;
    in_database: boolean;
    usage: boolean | null;
    has_queue_db: boolean;
    role: string;
  }>(
    `SELECT current_database() AS database,
            (SELECT setting FROM pg_settings WHERE name = 'cron.database_name') AS cron_database,
            pg_postmaster_start_time() AS started,
            (SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS version,
            to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NOT NULL AS in_database,
            CASE WHEN to_regnamespace('cron') IS NULL THEN NULL ELSE has_schema_privilege('cron', 'USAGE') END AS usage,
            EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS has_queue_db,
            current_user AS role`,
    [queue.database],
  );
  const here = rows[0]!;
  const cronDb = queue.cron_database!;
  if (here.started.getTime() !== queue.started.getTime() || !here.has_queue_db) {
    throw pgCronProblem(
      `cronDatabaseUrl points at another server than the queue database ${queue.database}, and pg_cron only runs jobs on its own server`,
      [`point cronDatabaseUrl at database ${cronDb} on the queue's server, or leave it out`],
      'config',
      'cronDatabaseUrl',
    );
  }
  if (here.database !== cronDb) {
    throw pgCronProblem(
      `cron.database_name is ${cronDb}, but ${cronDatabaseUrl ? 'cronDatabaseUrl' : 'the connection'} points at database ${here.database}`,
      [
        `point cronDatabaseUrl at database ${cronDb} (or leave it out), or set cron.database_name = '${here.database}' in postgresql.conf and restart PostgreSQL`,
        `run CREATE EXTENSION pg_cron; in the database cron.database_name names, as a superuser`,
      ],
      'config',
      'cronDatabaseUrl',
    );
  }
  if (here.version === null) {
    throw pgCronProblem(`pg_cron is loaded but its extension is not created in database ${cronDb}`, [
      `connect to database ${cronDb} as a superuser and run CREATE EXTENSION pg_cron;`,
      `if ${here.role} is not a superuser: GRANT USAGE ON SCHEMA cron TO ${quoteIdentText(here.role)};`,
      'install the pg_cron jobs again',
    ]);
  }
  if (!here.usage) {
    throw pgCronProblem(
      `role ${here.role} may not use pg_cron in database ${cronDb}`,
      [`as a superuser in ${cronDb}: GRANT USAGE ON SCHEMA cron TO ${quoteIdentText(here.role)};`],
      'permission',
    );
  }
  if (queue.database !== cronDb && !here.in_database) {
    throw pgCronProblem(`pg_cron ${here.version} in ${cronDb} cannot run jobs in another database (${queue.database}); that needs pg_cron 1.4 or later`, [
      `install pg_cron 1.4+ and run ALTER EXTENSION pg_cron UPDATE; in database ${cronDb}`,
      `or set cron.database_name = '${queue.database}' and restart, so pg_cron lives in the queue database`,
    ]);
  }
  return { cronDatabase: cronDb, queueDatabase: queue.database, version: here.version, inDatabase: here.in_database };
}

// ---------------------------------------------------------------------------
// Jobs

/** A pg_cron job registered for a qmaint task. */
export interface CronJob {
  jobid: number;
  name: string;
  schedule: string;
  command: string;
  database: string;
  username: string;
  active: boolean;
}

/** One run of a pg_cron job (cron.job_run_details). */
export interface CronJobRun {
  runid: number;
  status: string | null;
  message: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

export function jobName(prefix: string, task: TaskName): string {
  return `${prefix}-${task}`;
}

export function checkJobPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_-]{1,50}$/.test(prefix)) {
    throw badOption(
      'jobPrefix',
      `jobPrefix ${JSON.stringify(prefix)} may only hold letters, digits, "_" and "-" (at most 50); e.g. qmaint or qmaint-${'orders'}`,
    );
  }
  return prefix;
}

/** The command a job runs. Task names are a fixed set, so the literal is safe. */
export function taskCommand(task: TaskName): string {
  return `SELECT qmaint.run_task('${task}')`;
}

interface JobRow {
  jobid: string;
  jobname: string;
  schedule: string;
  command: string;
  database: string;
  username: string;
  active: boolean;
}

const toJob = (r: JobRow): CronJob => ({
  jobid: Number(r.jobid),
  name: r.jobname,
  schedule: r.schedule,
  command: r.command,
  database: r.database,
  username: r.username,
  active: r.active,
});

/** The current user's jobs with these names (any database). */
async function jobsNamed(site: PgCronSite, names: string[]): Promise<CronJob[]> {
  const { rows } = await site.client.query<JobRow>(
    `SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job
      WHERE jobname = ANY($1::text[]) AND username = current_user ORDER BY jobname`,
    [names],
  );
  return rows.map(toJob);
}

/**
 * Every job that runs qmaint maintenance in the queue database, whatever its name.
 *
 * @param site - from {@link locatePgCron}
 */
export async function queueJobs(site: PgCronSite): Promise<CronJob[]> {
  const { rows } = await site.client.query<JobRow>(
    `SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job
      WHERE database = $1 AND command ~ 'qmaint\\.run_task\\(' ORDER BY jobname, jobid`,
    [site.queueDatabase],
  );
  return rows.map(toJob);
}

/**
 * The last `limit` runs of each job from cron.job_run_details (newest first).
 *
 * @param site - from {@link locatePgCron}
 * @param jobids - the jobs
 * @param limit - runs per job
 */
export async function jobRuns(site: PgCronSite, jobids: number[], limit: number): Promise<Map<number, CronJobRun[]>> {
  const out = new Map<number, CronJobRun[]>(jobids.map((id) => [id, []]));
  const exists = await site.client.query<{ ok: boolean }>(`SELECT to_regclass('cron.job_run_details') IS NOT NULL AS ok`);
  if (!exists.rows[0]?.ok || jobids.length === 0) return out;
  const { rows } = await site.client.query<{
    jobid: string;
    runid: string;
    status: string | null;
    return_message: string | null;
    start_time: Date | null;
    end_time: Date | null;
  }>(
    `SELECT d.jobid, d.runid, d.status, d.return_message, d.start_time, d.end_time
       FROM unnest($1::bigint[]) AS j(id)
      CROSS JOIN LATERAL (SELECT * FROM cron.job_run_details r WHERE r.jobid = j.id ORDER BY r.runid DESC LIMIT $2) d
      ORDER BY d.runid DESC`,
    [jobids, limit],
  );
  for (const r of rows) {
    out.get(Number(r.jobid))?.push({
      runid: Number(r.runid),
      status: r.status,
      message: r.return_message,
      startedAt: r.start_time ? r.start_time.toISOString() : null,
      finishedAt: r.end_time ? r.end_time.toISOString() : null,
    });
  }
  return out;
}

/** One change install or uninstall makes to cron.job. */
export interface JobChange {
  task: TaskName;
  name: string;
  /** The schedule after the change (null: no job). */
  schedule: string | null;
  action: 'create' | 'update' | 'unchanged' | 'remove' | 'absent';
  jobid: number | null;
  /** The exact SQL, values inlined as literals (what --dry-run prints); null when nothing runs. */
  statement: string | null;
  lockLevel: string;
  sql: string | null;
  params: unknown[];
}

const JOB_LOCK = 'ROW EXCLUSIVE on cron.job (no lock on queue tables)';

function scheduleChange(site: InstallTarget, task: TaskName, name: string, schedule: string, existing: CronJob | undefined): JobChange {
  const command = taskCommand(task);
  const same = existing && existing.schedule === schedule && existing.command === command && existing.database === site.queueDatabase && existing.active;
  const base = { task, name, schedule, jobid: existing?.jobid ?? null, lockLevel: JOB_LOCK };
  if (same) return { ...base, action: 'unchanged', statement: null, sql: null, params: [] };
  const action = existing ? 'update' : 'create';
  if (site.inDatabase) {
    return {
      ...base,
      action,
      sql: 'SELECT cron.schedule_in_database($1, $2, $3, $4) AS jobid',
      params: [name, schedule, command, site.queueDatabase],
      statement: `SELECT cron.schedule_in_database(${[name, schedule, command, site.queueDatabase].map(quoteLiteral).join(', ')})`,
    };
  }
  return {
    ...base,
    action,
    sql: 'SELECT cron.schedule($1, $2, $3) AS jobid',
    params: [name, schedule, command],
    statement: `SELECT cron.schedule(${[name, schedule, command].map(quoteLiteral).join(', ')})`,
  };
}

function removeChange(task: TaskName, name: string, existing: CronJob | undefined): JobChange {
  if (!existing) return { task, name, schedule: null, action: 'absent', jobid: null, statement: null, lockLevel: JOB_LOCK, sql: null, params: [] };
  return {
    task,
    name,
    schedule: null,
    action: 'remove',
    jobid: existing.jobid,
    statement: `SELECT cron.unschedule(${existing.jobid})`,
    lockLevel: JOB_LOCK,
    sql: 'SELECT cron.unschedule($1::bigint)',
    params: [existing.jobid],
  };
}

/** What a plan needs to know about where the jobs go. */
export type InstallTarget = Pick<PgCronSite, 'queueDatabase' | 'inDatabase'>;

/**
 * What installing these schedules changes, given the current user's jobs with
 * these names: each task's job is created, updated in place (same jobid), left
 * alone, or removed when its schedule is off. A same-named job that runs in
 * another database is refused, so installing for one database never takes over
 * another database's jobs.
 */
export function installChanges(target: InstallTarget, schedules: Schedules, prefix: string, jobs: CronJob[]): JobChange[] {
  const existing = new Map(jobs.map((j) => [j.name, j]));
  for (const job of jobs) {
    if (job.database !== target.queueDatabase) {
      throw badOption(
        'jobPrefix',
        `pg_cron job ${job.name} already runs in database ${job.database}; uninstall the pg_cron jobs of that database first, or choose another jobPrefix (e.g. qmaint-${target.queueDatabase.replace(/[^A-Za-z0-9_-]/g, '')}) to keep both`,
      );
    }
  }
  return TASKS.map((task) => {
    const name = jobName(prefix, task);
    const schedule = schedules[task];
    return schedule === null ? removeChange(task, name, existing.get(name)) : scheduleChange(target, task, name, schedule, existing.get(name));
  });
}

/**
 * installChanges against the jobs pg_cron holds now.
 *
 * Changes nothing.
 *
 * @param site - from {@link locatePgCron}
 * @param schedules - each task's cron expression, or null for off
 * @param prefix - job names are `prefix-task`
 * @throws {@link QmaintError} `bad_input` when a job of that name runs in another database (`options: ['jobPrefix']`)
 */
export async function planInstall(site: PgCronSite, schedules: Schedules, prefix: string): Promise<JobChange[]> {
  return installChanges(
    site,
    schedules,
    prefix,
    await jobsNamed(
      site,
      TASKS.map((t) => jobName(prefix, t)),
    ),
  );
}

/**
 * What uninstalling removes: this prefix's jobs that run in the queue database.
 *
 * Changes nothing.
 *
 * @param site - from {@link locatePgCron}
 * @param prefix - job names are `prefix-task`
 */
export async function planUninstall(site: PgCronSite, prefix: string): Promise<JobChange[]> {
  const names = TASKS.map((t) => jobName(prefix, t));
  const existing = new Map((await jobsNamed(site, names)).filter((j) => j.database === site.queueDatabase).map((j) => [j.name, j]));
  return TASKS.map((task) => removeChange(task, jobName(prefix, task), existing.get(jobName(prefix, task))));
}

/**
 * Apply the changes in one transaction: all of them or none. Returns them with their job ids.
 *
 * @param site - from {@link locatePgCron}
 * @param changes - from {@link planInstall} or {@link planUninstall}
 */
export async function applyChanges(site: PgCronSite, changes: JobChange[]): Promise<JobChange[]> {
  const done: JobChange[] = [];
  await site.client.query('BEGIN');
  try {
    for (const change of changes) {
      if (!change.sql) {
        done.push(change);
        continue;
      }
      let result: pg.QueryResult<{ jobid?: string }>;
      try {
        result = await site.client.query<{ jobid?: string }>(change.sql, change.params);
      } catch (err) {
        if (/invalid schedule/i.test((err as Error).message)) {
          throw badInput(
            `pg_cron ${site.version} refused the ${change.task} schedule ${JSON.stringify(change.schedule)} (${(err as Error).message}); use a 5-field cron expression`,
            { task: change.task },
          );
        }
        throw err;
      }
      const jobid = result.rows[0]?.jobid;
      done.push({ ...change, jobid: change.action === 'remove' ? change.jobid : jobid !== undefined ? Number(jobid) : change.jobid });
    }
    await site.client.query('COMMIT');
  } catch (err) {
    await site.client.query('ROLLBACK').catch(() => undefined);
    if (err instanceof QmaintError) throw err;
    if (sqlState(err) === '42501') throw toQmaintError(err);
    throw err;
  }
  return done;
}
