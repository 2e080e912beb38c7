/**
 * The lease keeper: everything about the leases of the jobs a consumer
 * holds. It extends them (the heartbeat) and finds the attempts that lost
 * their job, gives unstarted jobs back, runs the rescuer of expired leases,
 * and records the queue's backoff so the rescuer uses it.
 */
import type { Queryable } from '../../db.js';
import { NOTIFY_CHANNEL } from '../enqueue.js';
import { CANCELLED_SQL, HEARTBEAT_SQL, RECORD_BACKOFF_SQL, RELEASE_SQL, RESCUE_SQL } from '../statements.js';
import { byQueue, fences, partitionKeys, type Attempt } from './job.js';

/** What a LeaseKeeper needs to know of its consumer. */
export interface LeaseKeeperOptions {
  workerId: string;
  /** Each extension sets the lease to this many seconds from now. */
  leaseSeconds: number;
}

/** What rescue_expired() did: jobs put back in their queue, and jobs failed for good. */
export interface RescueResult {
  requeued: number;
  failed: number;
}

/**
 * Lease statements of one consumer. All are fenced by attempt (statements.ts):
 * a stale attempt changes nothing. Each statement names one queue: attempts
 * of several queues are sent one statement per queue.
 */
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
    const lost: Attempt[] = [];
    for (const [queue, group] of byQueue(held)) {
      const { rows } = await this.db.query<{ id: string }>(HEARTBEAT_SQL, [
        group.map((h) => h.row.id),
        partitionKeys(group),
        fences(group),
        this.options.workerId,
        this.options.leaseSeconds,
        queue,
      ]);
      const kept = new Set(rows.map((r) => r.id));
      for (const h of group) if (!kept.has(h.row.id)) lost.push(h);
    }
    return lost;
  }

  /**
   * Of attempts that no longer hold their job, those whose job was cancelled
   * (the rest lost it to an expired lease). Throws what the statement throws.
   */
  async cancelled(held: readonly Attempt[]): Promise<Set<Attempt>> {
    const out = new Set<Attempt>();
    for (const [queue, group] of byQueue(held)) {
      const { rows } = await this.db.query<{ id: string }>(CANCELLED_SQL, [group.map((h) => h.row.id), partitionKeys(group), fences(group), queue]);
      const ids = new Set(rows.map((r) => r.id));
      for (const h of group) if (ids.has(h.row.id)) out.add(h);
    }
    return out;
  }

  /**
   * Put claimed, never started jobs back in the queue as they were
   * (retry_count unchanged), then NOTIFY the queue so other consumers look.
   * Returns how many went back. Throws what the release throws; a failed
   * NOTIFY is passed to `onNotifyError` instead (the jobs are back either way).
   */
  async release(held: readonly Attempt[], onNotifyError: (err: unknown) => void = () => undefined): Promise<number> {
    let returned = 0;
    for (const [queue, group] of byQueue(held)) {
      const { rows } = await this.db.query<{ id: string }>(RELEASE_SQL, [
        group.map((h) => h.row.id),
        partitionKeys(group),
        fences(group),
        this.options.workerId,
        queue,
      ]);
      if (rows.length > 0) await this.db.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, queue]).catch(onNotifyError);
      returned += rows.length;
    }
    return returned;
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

  /** Record the consumer's retry backoff for a queue it works, so rescue_expired() puts its expired leases back with it. */
  async recordBackoff(queue: string, baseMs: number, capMs: number): Promise<void> {
    await this.db.query(RECORD_BACKOFF_SQL, [queue, baseMs / 1000, capMs / 1000]);
  }
}
