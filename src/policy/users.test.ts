import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ManualClock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { testDirectory } from '../testing/directory.ts';
import { normalizeDomain, normalizeOwnedAddress, normalizeUserName } from './users.ts';
import { isPasswordHash, verifyPassword } from './password.ts';

const FAST = { N: 1024, r: 8, p: 1 };

function store(): ReturnType<typeof testDirectory> {
  return testDirectory(':memory:', { scrypt: FAST, clock: new ManualClock(1_700_000_000_000) });
}

function code(c: string) {
  return (e: unknown) => e instanceof RelayguardError && e.code === c;
}

test('users: add, get, list, authenticate', async () => {
  const s = store();
  const info = await s.add('Alice@Example.ORG', 'pw1', { addresses: ['alias@example.org'] });
  assert.deepEqual(info, {
    name: 'alice@example.org',
    createdAt: 1_700_000_000_000,
    disabled: false,
    addresses: ['alias@example.org', 'alice@example.org'],
  });
  await s.add('bob', 'pw2');
  assert.deepEqual((await s.list()).map((u) => [u.name, u.addresses]), [['alice@example.org', ['alias@example.org', 'alice@example.org']], ['bob', []]]);
  assert.equal(await s.authenticate('alice@example.org', 'pw1'), true);
  assert.equal(await s.authenticate('ALICE@example.org', 'pw1'), true);
  assert.equal(await s.authenticate('alice@example.org', 'pw2'), false);
  assert.equal(await s.authenticate('bob', 'pw2'), true);
  assert.equal(await s.authenticate('nobody', 'pw2'), false);
  assert.equal(await s.authenticate('', ''), false);
  assert.equal(await s.authenticate('bad name\r\n', 'x'), false);
  assert.equal(await s.get('nobody'), null);
  await s.close();
});

test('users: unknown users cost one scrypt verification too', async () => {
  // Counted, not timed: an unknown name must do the same verification work as a known one.
  const calls: string[] = [];
  const s = testDirectory(':memory:', {
    scrypt: { N: 1024, r: 8, p: 1 },
    verify: async (pw, encoded) => { calls.push(encoded); return verifyPassword(pw, encoded); },
  });
  await s.add('timed', 'pw');
  assert.equal(await s.authenticate('timed', 'wrong'), false);
  assert.equal(calls.length, 1);
  assert.equal(await s.authenticate('nobody', 'wrong'), false);
  assert.equal(calls.length, 2, 'the unknown user was verified against a dummy hash');
  assert.ok(isPasswordHash(calls[1]!), 'a real scrypt hash, so the cost is the same');
  assert.notEqual(calls[1], calls[0]);
  assert.equal(await s.authenticate('timed', 'pw'), true);
  await s.close();
});

