import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ManualClock } from '../core/clock.ts';
import { RelayguardError, toReply } from '../core/errors.ts';
import { MemoryLogger } from '../core/log.ts';
import { isQueueId, newQueueId } from '../core/queue-id.ts';
import { QueueStore } from './store.ts';
import type { IncomingEnvelope } from './store.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-queue-'));
  dirs.push(d);
  return d;
}

function envelope(over: Partial<IncomingEnvelope> = {}): IncomingEnvelope {
  return {
    sender: 'alice@example.org',
    recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE', ORCPT: 'rfc822;bob@example.net' } }, { address: 'carol@Other.Example.' }],
    clientIp: '192.0.2.10',
    helo: 'client.example.org',
    user: null,
    listener: 'mx',
    mailParams: { BODY: '8BITMIME', SMTPUTF8: true },
    ...over,
  };
}

async function queueOne(store: QueueStore, body: string, env: IncomingEnvelope = envelope()): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit(env);
  return msg.queueId;
}

function files(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

for (const inline of [true, false]) test(`queue: a committed message survives a reopen with its envelope, recipients and Message-ID (${inline ? 'inline body' : 'spool file'})`, async () => {
  const dataDir = tempDataDir();
  const clock = new ManualClock(1_700_000_000_000);
  const store = QueueStore.open({ dataDir, clock, ...(inline ? {} : { inlineMaxBytes: 0 }) });
  const body = 'Received: from client\r\nMessage-ID: <one@example.org>\r\nSubject: hi\r\n\r\nHello\r\n';
  const id = await queueOne(store, body);
  assert.ok(isQueueId(id));
  await store.close();

  const again = QueueStore.open({ dataDir, clock });
  assert.deepEqual(again.recovery, { tempFilesRemoved: 0, uncommittedBodiesRemoved: 0, missingBodies: [], badBodies: [] });
  const [summary, ...rest] = again.list();
  assert.equal(rest.length, 0);
  assert.deepEqual(summary, {
    queueId: id,
    receivedAt: 1_700_000_000_000,
    sender: 'alice@example.org',
    size: Buffer.byteLength(body),
    messageId: '<one@example.org>',
    state: 'queued',
    recipients: ['bob@example.net', 'carol@Other.Example.'],
    recipientsOpen: 2,
    nextAttemptAt: 1_700_000_000_000,
    deferred: [],
  });
  const detail = again.get(id);
  assert.ok(detail);
  assert.equal(detail.bodyInline, inline);
  if (inline) {
    assert.equal(detail.bodyPath, '');
    assert.deepEqual(files(join(dataDir, 'spool', 'msg')), [], 'an inline body writes no spool file');
  } else {
    assert.equal(readFileSync(join(dataDir, detail.bodyPath), 'utf8'), body);
  }
  assert.equal(again.readBody(id)?.toString('utf8'), body);
  assert.deepEqual(detail.mailParams, { BODY: '8BITMIME', SMTPUTF8: true });
  assert.equal(detail.clientIp, '192.0.2.10');
  assert.equal(detail.helo, 'client.example.org');
  assert.equal(detail.listener, 'mx');
  assert.deepEqual(detail.recipients.map((r) => [r.address, r.state, r.attempts, r.params]), [
    ['bob@example.net', 'pending', 0, { NOTIFY: 'FAILURE', ORCPT: 'rfc822;bob@example.net' }],
    ['carol@Other.Example.', 'pending', 0, {}],
  ]);
  assert.equal(again.get(newQueueId()), null);
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), []);
  await again.close();
});

test('queue: list filters by state, sender, recipient domain, Message-ID, age and limit', async () => {
  const clock = new ManualClock(1_000_000);
  const store = QueueStore.open({ dataDir: tempDataDir(), clock });
  const a = await queueOne(store, 'Message-ID: <a@x>\r\n\r\n.', envelope({ sender: '' }));
  clock.advance(60_000);
  const b = await queueOne(store, 'Message-ID: <b@x>\r\n\r\n.', envelope({ recipients: [{ address: 'dave@Third.example' }] }));
  assert.deepEqual(store.list({ sender: '' }).map((m) => m.queueId), [a]);
  assert.deepEqual(store.list({ recipientDomain: 'other.example' }).map((m) => m.queueId), [a]);
  assert.deepEqual(store.list({ recipientDomain: 'THIRD.example.' }).map((m) => m.queueId), [b]);
  assert.deepEqual(store.list({ messageId: 'b@x' }).map((m) => m.queueId), [b]);
  assert.deepEqual(store.list({ messageId: '<a@x>' }).map((m) => m.queueId), [a]);
  assert.deepEqual(store.list({ olderThanMs: 30_000 }).map((m) => m.queueId), [a]);
  assert.deepEqual(store.list({ state: 'queued' }).map((m) => m.queueId), [a, b]);
  assert.deepEqual(store.list({ state: 'pending', limit: 1 }).map((m) => m.queueId), [a]);
  assert.deepEqual(store.list({ state: 'hold' }), []);
  assert.throws(() => store.list({ state: 'bogus' }), RangeError);
  assert.doesNotThrow(() => JSON.stringify(store.list()));
  await store.close();
});

