import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { GroupCommit } from './group-commit.ts';

test('group commit: items arriving during a flush share the next one', async () => {
  const batches: number[][] = [];
  const gc = new GroupCommit<number>(async (items) => {
    batches.push([...items]);
    await sleep(5);
  });
  const all: Promise<void>[] = [];
  for (let i = 0; i < 100; i++) {
    all.push(gc.submit(i));
    if (i % 10 === 9) await sleep(1);
  }
  await Promise.all(all);
  await gc.idle();
  assert.deepEqual(batches.flat(), Array.from({ length: 100 }, (_, i) => i), 'every item once, in order');
  assert.ok(batches.length < 30, `expected far fewer flushes than items, got ${batches.length}`);
  assert.equal(gc.stats().items, 100);
  assert.equal(gc.stats().flushes, batches.length);
});

test('group commit: a submit resolves only after its flush finished', async () => {
  let flushed = false;
  const gc = new GroupCommit<string>(async () => {
    await sleep(10);
    flushed = true;
  });
  await gc.submit('a');
  assert.equal(flushed, true);
});

test('group commit: one bad item fails alone, its neighbours commit', async () => {
  const committed: string[] = [];
  const gc = new GroupCommit<string>(async (items) => {
    await sleep(1);
    if (items.includes('bad')) throw new Error('bad item');
    committed.push(...items);
  });
  const results = await Promise.allSettled(['a', 'b', 'bad', 'c'].map((x) => gc.submit(x)));
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
  assert.deepEqual(committed.sort(), ['a', 'b', 'c']);
  assert.equal(gc.stats().failedItems, 1);
  // Still works afterwards.
  await gc.submit('d');
  assert.ok(committed.includes('d'));
});

test('group commit: maxBatch caps a batch', async () => {
  const sizes: number[] = [];
  const gc = new GroupCommit<number>(async (items) => {
    sizes.push(items.length);
  }, { maxBatch: 8 });
  await Promise.all(Array.from({ length: 30 }, (_, i) => gc.submit(i)));
  assert.ok(sizes.every((n) => n <= 8));
  assert.equal(sizes.reduce((a, b) => a + b, 0), 30);
});

test('group commit: a failure retryAlone declines (the database is down) fails the whole batch at once', async () => {
  let flushes = 0;
  const down = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  const gc = new GroupCommit<number>(async () => {
    flushes++;
    await sleep(1);
    throw down;
  }, { retryAlone: (err) => (err as { code?: string }).code !== 'ECONNREFUSED' });
  const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => gc.submit(i)));
  assert.ok(results.every((r) => r.status === 'rejected' && r.reason === down));
  assert.equal(flushes, 1, 'no per-item retries');
  assert.equal(gc.stats().failedItems, 10);
});
