import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ManualClock } from '../core/clock.ts';
import { newQueueId } from '../core/queue-id.ts';
import { QueueStore } from './store.ts';
import type { IncomingEnvelope } from './store.ts';

const T0 = 1_700_000_000_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-admin-'));
  dirs.push(d);
  return d;
}

async function queueOne(store: QueueStore, over: Partial<IncomingEnvelope> = {}, body = 'Subject: hi\r\n\r\nHello\r\n'): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit({ sender: 'alice@example.org', recipients: [{ address: 'bob@example.net' }], clientIp: '192.0.2.1', helo: null, user: null, listener: 'mx', ...over });
  return msg.queueId;
}

test('admin: hold, release, retry, flush and delete report changed, unchanged and missing ids', async () => {
  const clock = new ManualClock(T0);
  const store = QueueStore.open({ dataDir: tempDataDir(), clock });
  const a = await queueOne(store);
  clock.advance(1000);
  const b = await queueOne(store, { sender: 'mallory@example.com', recipients: [{ address: 'x@other.example' }] });
  const unknown = newQueueId();

  assert.deepEqual(store.hold({ queueIds: [a, unknown, a] }), { changed: [a], unchanged: [], missing: [unknown] });
  assert.deepEqual(store.hold({ queueIds: [a] }), { changed: [], unchanged: [{ queueId: a, state: 'hold', reason: 'already on hold' }], missing: [] });
  assert.equal(store.get(a)?.state, 'hold');
  assert.equal(store.get(a)?.stateReason, 'held by an administrator');
  assert.deepEqual(store.release({ queueIds: [b] }).unchanged, [{ queueId: b, state: 'queued', reason: 'not on hold' }]);
  assert.deepEqual(store.retry({ queueIds: [a] }).unchanged, [{ queueId: a, state: 'hold', reason: 'is hold' }]);
  assert.deepEqual(store.release({ queueIds: [a] }).changed, [a]);
  assert.equal(store.get(a)?.state, 'queued');
  assert.equal(store.get(a)?.nextRunAt, T0, 'released with its schedule');

  // Filters select like `queue list`.
  assert.deepEqual(store.hold({ filter: { sender: 'mallory@example.com' } }).changed, [b]);
  assert.deepEqual(store.release({ filter: { recipientDomain: 'OTHER.example' } }).changed, [b]);
  assert.deepEqual(store.hold({ filter: {} }).changed, [a, b]);
  assert.deepEqual(store.release({ filter: { state: 'hold', olderThanMs: 500 } }).changed, [a]);

  // flush retries queued messages whose next attempt is in the future.
  assert.deepEqual(store.flush().changed, [], 'everything is due already');
  assert.deepEqual(store.delete({ queueIds: [b, unknown] }), { changed: [b], unchanged: [], missing: [unknown] });
  assert.equal(existsSync(join(store.dataDir, 'spool', 'msg', `${b}.eml`)), false);
  assert.deepEqual(store.list().map((m) => m.queueId), [a]);
  await store.close();
});

test('admin: retry and flush make deferred recipients due now', async () => {
  const clock = new ManualClock(T0);
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, clock });
  const id = await queueOne(store);
  await store.close();
  // A deferral, as the runner records it.
  const { IndexDb } = await import('./index-db.ts');
  const index = new IndexDb(join(dataDir, 'queue.db'));
  index.recordAttempt(id, [{ index: 0, state: 'deferred', nextAttemptAt: T0 + 3_600_000, reply: null, dsnStatus: '4.0.0', remoteMta: null, diagnostic: 'Connection refused' }], T0, null);
  index.close();

  clock.advance(60_000);
  const admin = QueueStore.openAdmin({ dataDir, clock });
  assert.equal(admin.get(id)?.nextRunAt, T0 + 3_600_000);
  assert.deepEqual(admin.flush().changed, [id]);
  assert.equal(admin.get(id)?.nextRunAt, T0 + 60_000);
  assert.equal(admin.get(id)?.recipients[0]?.nextAttemptAt, T0 + 60_000);
  assert.equal(admin.get(id)?.recipients[0]?.attempts, 1, 'the attempt count is kept');
  assert.deepEqual(admin.flush().changed, []);
  clock.advance(1);
  assert.deepEqual(admin.retry({ queueIds: [id] }).changed, [id]);
  assert.equal(admin.get(id)?.nextRunAt, T0 + 60_001);
  await admin.close();
});

