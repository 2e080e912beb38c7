/**
 * The claimer: runs the one claim statement (claim.ts) for a consumer, with
 * the cached low-water mark and, per claim lane, a keyset cursor.
 */
import type { Queryable } from '../../db.js';
import { claimQuery, LOW_WATER_SQL, parseTimestamptz, type ClaimCursor } from '../claim.js';
import type { ClaimedRow } from './job.js';

/** What a Claimer needs to know of its consumer. */
export interface ClaimerOptions {
  workerId: string;
  leaseSeconds: number;
  /** How often to re-read the low-water mark while busy, in ms. */
  lowWaterRefreshMs: number;
  /** How long a chain of cursor claims may run before the next claim starts from the head again, in ms. */
  rescanMs: number;
}

/**
 * One chain of claims: where the next claim starts (a keyset position in
 * claim order, or the head of the queue) and since when the chain runs.
 * A lane's claims are sequential; lanes run side by side.
 */
export class ClaimLane {
  private position: ClaimCursor | null = null;
  private since = 0;

  /** The keyset position the next claim starts after (null: the head of the queue). */
  get cursor(): ClaimCursor | null {
    return this.position;
  }

  /** Start the next claim from the head of the queue. */
  reset(): void {
    this.position = null;
  }

  /** Before a claim: a chain older than rescanMs starts over from the head (so priorities and returned jobs are seen). */
  expire(now: number, rescanMs: number): void {
    if (this.position && now - this.since > rescanMs) this.position = null;
  }

  /**
   * After a claim of `want` jobs that returned `rows`: the next claim starts
   * after the last of them, or from the head when the claim came up short
   * (the rest of the queue may hold jobs of other priorities, or none).
   */
  advance(rows: readonly ClaimedRow[], want: number, now: number): void {
    if (rows.length === 0 || rows.length < want) {
      this.position = null;
      return;
    }
    if (!this.position) this.since = now;
    this.position = lastInClaimOrder(rows);
  }
}

/**
 * Claims jobs, one queue per claim statement. It caches the low-water mark (re-read at most
 * every lowWaterRefreshMs, or when asked), and moves each lane's cursor.
 */
export class Claimer {
  private lowWater: Date | null = null;
  private lowWaterAt = 0;

  /**
   * @param options - the consumer's queue, worker id, lease and refresh intervals.
   * @param onClaimed - called with the number of rows of every claim that returned some.
   */
  constructor(
    private readonly options: ClaimerOptions,
    private readonly onClaimed: (count: number) => void = () => undefined,
  ) {}

  /** The cached low-water mark (null: none known, no bound). */
  get lowWaterMark(): Date | null {
    return this.lowWater;
  }

  /**
   * Claim up to `want` jobs of `queue` on `q` (autocommit: the claim commits
   * at once), starting after the lane's cursor (a lane belongs to one queue);
   * moves the cursor. Without a lane, the
   * claim starts from the head of the queue. Throws what the statement throws
   * (a 40001 when a row moved partitions under it is the caller's to retry).
   */
  async claim(q: Queryable, queue: string, want: number, lane: ClaimLane | null): Promise<ClaimedRow[]> {
    await this.refreshLowWater(false, q);
    const now = Date.now();
    lane?.expire(now, this.options.rescanMs);
    const { text, values } = claimQuery({
      queue,
      batch: want,
      leaseSeconds: this.options.leaseSeconds,
      workerId: this.options.workerId,
      lowWater: this.lowWater,
      after: lane?.cursor ?? null,
    });
    const { rows } = await q.query<ClaimedRow>(text, values);
    // created_at and run_at arrive as text (see CLAIM_SQL).
    for (const r of rows) {
      r.created_at = parseTimestamptz(r.created_at as unknown as string);
      r.run_at = parseTimestamptz(r.run_at as unknown as string);
    }
    if (rows.length > 0) this.onClaimed(rows.length);
    lane?.advance(rows, want, Date.now());
    return rows;
  }

  /** Re-read the low-water mark: when `force`d, else only when the cached one is older than lowWaterRefreshMs. */
  async refreshLowWater(force: boolean, q: Queryable): Promise<void> {
    if (!force && Date.now() - this.lowWaterAt < this.options.lowWaterRefreshMs) return;
    const { rows } = await q.query<{ low_water: Date | string | null }>(LOW_WATER_SQL);
    const value = rows[0]?.low_water;
    this.lowWater = value instanceof Date && Number.isFinite(value.getTime()) ? value : null;
    this.lowWaterAt = Date.now();
  }
}

/** The last row in claim order (priority DESC, run_at, id): where the next claim starts. */
export function lastInClaimOrder(rows: readonly ClaimedRow[]): ClaimCursor {
  let last = rows[0]!;
  let lt = last.run_at.getTime();
  for (const r of rows) {
    const t = r.run_at.getTime();
    if (r.priority < last.priority || (r.priority === last.priority && (t > lt || (t === lt && idAfter(r.id, last.id))))) {
      last = r;
      lt = t;
    }
  }
  return { priority: last.priority, runAt: last.run_at, id: last.id };
}

/** Whether bigint id `a` (as text) is greater than `b`: by length, then by digits, for ids of 0 and up; as BigInts otherwise. */
function idAfter(a: string, b: string): boolean {
  if (a[0] === '-' || b[0] === '-') return BigInt(a) > BigInt(b);
  return a.length !== b.length ? a.length > b.length : a > b;
}
