/**
 * The embedded queue's cheap path from commit to first attempt: the store hands each committed batch to its runner
 * (no due() scan, no full read back), a finished message leaves with one DELETE, and none of it weakens the
 * rules the slow path keeps (a hold or delete before the first attempt wins, a hold during the attempt keeps the
 * message, retries still fall due while handed-over messages keep arriving).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import type { Bouncer, Deliverer, DeliveryJob, RecipientOutcome } from './deliverer.ts';
import { IndexDb } from './index-db.ts';
import type { MessageRecord, RecipientUpdate } from './index-db.ts';
import type { MailQueue, RunnerBackend } from './port.ts';
import { QueueRunner } from './runner.ts';
import { SqliteMailQueue } from './sqlite-queue.ts';
import { QueueStore } from './store.ts';
import type { IncomingEnvelope } from './store.ts';

const T0 = 1_700_000_000_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-handover-'));
  dirs.push(d);
  return d;
}

const ENV: IncomingEnvelope = {
  sender: 'alice@example.org',
  recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }, { address: 'carol@example.com' }],
  clientIp: '192.0.2.10',
  helo: 'client.example.org',
  user: null,
  listener: 'mx',
  mailParams: { BODY: '8BITMIME' },
};

async function queueOne(q: MailQueue | QueueStore, body = 'Subject: hi\r\n\r\nHello\r\n', env: IncomingEnvelope = ENV): Promise<string> {
  const msg = await q.beginMessage();
  msg.body.end(body);
  await new Promise<void>((resolve, reject) => {
    msg.body.once('finish', resolve);
    msg.body.once('error', reject);
  });
  await msg.commit(env);
  return msg.queueId;
}

type Script = (job: DeliveryJob) => readonly RecipientOutcome[] | Promise<readonly RecipientOutcome[]>;
const deliverAll: Script = (job) => job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' as const }));

class Recorder implements Deliverer {
  readonly jobs: DeliveryJob[] = [];
  script: Script;
  constructor(script: Script = deliverAll) {
    this.script = script;
  }
  async deliver(job: DeliveryJob): Promise<readonly RecipientOutcome[]> {
    this.jobs.push(job);
    return this.script(job);
  }
}

const NO_BOUNCES: Bouncer = { async bounce() {}, async delayed() {} };

/** The SQLite queue with its runner backend's calls counted (the port the runner sees). */
class CountingQueue extends SqliteMailQueue {
  dueCalls = 0;
  override attachRunner(): RunnerBackend {
    const inner = super.attachRunner();
    return { ...inner, due: (now, cursor, limit) => { this.dueCalls++; return inner.due(now, cursor, limit); } };
  }
}

test('hand-over: committed messages are delivered without a due() scan each, from the record as stored', async () => {
  const store = QueueStore.open({ dataDir: tempDataDir(), logger: new MemoryLogger() });
  const queue = new CountingQueue(store, 'n1');
  const deliverer = new Recorder();
  const runner = new QueueRunner({ store: queue, deliverer, bouncer: NO_BOUNCES, concurrency: 5 });
  runner.start();
  try {
    const ids: string[] = [];
    for (let round = 0; round < 10; round++) {
      ids.push(...await Promise.all(Array.from({ length: 10 }, () => queueOne(queue))));
    }
    for (let i = 0; i < 200 && runner.stats().finished < ids.length; i++) await sleep(10);
    assert.equal(runner.stats().finished, ids.length, 'every message delivered and removed');
    assert.equal(runner.stats().delivered, 2 * ids.length);
    assert.deepEqual(new Set(deliverer.jobs.map((j) => j.queueId)), new Set(ids), 'each exactly once');
    assert.equal(deliverer.jobs.length, ids.length);
    // The first pass scans once; after that only the poll (1 s) would: nothing near one scan per batch.
    assert.ok(queue.dueCalls <= 3, `due() called ${queue.dueCalls} times for ${ids.length} messages in 10 batches`);
    const job = deliverer.jobs[0]!;
    assert.equal(job.sender, 'alice@example.org');
    assert.deepEqual(job.mailParams, { BODY: '8BITMIME' });
    assert.deepEqual(job.recipients.map((r) => [r.address, r.params, r.attempts]),
      [['bob@example.net', { NOTIFY: 'FAILURE' }, 0], ['carol@example.com', {}, 0]]);
    assert.equal(job.attempt, 1);
    assert.equal(job.clientIp, '192.0.2.10');
    assert.equal(job.size, 'Subject: hi\r\n\r\nHello\r\n'.length);
    assert.equal(store.list().length, 0);
  } finally {
    await runner.stop();
    await queue.close();
  }
});