test('admin: an admin store works beside the receiving store, and a read-only one refuses', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir });
  const id = await queueOne(store);
  const admin = QueueStore.openAdmin({ dataDir });
  assert.equal(admin.recovery, null);
  assert.deepEqual(admin.hold({ queueIds: [id] }).changed, [id]);
  assert.equal(store.get(id)?.state, 'hold', 'the receiver sees the change');
  await assert.rejects(admin.beginMessage(), { code: 'ERR_QUEUE_READONLY' });
  const reader = QueueStore.open({ dataDir, readOnly: true });
  assert.throws(() => reader.hold({ queueIds: [id] }), { code: 'ERR_QUEUE_READONLY' });
  assert.throws(() => reader.flush(), { code: 'ERR_QUEUE_READONLY' });
  await reader.close();
  // The receiver keeps committing while the admin store is open.
  const other = await queueOne(store);
  assert.deepEqual(admin.delete({ filter: {} }).changed.sort(), [id, other].sort());
  assert.deepEqual(readdirSync(join(dataDir, 'spool', 'msg')), []);
  await admin.close();
  await store.close();
  assert.throws(() => QueueStore.openAdmin({ dataDir: join(dataDir, 'none') }), { code: 'ERR_QUEUE_OPEN' });
});

test('admin: long id lists are changed in chunks, all of them', async () => {
  const store = QueueStore.open({ dataDir: tempDataDir() });
  const ids = await Promise.all(Array.from({ length: 1200 }, () => queueOne(store)));
  assert.equal(store.hold({ filter: {} }).changed.length, 1200);
  assert.equal(store.list({ state: 'hold' }).length, 1200);
  assert.equal(store.release({ queueIds: ids }).changed.length, 1200);
  assert.equal(store.delete({ filter: { state: 'queued' } }).changed.length, 1200);
  assert.deepEqual(store.list(), []);
  await store.close();
});

for (const inline of [true, false]) test(`admin: readHeaders returns the header section, bounded, and null for unknown ids (${inline ? 'inline bodies' : 'spool files'})`, async () => {
  const store = QueueStore.open({ dataDir: tempDataDir(), ...(inline ? {} : { inlineMaxBytes: 0 }) });
  const id = await queueOne(store, {}, 'Message-ID: <h@test>\r\nSubject: hello\r\n\r\nbody line\r\n');
  assert.deepEqual(store.readHeaders(id), { headers: 'Message-ID: <h@test>\r\nSubject: hello\r\n', truncated: false });
  const lf = await queueOne(store, {}, 'Subject: lf\n\nbody\n');
  assert.deepEqual(store.readHeaders(lf), { headers: 'Subject: lf\n', truncated: false });
  const big = await queueOne(store, {}, `X-Long: ${'a'.repeat(100_000)}\r\n\r\nbody`);
  const h = store.readHeaders(big, 1000);
  assert.equal(h?.headers.length, 1000);
  assert.equal(h?.truncated, true);
  assert.equal(store.readHeaders(newQueueId()), null);
  assert.equal(store.get(id)?.bodyInline, inline);
  if (inline) {
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(join(store.dataDir, 'queue.db'));
    db.prepare('DELETE FROM bodies WHERE queue_id = ?').run(id);
    db.close();
  } else {
    writeFileSync(join(store.dataDir, 'spool', 'msg', `${id}.eml`), '');
  }
  assert.deepEqual(store.readHeaders(id), { headers: '', truncated: true }, 'a body shorter than recorded');
  await store.close();
});
