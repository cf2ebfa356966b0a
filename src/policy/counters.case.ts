/**
 * The contract of CounterStore (counters.ts), as node:test tests registered against any implementation:
 * counters.test.ts (memory), store/sqlite-counters.test.ts and store/postgres-counters.test.ts call
 * countersContract() with a harness. Also the shared AUTH throttle over each of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import type { CounterStore } from './counters.ts';
import { SharedAuthThrottle } from './shared-auth-throttle.ts';

export interface CountersUnderTest {
  /** A store on this test's counters; a second call is another process's or node's view of the same data. */
  open(): Promise<CounterStore>;
  /** Closes what open() made and removes the data. */
  dispose(): Promise<void>;
}

export interface CountersHarness {
  readonly name: string;
  fresh(): Promise<CountersUnderTest>;
}

const T0 = 1_700_000_000_000;
const W = { windowMs: 60_000, limit: 3 };

async function withCounters(h: CountersHarness, fn: (c: CountersUnderTest) => Promise<void>): Promise<void> {
  const c = await h.fresh();
  try {
    await fn(c);
  } finally {
    await c.dispose();
  }
}

export function countersContract(h: CountersHarness): void {
  const t = (name: string, fn: () => Promise<void>): void => { test(`counters contract (${h.name}): ${name}`, fn); };

  t('take counts up to the limit, then refuses until the oldest event leaves the window', () => withCounters(h, async (c) => {
    const s = await c.open();
    assert.deepEqual(await s.take('k', { ...W, now: T0 }), { counted: true, count: 1, oldest: T0 });
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 10 }), { counted: true, count: 2, oldest: T0 });
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 20 }), { counted: true, count: 3, oldest: T0 });
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 30 }), { counted: false, count: 3, oldest: T0 });
    // The window is (now - windowMs, now]: at T0 + 60 000 the first event no longer counts.
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 59_999 }), { counted: false, count: 3, oldest: T0 });
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 60_000 }), { counted: true, count: 3, oldest: T0 + 10 });
    assert.deepEqual(await s.peek('other', { now: T0, windowMs: W.windowMs }), { counted: false, count: 0, oldest: null }, 'keys are independent');
  }));

  t('add counts past the limit and keeps the newest events', () => withCounters(h, async (c) => {
    const s = await c.open();
    for (let i = 0; i < 5; i++) assert.equal((await s.add('k', { ...W, now: T0 + i })).counted, true);
    assert.deepEqual(await s.peek('k', { now: T0 + 5, windowMs: W.windowMs }), { counted: false, count: 3, oldest: T0 + 2 });
    assert.deepEqual(await s.take('k', { ...W, now: T0 + 6 }), { counted: false, count: 3, oldest: T0 + 2 });
  }));

  t('refund removes exactly one event at the given time; peek and a refund of nothing change nothing', () => withCounters(h, async (c) => {
    const s = await c.open();
    await s.take('k', { ...W, now: T0 });
    await s.take('k', { ...W, now: T0 + 5 });
    await s.take('k', { ...W, now: T0 + 9 });
    await s.refund('k', T0 + 5);
    await s.refund('k', T0 + 7); // never counted
    await s.refund('nothing', T0);
    assert.deepEqual(await s.peek('k', { now: T0 + 10, windowMs: W.windowMs }), { counted: false, count: 2, oldest: T0 });
    assert.equal((await s.take('k', { ...W, now: T0 + 11 })).counted, true, 'the refund made room');
    assert.equal((await s.take('k', { ...W, now: T0 + 12 })).counted, false);
  }));

  t('reset forgets a key; sweep drops keys whose newest event is old', () => withCounters(h, async (c) => {
    const s = await c.open();
    await s.add('a', { ...W, now: T0 });
    await s.add('b', { ...W, now: T0 + 100 });
    await s.add('c', { ...W, now: T0 + 200 });
    await s.reset('c');
    assert.equal((await s.peek('c', { now: T0 + 200, windowMs: W.windowMs })).count, 0);
    assert.equal(await s.sweep(T0 + 50), 1);
    assert.equal((await s.peek('a', { now: T0 + 100, windowMs: W.windowMs })).count, 0);
    assert.equal((await s.peek('b', { now: T0 + 100, windowMs: W.windowMs })).count, 1);
  }));

  t('two views racing on one key never count past the limit', () => withCounters(h, async (c) => {
    const a = await c.open();
    const b = await c.open();
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).take('race', { windowMs: 60_000, limit: 10, now: T0 + i })));
    assert.equal(results.filter((r) => r.counted).length, 10);
    assert.equal((await b.peek('race', { now: T0 + 50, windowMs: 60_000 })).count, 10);
  }));

  t('shared AUTH throttle: failures spread over two nodes meet one limit; a success refunds its attempt', () => withCounters(h, async (c) => {
    const clock = new ManualClock(T0);
    const nodeA = new SharedAuthThrottle({ store: await c.open(), maxFailures: 4, windowMs: 60_000, clock });
    const nodeB = new SharedAuthThrottle({ store: await c.open(), maxFailures: 4, windowMs: 60_000, clock });
    assert.deepEqual(await nodeA.acquire('192.0.2.1'), { allowed: true });
    await nodeA.recordSuccess('192.0.2.1'); // refunded
    for (const node of [nodeA, nodeB, nodeA, nodeB]) {
      clock.advance(1000);
      assert.deepEqual(await node.acquire('192.0.2.1'), { allowed: true });
      node.recordFailure('192.0.2.1');
    }
    clock.advance(1000);
    assert.deepEqual(await nodeA.acquire('192.0.2.1'), { allowed: false, retryAfterMs: 56_000 });
    assert.deepEqual(await nodeB.acquire('192.0.2.1'), { allowed: false, retryAfterMs: 56_000 });
    assert.deepEqual(await nodeB.acquire('::ffff:192.0.2.1'), { allowed: false, retryAfterMs: 56_000 }, 'the same client key');
    assert.deepEqual(await nodeB.acquire('192.0.2.2'), { allowed: true }, 'another client is not affected');
    // Parallel guesses on both nodes at once: at most maxFailures pass the gate in a window.
    clock.advance(60_000);
    const gates = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? nodeA : nodeB).acquire('198.51.100.7')));
    assert.equal(gates.filter((g) => g.allowed).length, 4);
    assert.deepEqual(await nodeA.acquire('192.0.2.1'), { allowed: true }, 'the earlier failures left the window');
    // Failures reported without an acquire() (as AuthThrottle.recordFailure allows) are counted too.
    for (let i = 0; i < 4; i++) await (i % 2 ? nodeA : nodeB).recordFailure('203.0.113.5');
    assert.equal((await nodeA.acquire('203.0.113.5')).allowed, false);
  }));
}