test('hand-over: a message held or deleted by an administrator (another process) before its first attempt is not delivered', async () => {
  const clock = new ManualClock(T0);
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, clock });
  const deliverer = new Recorder();
  const runner = new QueueRunner({ store, deliverer, bouncer: NO_BOUNCES, clock });
  const held = await queueOne(store);
  const deleted = await queueOne(store);
  const kept = await queueOne(store);
  const admin = QueueStore.openAdmin({ dataDir, clock });
  try {
    assert.deepEqual(admin.hold({ queueIds: [held] }).changed, [held]);
    assert.deepEqual(admin.delete({ queueIds: [deleted] }).changed, [deleted]);
    const s = await runner.runOnce();
    assert.equal(s.messages, 1);
    assert.deepEqual(deliverer.jobs.map((j) => j.queueId), [kept]);
    assert.equal(store.get(held)?.state, 'hold');
    assert.equal(store.get(deleted), null);
    assert.equal(runner.stats().possibleDuplicates, 0);
    // Released: delivered now, read from the index (its handed-over record was used up by the first look).
    admin.release({ queueIds: [held] });
    const s2 = await runner.runOnce();
    assert.equal(s2.finished, 1);
    assert.deepEqual(deliverer.jobs.map((j) => j.queueId), [kept, held]);
    assert.equal(store.get(held), null);
  } finally {
    await admin.close();
    await runner.stop();
    await store.close();
  }
});

