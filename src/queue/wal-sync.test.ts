import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WalSync } from './wal-sync.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function walFile(): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-walsync-'));
  dirs.push(d);
  const p = join(d, 'queue.db-wal');
  writeFileSync(p, 'frames');
  return p;
}

test('wal sync: concurrent callers share syncs; each resolves after a sync that started after its call', async () => {
  const w = new WalSync(walFile());
  await w.sync();
  assert.equal(w.syncs, 1);
  const calls = Array.from({ length: 10 }, () => w.sync());
  await Promise.all(calls);
  // The first call starts a sync; the nine that arrive while it runs share the one after it.
  assert.equal(w.syncs, 3);
  w.close();
  await assert.rejects(w.sync(), /closed/);
});

test('wal sync: a WAL file replaced behind its back is reopened; a missing one fails the sync', async () => {
  const path = walFile();
  const w = new WalSync(path);
  await w.sync();
  unlinkSync(path);
  writeFileSync(path, 'new frames');
  await w.sync();
  assert.equal(w.syncs, 2);
  unlinkSync(path);
  await assert.rejects(w.sync(), { code: 'ENOENT' });
  assert.throws(() => w.syncNow(), { code: 'ENOENT' });
  writeFileSync(path, 'again');
  w.syncNow();
  assert.equal(w.syncs, 3);
  w.close();
});

test('wal sync: syncSoon costs nothing when another sync starts first, and syncs on its own otherwise', async () => {
  const w = new WalSync(walFile());
  const errors: unknown[] = [];
  const onError = (e: unknown): void => { errors.push(e); };
  w.syncSoon(onError, 20);
  await w.sync(); // covers what syncSoon was asked for
  await sleep(60);
  assert.equal(w.syncs, 1, 'the background sync was skipped');
  w.syncSoon(onError, 20);
  w.syncSoon(onError, 20); // one pending at a time
  await sleep(80);
  assert.equal(w.syncs, 2);
  assert.deepEqual(errors, []);
  w.syncSoon(onError, 20);
  w.close(); // cancels it
  await sleep(60);
  assert.equal(w.syncs, 2);
});
