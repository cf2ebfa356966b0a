import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ManualClock } from '../core/clock.ts';
import * as q from '../queue/index.ts';
import { ShardedQueueAdmin, ShardedQueueReader, existingShards, mergeCounts, shardDir } from './queue-shards.ts';

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

async function queueOne(store: q.QueueStore, id: string): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(`Message-ID: <${id}>\r\nSubject: s\r\n\r\nbody\r\n`)]), msg.body);
  await msg.commit({ sender: 'a@example.org', recipients: [{ address: 'b@example.net' }], clientIp: '192.0.2.1', helo: 'h.example', user: null, listener: 'mx' });
  return msg.queueId;
}

test('queue shards: layout; one queue over shards 0 and 3: merged oldest first, limit after the merge, show, changes, missing ids', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'relayguard-shards-'));
  dirs.push(dataDir);
  assert.equal(shardDir(dataDir, 0), dataDir);
  assert.equal(shardDir(dataDir, 3), join(dataDir, 'shards', '3'));
  assert.throws(() => shardDir(dataDir, -1), RangeError);
  assert.deepEqual(existingShards(dataDir), []);
  assert.equal(ShardedQueueReader.open(q, dataDir, () => T0), null);

  mkdirSync(join(dataDir, 'shards', '3'), { recursive: true });
  mkdirSync(join(dataDir, 'shards', 'junk'), { recursive: true }); // not a shard
  const clock = new ManualClock(T0);
  const s0 = q.QueueStore.open({ dataDir, clock });
  const s3 = q.QueueStore.open({ dataDir: shardDir(dataDir, 3), clock });
  const ids: Record<string, string> = {};
  try {
    // Arrival order interleaves the shards: m1 (0), m2 (3), m3 (0), m4 (3).
    for (const [name, store] of [['m1', s0], ['m2', s3], ['m3', s0], ['m4', s3]] as const) {
      ids[name] = await queueOne(store, `${name}@test`);
      clock.advance(1000);
    }
  } finally {
    await s0.close();
    await s3.close();
  }
  assert.deepEqual(existingShards(dataDir).map((s) => s.index), [0, 3]);

  const reader = ShardedQueueReader.open(q, dataDir, () => T0 + 10_000)!;
  try {
    assert.equal(reader.shardCount, 2);
    const rows = await reader.list();
    assert.deepEqual(rows.map((r) => [r.queueId, r.shard]), [[ids['m1'], 0], [ids['m2'], 3], [ids['m3'], 0], [ids['m4'], 3]]);
    assert.deepEqual((await reader.list({ limit: 3 })).map((r) => r.queueId), [ids['m1'], ids['m2'], ids['m3']]);
    const d = await reader.get(ids['m4']!);
    assert.equal(d?.shard, 3);
    assert.match((await reader.readHeaders(ids['m4']!))?.headers ?? '', /m4@test/);
    assert.equal(await reader.get('0000000000AAAAAAAAAA'), null);
    const c = await reader.counts();
    assert.deepEqual(c.queued, { messages: 4, oldestReceivedAt: T0, oldestAgeMs: 10_000 }, 'added up; the oldest of any shard');
    assert.deepEqual(c.hold, { messages: 0, oldestReceivedAt: null, oldestAgeMs: null });
  } finally {
    await reader.close();
  }

  const admin = ShardedQueueAdmin.open(q, dataDir, () => T0 + 10_000)!;
  try {
    const held = await admin.change('hold', { queueIds: [ids['m1']!, ids['m4']!, '0000000000AAAAAAAAAA'] });
    assert.deepEqual([...held.changed].sort(), [ids['m1'], ids['m4']].sort());
    assert.deepEqual(held.missing, ['0000000000AAAAAAAAAA']);
    const again = await admin.change('hold', { queueIds: [ids['m4']!] });
    assert.deepEqual(again.changed, []);
    assert.deepEqual(again.missing, [], 'a message one shard left unchanged is not missing');
    assert.equal(again.unchanged[0]?.queueId, ids['m4']);
    const r = ShardedQueueReader.open(q, dataDir, () => T0 + 10_000)!;
    try {
      const c = await r.counts();
      assert.deepEqual([c.queued.messages, c.queued.oldestReceivedAt], [2, T0 + 1000]);
      assert.deepEqual(c.hold, { messages: 2, oldestReceivedAt: T0, oldestAgeMs: 10_000 });
    } finally {
      await r.close();
    }
    const all = await admin.change('release', { filter: {} });
    assert.deepEqual([...all.changed].sort(), [ids['m1'], ids['m4']].sort());
    const flushed = await admin.flush();
    assert.deepEqual(flushed.missing, []);
  } finally {
    await admin.close();
  }
});

test('the sharded view counts the same states as the queue (its copy of COUNTED_STATES)', () => {
  const empty = { messages: 0, oldestReceivedAt: null, oldestAgeMs: null };
  const one = Object.fromEntries(q.COUNTED_STATES.map((st) => [st, empty])) as unknown as q.QueueCounts;
  assert.deepEqual(Object.keys(mergeCounts([one, one])).sort(), [...q.COUNTED_STATES].sort());
});
