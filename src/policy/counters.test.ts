import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countersContract } from './counters.case.ts';
import { MemoryCounterStore, applyWindow } from './counters.ts';

countersContract({
  name: 'memory',
  async fresh() {
    const store = new MemoryCounterStore();
    return { open: async () => store, dispose: () => store.close() };
  },
});

test('memory counters: at most maxKeys keys, the least recently changed go first', async () => {
  const s = new MemoryCounterStore({ maxKeys: 2 });
  for (const k of ['a', 'b', 'c']) await s.add(k, { now: 1000, windowMs: 60_000, limit: 5 });
  assert.equal((await s.peek('a', { now: 1000, windowMs: 60_000 })).count, 0);
  assert.equal((await s.peek('c', { now: 1000, windowMs: 60_000 })).count, 1);
});

test('applyWindow: events out of order are kept sorted', () => {
  assert.deepEqual(applyWindow([10, 30], 'add', { now: 20, windowMs: 100, limit: 5 }).events, [10, 20, 30]);
});