test('queue: abort leaves no file, twice is fine, and the body Writable is closed', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, inlineMaxBytes: 0 });
  const msg = await store.beginMessage();
  // Written through to the temp file (created by the first write of a body past the inline limit, here 0).
  await new Promise<void>((resolve, reject) => msg.body.write('Subject: half a message\r\n', (e) => (e ? reject(e) : resolve())));
  assert.equal(files(join(dataDir, 'spool', 'tmp')).length, 1);
  await msg.abort('client went away');
  await msg.abort();
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), []);
  assert.deepEqual(files(join(dataDir, 'spool', 'msg')), []);
  assert.equal(msg.body.destroyed, true);
  await assert.rejects(msg.commit(envelope()), { code: 'ERR_QUEUE_STATE' });
  assert.deepEqual(store.list(), []);
  assert.equal(store.stats().messagesAborted, 1);
  assert.equal(store.stats().inFlight, 0);
  await store.close();
});

test('queue: a source that fails mid-body (client disconnect) leaves nothing and commit rejects', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir });
  const msg = await store.beginMessage();
  async function* broken() {
    yield Buffer.from('Subject: x\r\n\r\n');
    yield Buffer.alloc(100_000, 0x61);
    throw new Error('connection reset');
  }
  await assert.rejects(pipeline(Readable.from(broken()), msg.body), /connection reset/);
  await assert.rejects(msg.commit(envelope()));
  await msg.abort();
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), []);
  assert.deepEqual(files(join(dataDir, 'spool', 'msg')), []);
  assert.deepEqual(store.list(), []);
  assert.equal((await queueOne(store, 'Subject: next\r\n\r\nok')).length, 20, 'the store keeps working');
  await store.close();
});

test('queue: misuse is refused: commit before the body ended, no recipients, double commit', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, inlineMaxBytes: 0 });
  const early = await store.beginMessage();
  early.body.write('Subject: x\r\n');
  await assert.rejects(early.commit(envelope()), { code: 'ERR_QUEUE_STATE' });
  const empty = await store.beginMessage();
  empty.body.end('Subject: x\r\n\r\n');
  await assert.rejects(empty.commit(envelope({ recipients: [] })), { code: 'ERR_QUEUE_STATE' });
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), [], 'failed commits removed their temp data');
  const ok = await store.beginMessage();
  ok.body.end('Subject: x\r\n\r\n');
  const first = ok.commit(envelope());
  await assert.rejects(ok.commit(envelope()), { code: 'ERR_QUEUE_STATE' });
  await first;
  await ok.abort(); // after a commit: a no-op, the message stays queued
  assert.equal(store.list().length, 1);
  assert.equal(files(join(dataDir, 'spool', 'msg')).length, 1);
  await store.close();
});

