/**
 * The rotation: which queue a consumer of several claims from next. Each
 * claim statement takes jobs of one queue (the single-queue claim, its plan
 * unchanged); the rotation turns through the queues that have room, skipping
 * those a claim found empty since the last wake-up, so a busy queue cannot
 * starve the others and an empty one costs one claim per wake-up.
 *
 * No notification is lost between the empty claims of a round and the
 * sleep: each queue is marked empty with the listener's wake count read
 * before its claim, and a mark counts only while that count is current. So
 * when every queue with room is marked empty, all of those claims ran after
 * the last wake-up, and sleeping with that count returns at once on any
 * wake-up that came since.
 */

/** What pick() found: a queue to claim from, or why not. */
export type Pick =
  | { kind: 'queue'; queue: string }
  /** No queue has room: wait until a handler settles. */
  | { kind: 'full' }
  /** Every queue with room was found empty at wake count `wakes`; `someFull`: other queues are at their limit. */
  | { kind: 'empty'; wakes: number; someFull: boolean };

/** Turns through the queues of one consumer (shared by its claim loops). */
export class Rotation {
  private next = 0;
  /** Queue → the wake count read before the claim that found it empty. */
  private readonly empty = new Map<string, number>();

  /** @param queues - the queues, in the order given (at least one). */
  constructor(readonly queues: readonly string[]) {}

  /**
   * The next queue after the last one picked that has room and is not marked
   * empty at `wakes` (the listener's current wake count).
   */
  pick(hasRoom: (queue: string) => boolean, wakes: number): Pick {
    const n = this.queues.length;
    let someFull = false;
    let sawRoom = false;
    for (let i = 0; i < n; i++) {
      const queue = this.queues[(this.next + i) % n]!;
      if (!hasRoom(queue)) {
        someFull = true;
        continue;
      }
      sawRoom = true;
      if (this.empty.get(queue) === wakes) continue;
      this.next = (this.next + i + 1) % n;
      return { kind: 'queue', queue };
    }
    return sawRoom ? { kind: 'empty', wakes, someFull } : { kind: 'full' };
  }

  /** A claim of `queue` started at wake count `wakes` came back empty. */
  markEmpty(queue: string, wakes: number): void {
    this.empty.set(queue, wakes);
  }

  /** A claim of `queue` found jobs. */
  markFound(queue: string): void {
    this.empty.delete(queue);
  }

  /** After an idle sleep: look at every queue again. */
  reset(): void {
    this.empty.clear();
  }
}