test('hand-over: a finished message held during its attempt stays (outcomes recorded), and leaves without a second delivery once released', async () => {
  const clock = new ManualClock(T0);
  const store = QueueStore.open({ dataDir: tempDataDir(), clock });
  const deliverer = new Recorder((job) => {
    store.hold({ queueIds: [job.queueId] });
    return deliverAll(job);
  });
  const runner = new QueueRunner({ store, deliverer, bouncer: NO_BOUNCES, clock });
  try {
    const id = await queueOne(store);
    const s = await runner.runOnce();
    assert.equal(s.delivered, 2);
    assert.equal(s.finished, 0, 'held: not removed behind the administrator\'s back');
    const d = store.get(id)!;
    assert.equal(d.state, 'hold');
    assert.deepEqual(d.recipients.map((r) => [r.state, r.attempts, r.dsnStatus]), [['delivered', 1, '2.0.0'], ['delivered', 1, '2.0.0']]);
    store.release({ queueIds: [id] });
    const s2 = await runner.runOnce();
    assert.equal(s2.finished, 1);
    assert.equal(s2.messages, 0, 'nothing delivered again');
    assert.equal(deliverer.jobs.length, 1);
    assert.equal(store.get(id), null);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('hand-over: a partly delivered message is recorded per recipient, not removed', async () => {
  const clock = new ManualClock(T0);
  const store = QueueStore.open({ dataDir: tempDataDir(), clock });
  const deliverer = new Recorder((job) => job.recipients.map((r) => ({
    address: r.address, outcome: r.address.startsWith('bob') ? 'delivered' as const : 'deferred' as const, diagnostic: 'busy',
  })));
  const runner = new QueueRunner({ store, deliverer, bouncer: NO_BOUNCES, clock });
  try {
    const id = await queueOne(store);
    const s = await runner.runOnce();
    assert.deepEqual([s.delivered, s.deferred, s.finished], [1, 1, 0]);
    const d = store.get(id)!;
    assert.deepEqual(d.recipients.map((r) => r.state), ['delivered', 'deferred']);
    assert.equal(d.nextRunAt, T0 + 5 * 60_000);
    clock.advance(5 * 60_000);
    deliverer.script = deliverAll;
    const s2 = await runner.runOnce();
    assert.deepEqual([s2.delivered, s2.finished], [1, 1]);
    assert.deepEqual(deliverer.jobs[1]!.recipients.map((r) => [r.address, r.attempts]), [['carol@example.com', 1]]);
    assert.equal(store.get(id), null);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('hand-over: a retry falls due and is delivered while handed-over messages keep arriving (the runner still scans)', async () => {
  const store = QueueStore.open({ dataDir: tempDataDir() });
  let first = true;
  const deliverer = new Recorder((job) => {
    if (job.recipients.some((r) => r.address === 'retry@example.net') && first) {
      first = false;
      return job.recipients.map((r) => ({ address: r.address, outcome: 'deferred' as const, diagnostic: 'try later' }));
    }
    return deliverAll(job);
  });
  const runner = new QueueRunner({
    store, deliverer, bouncer: NO_BOUNCES, pollIntervalMs: 100, retry: { minimalBackoffMs: 150, maximalBackoffMs: 1000 },
  });
  runner.start();
  try {
    const retried = await queueOne(store, undefined, { ...ENV, recipients: [{ address: 'retry@example.net' }] });
    const deadline = Date.now() + 5000;
    let delivered = false;
    // A commit every 5 ms: the runner never runs out of handed-over work, so only its periodic scan finds the retry.
    while (Date.now() < deadline) {
      await queueOne(store);
      await sleep(5);
      if (deliverer.jobs.filter((j) => j.queueId === retried).length === 2) {
        delivered = true;
        break;
      }
    }
    assert.ok(delivered, 'the deferred message was tried again within the deadline');
    for (let i = 0; i < 100 && store.list().length > 0; i++) await sleep(10);
    assert.equal(store.list().length, 0);
  } finally {
    await runner.stop();
    await store.close();
  }
});

// ---- the index side: finished messages removed with one DELETE, riding on the intake's transaction ----

function record(queueId: string, at: number, body: string | null = 'Subject: x\r\n\r\nx\r\n'): MessageRecord {
  return {
    queueId, receivedAt: at, sender: 'a@example.org', size: body?.length ?? 10, bodyPath: body === null ? `spool/msg/${queueId}.eml` : '',
    body: body === null ? null : Buffer.from(body), messageId: null, clientIp: '192.0.2.1', helo: null, authUser: null, listener: 'mx',
    mailParams: {}, recipients: [{ address: 'b@example.net', params: {} }, { address: 'c@example.net', params: {} }],
  };
}

const delivered = (index: number): RecipientUpdate => ({
  index, state: 'delivered', nextAttemptAt: null, reply: null, dsnStatus: '2.0.0', remoteMta: null, diagnostic: null,
});

test('index: insertBatch records finishing attempts in its own transaction (all or nothing)', () => {
  const index = new IndexDb(join(tempDataDir(), 'queue.db'), { durability: 'full' });
  try {
    index.insertBatch([record('A0000000001', T0), record('A0000000002', T0)]);
    const finishA = { queueId: 'A0000000001', updates: [delivered(0), delivered(1)], now: T0 + 1, corruptReason: null, finishes: true };
    const results = index.insertBatch([record('B0000000001', T0 + 1)], [finishA, { ...finishA, queueId: 'GONE0000001' }]);
    assert.deepEqual(results, [{ state: 'queued', open: 0, removedBodyPath: '' }, null]);
    assert.equal(index.get('A0000000001'), null, 'removed, recipients and body with it');
    assert.equal(index.readBody('A0000000001'), null);
    assert.ok(index.get('B0000000001'));
    // A batch that fails takes its riders down with it: nothing half done.
    const finishB = { ...finishA, queueId: 'B0000000001' };
    assert.throws(() => index.insertBatch([record('A0000000002', T0 + 2)], [finishB]), /UNIQUE|constraint/i);
    assert.ok(index.get('B0000000001'), 'rolled back with the failed batch');
  } finally {
    index.close();
  }
});

test('index: a finishing attempt on a message held meanwhile records each recipient and keeps it; without the hint the same', () => {
  const index = new IndexDb(join(tempDataDir(), 'queue.db'), { durability: 'full' });
  try {
    index.insertBatch([record('H0000000001', T0), record('P0000000001', T0)]);
    index.hold(['H0000000001'], T0);
    const [held] = index.recordAttempts([{ queueId: 'H0000000001', updates: [delivered(0), delivered(1)], now: T0 + 1, corruptReason: null, finishes: true }]);
    assert.deepEqual(held, { state: 'hold', open: 0, removedBodyPath: null });
    assert.deepEqual(index.get('H0000000001')?.recipients.map((r) => [r.state, r.attempts]), [['delivered', 1], ['delivered', 1]]);
    const [plain] = index.recordAttempts([{ queueId: 'P0000000001', updates: [delivered(0), delivered(1)], now: T0 + 1, corruptReason: null }]);
    assert.deepEqual(plain, { state: 'queued', open: 0, removedBodyPath: '' });
    assert.equal(index.get('P0000000001'), null);
  } finally {
    index.close();
  }
});

test('index: nextDue() leaves out messages whose WAL sync is under way, as due() does', () => {
  const index = new IndexDb(join(tempDataDir(), 'queue.db'), { durability: 'full' });
  try {
    index.insertBatch([record('N0000000001', T0), record('N0000000002', T0 + 5), record('N0000000003', T0 + 9)]);
    assert.equal(index.nextDue(), T0);
    index.unsynced(['N0000000001', 'N0000000002']);
    assert.equal(index.nextDue(), T0 + 9);
    index.unsynced(['N0000000003']);
    assert.equal(index.nextDue(), null);
    index.synced(['N0000000001', 'N0000000002', 'N0000000003']);
    assert.equal(index.nextDue(), T0);
  } finally {
    index.close();
  }
});