for (const inline of [true, false]) test(`queue: 200 concurrent commits are all durable and share far fewer database commits and WAL syncs (${inline ? 'inline bodies' : 'spool files'})`, async (t) => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, ...(inline ? {} : { inlineMaxBytes: 0 }) });
  const n = 200;
  const ids = await Promise.all(
    Array.from({ length: n }, (_, i) => queueOne(store, `Message-ID: <c${i}@test>\r\nSubject: ${i}\r\n\r\nbody ${i}\r\n`)),
  );
  const stats = store.stats();
  t.diagnostic(`${n} messages: ${stats.dbCommits} database commits, ${stats.walSyncs} WAL fdatasyncs, ${stats.dirSyncs} directory fsyncs, largest batch ${stats.largestBatch}`);
  await store.close();
  assert.equal(new Set(ids).size, n);
  assert.equal(stats.messagesCommitted, n);
  assert.equal(stats.inlineBodies, inline ? n : 0);
  if (inline) assert.equal(stats.dirSyncs, 0, 'inline bodies need no directory fsync');
  else assert.equal(stats.dirSyncs, stats.dbCommits, 'one directory fsync per database commit');
  // At most one per batch, plus one in the background after the schema transaction at open.
  assert.ok(stats.walSyncs >= 1 && stats.walSyncs <= stats.dbCommits + 1, `one WAL fdatasync per database commit at most, got ${stats.walSyncs} for ${stats.dbCommits}`);
  assert.ok(stats.dbCommits <= n / 4, `expected at most ${n / 4} database commits for ${n} messages, got ${stats.dbCommits}`);
  assert.ok(stats.largestBatch >= 8, `largest batch ${stats.largestBatch}`);

  const again = QueueStore.open({ dataDir });
  const listed = again.list();
  assert.equal(listed.length, n);
  assert.deepEqual(new Set(listed.map((m) => m.queueId)), new Set(ids));
  assert.equal(files(join(dataDir, 'spool', 'msg')).length, inline ? 0 : n);
  assert.equal(again.list({ messageId: '<c117@test>' }).length, 1);
  const i = ids.indexOf(again.list({ messageId: '<c117@test>' })[0]!.queueId);
  assert.equal(again.readBody(ids[i]!)?.toString(), 'Message-ID: <c117@test>\r\nSubject: 117\r\n\r\nbody 117\r\n');
  await again.close();
});

test('queue: a body up to the inline limit is stored inline, one byte more spills to a spool file', async () => {
  const dataDir = tempDataDir();
  const limit = 1000;
  const store = QueueStore.open({ dataDir, inlineMaxBytes: limit });
  const head = 'Message-ID: <edge@test>\r\n\r\n';
  const fits = head + 'x'.repeat(limit - head.length);
  const over = head + 'y'.repeat(limit - head.length + 1);
  // Many small writes, as the SMTP layer makes them: buffered until the limit, then the file takes over.
  const inChunks = async (body: string): Promise<string> => {
    const msg = await store.beginMessage();
    const parts = Array.from({ length: Math.ceil(body.length / 97) }, (_, i) => Buffer.from(body.slice(i * 97, i * 97 + 97)));
    await pipeline(Readable.from(parts), msg.body);
    await msg.commit(envelope());
    return msg.queueId;
  };
  const a = await inChunks(fits);
  const b = await inChunks(over);
  assert.equal(store.get(a)?.bodyInline, true);
  assert.equal(store.get(b)?.bodyInline, false);
  assert.equal(store.get(b)?.bodyPath, `spool/msg/${b}.eml`);
  assert.equal(store.readBody(a)?.toString(), fits);
  assert.equal(store.readBody(b)?.toString(), over);
  assert.equal(readFileSync(join(dataDir, 'spool', 'msg', `${b}.eml`), 'utf8'), over);
  assert.equal(store.get(a)?.messageId, '<edge@test>');
  assert.equal(store.get(b)?.messageId, '<edge@test>');
  assert.deepEqual(store.readHeaders(a), { headers: 'Message-ID: <edge@test>\r\n', truncated: false });
  assert.equal(store.stats().inlineBodies, 1);
  assert.equal(store.stats().dirSyncs, 1, 'only the spilled body needed a directory fsync');
  // An inline message in flight has no file; one that spilled has a temp file until abort removes it.
  const small = await store.beginMessage();
  small.body.write('Subject: small\r\n');
  const big = await store.beginMessage();
  await new Promise<void>((resolve, reject) => big.body.write(Buffer.alloc(limit + 1, 0x61), (e) => (e ? reject(e) : resolve())));
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), [`${big.queueId}.tmp`]);
  await small.abort();
  await big.abort();
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), []);
  await store.close();
});

