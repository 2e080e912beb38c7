// The consumer's local buffer on its own: the state machine of each attempt
// and of the buffer, in process (it runs no SQL).
import { describe, expect, it } from 'vitest';
import { IllegalTransitionError, LocalBuffer } from '../../src/queue/consumer/buffer.js';
import { Attempt, type ClaimedRow } from '../../src/queue/consumer/job.js';
import { Rotation } from '../../src/queue/consumer/rotation.js';

let nextId = 1;
function attempt(queue = 'q'): Attempt {
  const id = String(nextId++);
  const row: ClaimedRow = {
    id,
    queue,
    payload: { id },
    priority: 0,
    retry_count: 0,
    max_retries: 3,
    created_at: new Date('2026-01-01T00:00:00Z'),
    run_at: new Date('2026-01-01T00:00:00Z'),
    attempt: 1,
    timeout_ms: null,
  };
  return new Attempt(row, 900);
}

/** True when the promise has settled by the time already-queued callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

describe('LocalBuffer', () => {
  it('starts the oldest waiting attempts first, never more than concurrency at once', () => {
    const b = new LocalBuffer(2);
    const [a1, a2, a3] = [attempt(), attempt(), attempt()];
    for (const a of [a1, a2, a3]) b.add(a);
    expect(b.waitingCount).toBe(3);
    expect(b.start()).toBe(a1);
    expect(b.start()).toBe(a2);
    expect(b.canStart()).toBe(false);
    expect(b.start()).toBeNull();
    expect([a1.state, a2.state, a3.state]).toEqual(['running', 'running', 'waiting']);
    expect(b.runningCount).toBe(2);
    expect(b.settle(a1)).toBe(true);
    expect(a1.state).toBe('finished');
    expect(b.start()).toBe(a3);
    expect(b.held()).toEqual([a2, a3]);
  });

  it('settle frees a slot (roomChanged) and the last one makes it idle (whenIdle)', async () => {
    const b = new LocalBuffer(2);
    const [a1, a2] = [attempt(), attempt()];
    b.add(a1);
    b.add(a2);
    b.start();
    b.start();
    const room = b.roomChanged();
    const idle = b.whenIdle();
    expect(await settled(room)).toBe(false);
    b.settle(a1);
    expect(await settled(room)).toBe(true);
    expect(await settled(idle)).toBe(false);
    b.settle(a2);
    expect(await settled(idle)).toBe(true);
    expect(await settled(b.whenIdle())).toBe(true);
  });

  it('a lost attempt leaves the buffer, is lost once, and its settled result does not count', () => {
    const b = new LocalBuffer(1);
    const [waiting, running] = [attempt(), attempt()];
    b.add(running);
    b.add(waiting);
    b.start();
    expect(b.lose(waiting)).toBe(true);
    expect(b.lose(waiting)).toBe(false);
    expect(b.waitingCount).toBe(0);
    expect(b.lose(running)).toBe(true);
    expect(running.lost).toBe(true);
    // The lost handler still holds its slot until it settles.
    expect(b.runningCount).toBe(1);
    expect(b.held()).toEqual([]);
    expect(b.settle(running)).toBe(false);
    expect(running.state).toBe('lost');
    expect(b.runningCount).toBe(0);
  });

  it('a finished attempt can still be lost (its fenced result changed nothing)', () => {
    const b = new LocalBuffer(1);
    const a = attempt();
    b.add(a);
    b.start();
    b.settle(a);
    expect(b.lose(a)).toBe(true);
    expect(a.state).toBe('lost');
  });

  it('stop: nothing starts any more, claims in flight may still land, then the unstarted ones are taken back', async () => {
    const b = new LocalBuffer(1);
    const [a1, a2, late] = [attempt(), attempt(), attempt()];
    b.add(a1);
    b.add(a2);
    b.start();
    const room = b.roomChanged();
    b.stop();
    expect(await settled(room)).toBe(true);
    expect(b.state).toBe('stopping');
    b.settle(a1);
    expect(b.canStart()).toBe(false);
    expect(b.start()).toBeNull();
    b.add(late);
    expect(b.takeUnstarted()).toEqual([a2, late]);
    expect([a2.state, late.state]).toEqual(['returned', 'returned']);
    expect(b.state).toBe('closed');
    expect(b.waitingCount).toBe(0);
  });

  it('transaction mode runs a claimed attempt at once, even while stopping', () => {
    const b = new LocalBuffer(1);
    b.stop();
    const a = attempt();
    b.runNow(a);
    expect(a.state).toBe('running');
    expect(b.held()).toEqual([a]);
    expect(b.settle(a)).toBe(true);
  });

  it('every illegal transition throws and changes nothing', () => {
    const b = new LocalBuffer(1);
    const a = attempt();
    expect(() => b.settle(a)).toThrow(IllegalTransitionError);
    expect(() => b.lose(a)).toThrow(/illegal transition lose from claimed/);
    b.add(a);
    expect(() => b.add(a)).toThrow(/claimed → waiting from waiting/);
    expect(() => b.runNow(a)).toThrow(/claimed → running from waiting/);
    expect(() => b.settle(a)).toThrow(/settle from waiting/);
    expect(() => b.takeUnstarted()).toThrow(/takeUnstarted from buffer open/);
    expect(a.state).toBe('waiting');
    expect(b.waitingCount).toBe(1);
    b.stop();
    expect(() => b.stop()).toThrow(/stop from buffer stopping/);
    b.takeUnstarted();
    expect(() => b.lose(a)).toThrow(/lose from returned/);
    expect(() => b.add(attempt())).toThrow(/add from buffer closed/);
    expect(() => b.takeUnstarted()).toThrow(IllegalTransitionError);
    expect(a.state).toBe('returned');
    expect(() => new LocalBuffer(0)).toThrow(RangeError);
  });
});

describe('LocalBuffer with per-queue limits', () => {
  it('starts the oldest waiting attempt whose queue is below its limit; the overall limit still holds', () => {
    const b = new LocalBuffer(3, new Map([['a', 1]]));
    const [a1, a2, b1, b2, b3] = [attempt('a'), attempt('a'), attempt('b'), attempt('b'), attempt('b')];
    for (const x of [a1, a2, b1, b2, b3]) b.add(x);
    expect(b.limitOf('a')).toBe(1);
    expect(b.limitOf('b')).toBe(3);
    expect(b.start()).toBe(a1);
    // a2 waits: its queue is at its limit; b's jobs go by.
    expect(b.start()).toBe(b1);
    expect(b.start()).toBe(b2);
    expect(b.start()).toBeNull(); // overall limit 3
    expect([b.runningOf('a'), b.runningOf('b'), b.waitingOfQueue('a'), b.waitingOfQueue('b')]).toEqual([1, 2, 1, 1]);
    b.settle(b1);
    expect(b.start()).toBe(b3);
    b.settle(a1);
    expect(b.start()).toBe(a2);
    expect(b.waitingOfQueue('a') + b.waitingOfQueue('b')).toBe(0);
  });
});

describe('Rotation', () => {
  it('turns through the queues with room, skips those found empty at the current wake count, and tells full from empty', () => {
    const r = new Rotation(['a', 'b', 'c']);
    const all = () => true;
    expect([r.pick(all, 0), r.pick(all, 0), r.pick(all, 0), r.pick(all, 0)].map((p) => (p.kind === 'queue' ? p.queue : p.kind))).toEqual(['a', 'b', 'c', 'a']);
    r.markEmpty('b', 0);
    r.markEmpty('c', 0);
    expect(r.pick(all, 0)).toEqual({ kind: 'queue', queue: 'a' });
    r.markEmpty('a', 0);
    expect(r.pick(all, 0)).toEqual({ kind: 'empty', wakes: 0, someFull: false });
    // A wake-up since those claims: look again (no NOTIFY lost between the empty claims and the sleep).
    expect(r.pick(all, 1).kind).toBe('queue');
    expect(r.pick((q) => q !== 'a', 0)).toEqual({ kind: 'empty', wakes: 0, someFull: true });
    expect(r.pick(() => false, 0)).toEqual({ kind: 'full' });
    r.markFound('b');
    expect(r.pick(all, 0)).toEqual({ kind: 'queue', queue: 'b' });
    r.reset();
    expect(r.pick(all, 0).kind).toBe('queue');
  });
});
