/** UserAccounts.addMany: the import path of `relayguard user add -i` (checked first, hashed a few at a time, one transaction). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { testDirectory } from '../testing/directory.ts';
import { checkPassword } from './users.ts';

const FAST = { N: 1024, r: 8, p: 1 };
const code = (c: string) => (e: unknown) => e instanceof RelayguardError && e.code === c;

test('addMany adds every user in one go, with their addresses and working passwords', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-users-bulk-'));
  try {
    const s = testDirectory(join(dir, 'relayguard.db'), { scrypt: FAST, clock: new ManualClock(1_700_000_000_000) });
    const progress: number[] = [];
    const users = Array.from({ length: 25 }, (_, i) => ({ name: `User${i}@Example.ORG`, password: `pw ${i}`, addresses: i === 0 ? ['@example.net'] : [] }));
    const added = await s.addMany(users, { concurrency: 3, onHashed: (done, total) => { assert.equal(total, 25); progress.push(done); } });
    assert.deepEqual(progress, Array.from({ length: 25 }, (_, i) => i + 1));
    assert.equal(added.length, 25);
    assert.deepEqual(added[0], { name: 'user0@example.org', createdAt: 1_700_000_000_000, disabled: false, addresses: ['@example.net', 'user0@example.org'] });
    assert.equal((await s.list()).length, 25);
    assert.equal(await s.authenticate('user7@example.org', 'pw 7'), true);
    assert.equal(await s.authenticate('user7@example.org', 'pw 8'), false);
    assert.equal(await s.owns('user0@example.org', 'anyone@example.net'), true);
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('addMany writes nothing when one entry is invalid, repeated or exists already', async () => {
  const s = testDirectory(':memory:', { scrypt: FAST });
  await s.add('carol', 'pw');
  await assert.rejects(s.addMany([{ name: 'alice', password: 'pw' }, { name: 'bad name', password: 'pw' }]), code('ERR_USER_INVALID'));
  await assert.rejects(s.addMany([{ name: 'alice', password: 'pw' }, { name: 'bob', password: '' }]), code('ERR_USER_INVALID'));
  await assert.rejects(s.addMany([{ name: 'alice', password: 'pw', addresses: ['not an address'] }]), code('ERR_USER_INVALID'));
  await assert.rejects(s.addMany([{ name: 'alice', password: 'pw' }, { name: 'ALICE', password: 'pw2' }]), code('ERR_USER_EXISTS'));
  await assert.rejects(s.addMany([{ name: 'alice', password: 'pw' }, { name: 'Carol', password: 'pw2' }]), code('ERR_USER_EXISTS'));
  assert.deepEqual((await s.list()).map((u) => u.name), ['carol']);
  assert.deepEqual(await s.addMany([]), []);
});

test('checkPassword never repeats the password in its message', () => {
  for (const pw of ['', 'x'.repeat(300), 'with\nnewline', 'nul\0byte']) {
    assert.throws(() => checkPassword(pw), (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_USER_INVALID' && (pw === '' || !e.message.includes(pw)));
  }
  checkPassword('a fine password');
});