test('queue: a 64 MiB body streams to disk in bounded memory', async (t) => {
  // Measure what stays reachable, not the generator's garbage: collect every 4 MiB, then sample.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir });
  const chunk = 64 * 1024;
  const total = 64 * 1024 * 1024;
  gc();
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakArrayBuffers = before.arrayBuffers;
  let peakHeap = before.heapUsed;
  const header = Buffer.from('Message-ID: <big@test>\r\nSubject: big\r\n\r\n');
  async function* generate() {
    yield header;
    for (let sent = 0; sent < total; sent += chunk) {
      if (sent % (4 * 1048576) === 0) {
        gc();
        const m = process.memoryUsage();
        peakRss = Math.max(peakRss, m.rss);
        peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers);
        peakHeap = Math.max(peakHeap, m.heapUsed);
      }
      yield Buffer.alloc(chunk, 0x41 + ((sent / chunk) % 26));
    }
  }
  const msg = await store.beginMessage();
  await pipeline(Readable.from(generate()), msg.body);
  await msg.commit(envelope());
  const detail = store.get(msg.queueId);
  assert.ok(detail);
  assert.equal(detail.messageId, '<big@test>');
  assert.equal(detail.size, total + header.length);
  await store.close();
  const mib = (x: number) => `${(x / 1048576).toFixed(1)} MiB`;
  const growth = { arrayBuffers: peakArrayBuffers - before.arrayBuffers, heap: peakHeap - before.heapUsed, rss: peakRss - before.rss };
  t.diagnostic(`growth while streaming: arrayBuffers ${mib(growth.arrayBuffers)}, heap ${mib(growth.heap)}, rss ${mib(growth.rss)}`);
  assert.ok(growth.arrayBuffers < 12 * 1048576, `arrayBuffers grew by ${mib(growth.arrayBuffers)} for a ${mib(total)} body`);
  assert.ok(growth.heap < 8 * 1048576, `heap grew by ${mib(growth.heap)} for a ${mib(total)} body`);
  assert.ok(growth.rss < 32 * 1048576, `rss grew by ${mib(growth.rss)} for a ${mib(total)} body`);
});

test('queue: recovery removes temp files and uncommitted bodies, keeps committed ones, flags missing bodies', async () => {
  const dataDir = tempDataDir();
  const logger = new MemoryLogger();
  const store = QueueStore.open({ dataDir, logger, inlineMaxBytes: 0 });
  const kept = await queueOne(store, 'Subject: kept\r\n\r\n.');
  const lost = await queueOne(store, 'Subject: lost\r\n\r\n.');
  await store.close();
  // Inline bodies are committed with their record: recovery has nothing to check for them.
  const inlineStore = QueueStore.open({ dataDir, logger });
  const inline = await queueOne(inlineStore, 'Subject: inline\r\n\r\n.');
  await inlineStore.close();
  // What a crash leaves behind, made by hand: a temp file (DATA cut off), a renamed body whose commit record never
  // made it, and a committed message whose body vanished. (kill -9 itself is covered by the strace test's child.)
  const tmp = join(dataDir, 'spool', 'tmp');
  const msgDir = join(dataDir, 'spool', 'msg');
  const orphanTemp = `${newQueueId()}.tmp`;
  const orphanBody = `${newQueueId()}.eml`;
  writeFileSync(join(tmp, orphanTemp), 'Subject: cut off\r\n');
  writeFileSync(join(msgDir, orphanBody), 'Subject: never committed\r\n\r\n.');
  writeFileSync(join(msgDir, 'README'), 'not ours');
  unlinkSync(join(msgDir, `${lost}.eml`));

  const again = QueueStore.open({ dataDir, logger });
  assert.deepEqual(again.recovery, { tempFilesRemoved: 1, uncommittedBodiesRemoved: 1, missingBodies: [lost], badBodies: [] });
  assert.deepEqual(files(tmp), []);
  assert.deepEqual(files(msgDir).sort(), [`${kept}.eml`, 'README'].sort());
  assert.deepEqual(again.list({ state: 'queued' }).map((m) => m.queueId), [kept, inline]);
  assert.equal(again.readBody(inline)?.toString(), 'Subject: inline\r\n\r\n.');
  assert.deepEqual(again.list({ state: 'corrupt' }).map((m) => m.queueId), [lost]);
  assert.equal(again.get(lost)?.stateReason, 'body file missing at recovery');
  assert.ok(logger.records.some((r) => r.level === 'error' && r.fields.queue_id === lost));
  await again.close();
});

test('queue: one receiving store per data directory; read-only stores may look alongside', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir, inlineMaxBytes: 0 });
  const id = await queueOne(store, 'Subject: x\r\n\r\n.');
  assert.throws(() => QueueStore.open({ dataDir }), (err: unknown) => err instanceof RelayguardError && err.code === 'ERR_QUEUE_LOCKED');
  const reader = QueueStore.open({ dataDir, readOnly: true });
  assert.equal(reader.recovery, null);
  assert.deepEqual(reader.list().map((m) => m.queueId), [id]);
  await assert.rejects(reader.beginMessage(), { code: 'ERR_QUEUE_READONLY' });
  const pending = await store.beginMessage();
  await new Promise<void>((resolve, reject) => pending.body.write('Subject: in flight\r\n', (e) => (e ? reject(e) : resolve())));
  assert.equal(files(join(dataDir, 'spool', 'tmp')).length, 1, 'the reader did not run recovery');
  await reader.close();
  await store.close();
  assert.deepEqual(files(join(dataDir, 'spool', 'tmp')), [], 'close aborted the message in flight');
  await QueueStore.open({ dataDir }).close(); // the lock was released
  assert.throws(() => QueueStore.open({ dataDir: join(dataDir, 'nothing-here'), readOnly: true }), { code: 'ERR_QUEUE_OPEN' });
});

