/**
 * The lease keeper: everything about the leases of the jobs a consumer
 * holds. It extends them (the heartbeat) and finds the attempts that lost
 * their job, gives unstarted jobs back, runs the rescuer of expired leases,
 * and records the queue's backoff so the rescuer uses it.
 */
import type { Queryable } from '../../db.js';
import { NOTIFY_CHANNEL } from '../enqueue.js';
import { HEARTBEAT_SQL, RECORD_BACKOFF_SQL, RELEASE_SQL, RESCUE_SQL } from '../statements.js';
import { fences, partitionKeys, type Attempt } from './job.js';

/** What a LeaseKeeper needs to know of its consumer. */
export interface LeaseKeeperOptions {
  queue: string;
  workerId: string;
  /** Each extension sets the lease to this many seconds from now. */
  leaseSeconds: number;
}

/** What rescue_expired() did: jobs put back in their queue, and jobs failed for good. */
export interface RescueResult {
  requeued: number;
  failed: number;
}

/** Lease statements of one consumer. All are fenced by attempt (statements.ts): a stale attempt changes nothing. */
export class LeaseKeeper {
  /**
   * @param db - where the statements run (autocommit).
   * @param options - the consumer's queue, worker id and lease.
   */
  constructor(
    private readonly db: Queryable,
    private readonly options: LeaseKeeperOptions,
  ) {}

  /**
   * Extend the lease of every attempt given; returns those whose job this
   * attempt no longer holds (the lease ran out and it was rescued, claimed
   * again, or finished by someone else). Throws what the statement throws.
   */
  async extend(held: readonly Attempt[]): Promise<Attempt[]> {
    if (held.length === 0) return [];
    const { rows } = await this.db.query<{ id: string }>(HEARTBEAT_SQL, [
      held.map((h) => h.row.id),
      partitionKeys(held),
      fences(held),
      this.options.workerId,
      this.options.leaseSeconds,
      this.options.queue,
    ]);
    const kept = new Set(rows.map((r) => r.id));
    return held.filter((h) => !kept.has(h.row.id));
  }

  /**
   * Put claimed, never started jobs back in the queue as they were
   * (retry_count unchanged), then NOTIFY the queue so other consumers look.
   * Returns how many went back. Throws what the release throws; a failed
   * NOTIFY is passed to `onNotifyError` instead (the jobs are back either way).
   */
  async release(held: readonly Attempt[], onNotifyError: (err: unknown) => void = () => undefined): Promise<number> {
    if (held.length === 0) return 0;
    const { rows } = await this.db.query<{ id: string }>(RELEASE_SQL, [
      held.map((h) => h.row.id),
      partitionKeys(held),
      fences(held),
      this.options.workerId,
      this.options.queue,
    ]);
    if (rows.length > 0) await this.db.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, this.options.queue]).catch(onNotifyError);
    return rows.length;
  }

  /**
   * Run qmaint.rescue_expired() once: expired leases (of any queue) back to
   * their queue or failed. Null when another rescue was running (it skipped).
   */
  async rescue(): Promise<RescueResult | null> {
    const { rows } = await this.db.query<{ result: { requeued?: number; failed?: number; skipped?: boolean } }>(RESCUE_SQL);
    const r = rows[0]?.result;
    if (!r || r.skipped) return null;
    return { requeued: r.requeued ?? 0, failed: r.failed ?? 0 };
  }

  /** Record the consumer's retry backoff for its queue, so rescue_expired() puts its expired leases back with it. */
  async recordBackoff(baseMs: number, capMs: number): Promise<void> {
    await this.db.query(RECORD_BACKOFF_SQL, [this.options.queue, baseMs / 1000, capMs / 1000]);
  }
}
