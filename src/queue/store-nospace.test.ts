/**
 * Disk full (hostile-inputs T4): the queue lives on a tiny tmpfs. Needs root (mount); it runs as root here, and a
 * failed mount fails the test rather than skipping it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { toReply } from '../core/errors.ts';
import { QueueStore } from './store.ts';
import type { IncomingEnvelope } from './store.ts';

const mounts: string[] = [];

function mountTmpfs(options: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-nospace-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`This test needs root to mount a tmpfs (mount -t tmpfs -o ${options}): ${String(err)}`);
  }
  mounts.push(dir);
  return dir;
}

let small = '';
let fewInodes = '';
before(() => {
  small = mountTmpfs('size=256k');
  fewInodes = mountTmpfs('size=4m,nr_inodes=64');
});
after(() => {
  for (const dir of mounts) {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

const ENVELOPE: IncomingEnvelope = {
  sender: 'a@example.org',
  recipients: [{ address: 'b@example.net' }],
  clientIp: '192.0.2.1',
  helo: 'h.example.org',
  user: null,
  listener: 'mx',
};

function spoolFiles(dataDir: string): string[] {
  return [...readdirSync(join(dataDir, 'spool', 'tmp')), ...readdirSync(join(dataDir, 'spool', 'msg'))];
}

async function queueOne(store: QueueStore, body: Buffer | string): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit(ENVELOPE);
  return msg.queueId;
}

/** Fills the filesystem with one file until ENOSPC; returns its path. */
function fill(path: string): string {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(4096, 0x78);
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    assert.equal((err as { code?: unknown }).code, 'ENOSPC');
  } finally {
    closeSync(fd);
  }
  return path;
}

test('queue: disk fills up mid-DATA -> ERR_QUEUE_NOSPACE (452 4.3.1), temp data removed, next message queued', async () => {
  const dataDir = join(small, 'a');
  const store = QueueStore.open({ dataDir });
  const msg = await store.beginMessage();
  async function* big() {
    yield Buffer.from('Message-ID: <too-big@test>\r\n\r\n');
    for (let i = 0; i < 64; i++) yield Buffer.alloc(16 * 1024, 0x61); // 1 MiB into 256 KiB
  }
  await assert.rejects(pipeline(Readable.from(big()), msg.body), { code: 'ERR_QUEUE_NOSPACE' });
  const err = await msg.commit(ENVELOPE).then(
    () => assert.fail('commit must not succeed'),
    (e: unknown) => e,
  );
  assert.equal((err as { code?: unknown }).code, 'ERR_QUEUE_NOSPACE');
  assert.equal(((err as Error).cause as { code?: unknown }).code, 'ENOSPC');
  assert.deepEqual(toReply(err), { code: 452, enhanced: '4.3.1', text: 'Insufficient system storage' });
  await msg.abort();
  assert.deepEqual(spoolFiles(dataDir), [], 'the partial body was removed');
  assert.deepEqual(store.list(), []);

  // Removing the partial body freed the space: the next message is queued.
  const id = await queueOne(store, 'Message-ID: <after@test>\r\n\r\nsmall\r\n');
  assert.deepEqual(store.list().map((m) => m.queueId), [id]);
  assert.equal(store.stats().messagesFailed, 1);
  await store.close();
  rmSync(dataDir, { recursive: true });
});

for (const inline of [false, true]) test(`queue: no room for the commit record -> ERR_QUEUE_NOSPACE, body removed; works again once space is freed (${inline ? 'inline bodies' : 'spool files'})`, async () => {
  const dataDir = join(small, inline ? 'b-inline' : 'b');
  const store = QueueStore.open({ dataDir, ...(inline ? {} : { inlineMaxBytes: 0 }) });
  await queueOne(store, 'Subject: first\r\n\r\n.');
  const filler = fill(join(small, 'filler-b'));
  assert.equal(store.checkSpace(1024), 'insufficient');
  // Spool files: an empty body needs no data block, so the failure comes from the index (SQLITE_FULL) after the
  // rename. Inline bodies: the WAL write of the transaction fails (SQLITE_FULL), before any sync.
  for (const body of ['', 'Subject: needs a block\r\n\r\n.', `Subject: bigger\r\n\r\n${'z'.repeat(30_000)}`]) {
    await assert.rejects(queueOne(store, body), { code: 'ERR_QUEUE_NOSPACE' });
    assert.equal(spoolFiles(dataDir).length, inline ? 0 : 1, 'only the first message is in the spool');
    assert.equal(store.list().length, 1);
  }
  unlinkSync(filler);
  assert.equal(store.checkSpace(1024), 'ok');
  await queueOne(store, 'Subject: after\r\n\r\n.');
  assert.equal(store.list().length, 2);
  await store.close();
  const again = QueueStore.open({ dataDir });
  assert.equal(again.list().length, 2);
  assert.deepEqual(again.recovery, { tempFilesRemoved: 0, uncommittedBodiesRemoved: 0, missingBodies: [], badBodies: [] });
  await again.close();
  rmSync(dataDir, { recursive: true });
});

test('queue: no inode left for the temp file -> the body fails with ERR_QUEUE_NOSPACE; an inline body needs no inode', async () => {
  const dataDir = join(fewInodes, 'q');
  const store = QueueStore.open({ dataDir, inlineMaxBytes: 1024 });
  // The WAL file exists from the first commit on; filling the inodes afterwards leaves it usable.
  await queueOne(store, 'Subject: before\r\n\r\n.');
  const fillDir = join(fewInodes, 'fill');
  mkdirSync(fillDir);
  let n = 0;
  try {
    for (;;) writeFileSync(join(fillDir, String(n++)), '');
  } catch (err) {
    assert.equal((err as { code?: unknown }).code, 'ENOSPC');
  }
  assert.equal(store.checkSpace(0), 'insufficient', 'no free inodes counts as full (452 at MAIL)');
  // A body past the inline limit needs a temp file: the write that spills it fails, nothing is left behind.
  const msg = await store.beginMessage();
  await assert.rejects(pipeline(Readable.from([Buffer.alloc(2048, 0x61)]), msg.body), { code: 'ERR_QUEUE_NOSPACE' });
  await assert.rejects(msg.commit(ENVELOPE), { code: 'ERR_QUEUE_NOSPACE' });
  await msg.abort();
  assert.deepEqual(spoolFiles(dataDir), []);
  // An inline body goes into the index alone.
  await queueOne(store, 'Subject: inline\r\n\r\n.');
  assert.equal(store.list().length, 2);
  rmSync(fillDir, { recursive: true });
  await queueOne(store, `Subject: file\r\n\r\n${'f'.repeat(2048)}`);
  assert.equal(store.list().length, 3);
  assert.equal(spoolFiles(dataDir).length, 1);
  await store.close();
});

test('queue: the MAIL-time space check reuses a recent statfs only with room to spare', async () => {
  const { SpaceChecker } = await import('./space.ts');
  let now = 0;
  const roomy = new SpaceChecker(tmpdir(), 0, () => now);
  assert.equal(roomy.check(1024), 'ok');
  // A tiny tmpfs never has the margin: every check asks the kernel, so filling it is seen at once.
  const dir = join(fewInodes, 'space');
  mkdirSync(dir);
  const tight = new SpaceChecker(dir, 0, () => now);
  assert.equal(tight.check(1024), 'ok');
  const filler = fill(join(fewInodes, 'space-filler'));
  assert.equal(tight.check(1024), 'insufficient', 'no reuse near the limit');
  unlinkSync(filler);
  now += 1;
  assert.equal(tight.check(1024), 'ok');
  rmSync(dir, { recursive: true });
});