test('queue: close() lets commits under way finish and aborts bodies still streaming', async () => {
  const dataDir = tempDataDir();
  const store = QueueStore.open({ dataDir });
  const committing = await store.beginMessage();
  committing.body.end('Message-ID: <closing@test>\r\n\r\n.');
  const commit = committing.commit(envelope());
  const streaming = await store.beginMessage();
  streaming.body.write('Subject: still streaming\r\n');
  await store.close();
  await commit;
  assert.equal(streaming.body.destroyed, true);
  const again = QueueStore.open({ dataDir });
  assert.deepEqual(again.list().map((m) => m.messageId), ['<closing@test>']);
  assert.equal(again.recovery?.tempFilesRemoved, 0);
  await again.close();
});

test('queue: closed store refuses new work', async () => {
  const store = QueueStore.open({ dataDir: tempDataDir() });
  await store.close();
  await store.close();
  await assert.rejects(store.beginMessage(), { code: 'ERR_QUEUE_CLOSED' });
  assert.throws(() => store.list(), { code: 'ERR_QUEUE_CLOSED' });
});

test('queue: checkSpace compares free space with 1.5 x the message size', async () => {
  const store = QueueStore.open({ dataDir: tempDataDir() });
  assert.equal(store.checkSpace(10 * 1024 * 1024), 'ok');
  assert.equal(store.checkSpace(Number.MAX_SAFE_INTEGER), 'insufficient');
  const strict = QueueStore.open({ dataDir: tempDataDir(), minFreeBytes: Number.MAX_SAFE_INTEGER });
  assert.equal(strict.checkSpace(0), 'insufficient');
  await strict.close();
  await store.close();
});

test('queue: write errors map to 451/452 replies', async () => {
  const { toQueueWriteError } = await import('./queue-errors.ts');
  const nospace = toQueueWriteError(Object.assign(new Error('no space'), { code: 'ENOSPC' }), 'writing');
  assert.equal(nospace.code, 'ERR_QUEUE_NOSPACE');
  assert.deepEqual(toReply(nospace), { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage' });
  const full = toQueueWriteError(Object.assign(new Error('database or disk is full'), { code: 'ERR_SQLITE_ERROR', errcode: 13 }), 'committing');
  assert.equal(full.code, 'ERR_QUEUE_NOSPACE');
  const eio = toQueueWriteError(Object.assign(new Error('i/o'), { code: 'EIO' }), 'syncing');
  assert.equal(eio.code, 'ERR_QUEUE_WRITE');
  assert.deepEqual(toReply(eio), { code: 451, enhanced: '4.3.0', text: 'Error: queue file write error' });
  assert.equal((eio.cause as { code: string }).code, 'EIO');
});

test('queue: a failed WAL sync fails the commit (451), takes the records back and never acknowledges', async () => {
  const dataDir = tempDataDir();
  const logger = new MemoryLogger();
  const store = QueueStore.open({ dataDir, logger });
  const ok = await queueOne(store, 'Message-ID: <before@test>\r\n\r\n.');
  // Pull the WAL file out from under the store: SQLite keeps writing to its descriptor, but the sync can no longer
  // reach a linked WAL file, so nothing committed from now on may count as durable.
  unlinkSync(join(dataDir, 'queue.db-wal'));
  const results = await Promise.allSettled([1, 2, 3].map((i) => queueOne(store, `Message-ID: <lost${i}@test>\r\n\r\n.`)));
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.equal((r as PromiseRejectedResult).reason.code, 'ERR_QUEUE_WRITE');
    assert.deepEqual(toReply((r as PromiseRejectedResult).reason), { code: 451, enhanced: '4.3.0', text: 'Error: queue file write error' });
  }
  assert.deepEqual(store.list().map((m) => m.queueId), [ok], 'the unsynced records were taken back');
  assert.equal(store.stats().messagesFailed, 3);
  await store.close();
});