test('users: duplicate, missing and invalid users have stable codes', async () => {
  const s = store();
  await s.add('carol', 'pw');
  await assert.rejects(s.add('CAROL', 'pw'), code('ERR_USER_EXISTS'));
  await assert.rejects(s.remove('dave'), code('ERR_USER_NOT_FOUND'));
  await assert.rejects(s.setPassword('dave', 'x'), code('ERR_USER_NOT_FOUND'));
  await assert.rejects(s.add('', 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('has space', 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('ctl\u0000', 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('x'.repeat(256), 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('bad@', 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('a%b@example.org', 'pw'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('erin', ''), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('erin', 'a\u0000b'), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('erin', 'p'.repeat(256)), code('ERR_USER_INVALID'));
  await assert.rejects(s.add('erin', 'pw', { addresses: ['not-an-address'] }), code('ERR_USER_INVALID'));
  assert.equal(await s.get('erin'), null);
  await s.close();
});

test('users: remove, setPassword, disable', async () => {
  const s = store();
  await s.add('frank@example.org', 'old');
  await s.setPassword('frank@example.org', 'new');
  assert.equal(await s.authenticate('frank@example.org', 'old'), false);
  assert.equal(await s.authenticate('frank@example.org', 'new'), true);
  await s.setDisabled('frank@example.org', true);
  assert.equal(await s.authenticate('frank@example.org', 'new'), false);
  assert.equal((await s.get('frank@example.org'))?.disabled, true);
  await s.setDisabled('frank@example.org', false);
  assert.equal(await s.authenticate('frank@example.org', 'new'), true);
  await s.remove('Frank@example.org');
  assert.equal(await s.get('frank@example.org'), null);
  assert.equal(await s.owns('frank@example.org', 'frank@example.org'), false);
  assert.equal(await s.authenticate('frank@example.org', 'new'), false);
  await s.close();
});

test('users: owns is case-insensitive on the whole address and supports @domain', async () => {
  const s = store();
  await s.add('grace@example.org', 'pw', { addresses: ['Sales@Example.org', '@corp.example'] });
  await s.add('heidi', 'pw');
  assert.equal(await s.owns('grace@example.org', 'grace@example.org'), true);
  assert.equal(await s.owns('GRACE@EXAMPLE.ORG', 'Grace@Example.Org.'), true);
  assert.equal(await s.owns('grace@example.org', 'sales@example.org'), true);
  assert.equal(await s.owns('grace@example.org', 'anyone@corp.example'), true);
  assert.equal(await s.owns('grace@example.org', 'anyone@sub.corp.example'), false);
  assert.equal(await s.owns('grace@example.org', 'other@example.org'), false);
  assert.equal(await s.owns('grace@example.org', 'x%grace@example.org'), false);
  assert.equal(await s.owns('grace@example.org', '@corp.example'), false);
  assert.equal(await s.owns('heidi', 'grace@example.org'), false);
  assert.equal(await s.owns('heidi', 'heidi'), false);
  await s.addAddress('heidi', 'heidi@example.net');
  assert.equal(await s.owns('heidi', 'HEIDI@example.net'), true);
  await s.removeAddress('heidi', 'heidi@example.net');
  assert.equal(await s.owns('heidi', 'heidi@example.net'), false);
  await assert.rejects(s.removeAddress('heidi', 'heidi@example.net'), code('ERR_USER_NOT_FOUND'));
  await s.close();
});

test('users: IDN domains are stored as A-labels', async () => {
  const s = store();
  await s.add('ivan@b\u00fccher.example', 'pw');
  assert.equal((await s.get('ivan@b\u00fccher.example'))?.name, 'ivan@xn--bcher-kva.example');
  assert.equal(await s.owns('ivan@xn--bcher-kva.example', 'IVAN@B\u00dcCHER.example'), true);
  await s.close();
});

test('users: domains are managed in the database', async () => {
  const s = store();
  assert.equal(await s.addDomain('Example.ORG.'), 'example.org');
  await s.addDomain('b\u00fccher.example');
  await assert.rejects(s.addDomain('example.org'), code('ERR_DOMAIN_EXISTS'));
  await assert.rejects(s.addDomain('bad domain'), code('ERR_DOMAIN_INVALID'));
  await assert.rejects(s.addDomain('-bad.example'), code('ERR_DOMAIN_INVALID'));
  assert.deepEqual(await s.listDomains(), ['example.org', 'xn--bcher-kva.example']);
  assert.equal(await s.hasDomain('EXAMPLE.org'), true);
  assert.equal(await s.hasDomain('other.org'), false);
  await s.removeDomain('example.org');
  await assert.rejects(s.removeDomain('example.org'), code('ERR_DOMAIN_NOT_FOUND'));
  assert.deepEqual(await s.listDomains(), ['xn--bcher-kva.example']);
  await s.close();
});

test('users: data survives reopening a file database, and a shared connection works', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-users-'));
  try {
    const file = join(dir, 'relayguard.db');
    const a = testDirectory(file, { scrypt: FAST });
    await a.add('judy', 'pw', { addresses: ['judy@example.org'] });
    await a.addDomain('example.org');
    await a.close();
    const db = new DatabaseSync(file);
    const b = testDirectory(db, { scrypt: FAST });
    assert.equal(await b.authenticate('judy', 'pw'), true);
    assert.equal(await b.owns('judy', 'judy@example.org'), true);
    assert.deepEqual(await b.listDomains(), ['example.org']);
    await b.close(); // does not close a connection it was given
    assert.equal(db.isOpen, true);
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('users: normalization helpers', async () => {
  assert.equal(normalizeDomain('Example.COM.'), 'example.com');
  assert.equal(normalizeDomain('a..b'), null);
  assert.equal(normalizeDomain('[127.0.0.1]'), null);
  assert.equal(normalizeOwnedAddress('"quoted"@example.org'), null);
  assert.equal(normalizeOwnedAddress('a!b@example.org'), null);
  assert.equal(normalizeOwnedAddress('.a@example.org'), null);
  assert.equal(normalizeOwnedAddress('@Example.org'), '@example.org');
  assert.equal(normalizeUserName('Bob'), 'bob');
});
