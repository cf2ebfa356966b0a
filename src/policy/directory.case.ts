/**
 * The contract of DirectoryStore (directory.ts), as node:test tests registered against any implementation:
 * store/sqlite-directory.test.ts and store/postgres-directory.test.ts call directoryContract() with a harness.
 * Every implementation must give the same answers, in the same order, with the same error codes; the
 * differential test holds them to the answers of the synchronous UserStore/AliasStore the relay used before the
 * port (recorded in directory.golden.json when those classes were removed).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { readFileSync } from 'node:fs';
import { UserAccounts, type DirectoryStore, type UserRecord } from './directory.ts';
import { hashPassword, isPasswordHash, verifyPassword, type ScryptParams } from './password.ts';
import type { AliasEntry, AliasTarget, UserInfo } from './directory.ts';

/** directory.golden.json: what the synchronous stores answered. */
interface Golden {
  readonly names: string[];
  readonly addresses: string[];
  readonly added: UserInfo[];
  readonly domainsAdded: string[];
  readonly aliasesAdded: AliasEntry[][];
  readonly getUser: Record<string, UserInfo | null>;
  readonly owns: Record<string, Record<string, boolean>>;
  readonly isMailbox: Record<string, boolean>;
  readonly hasDomain: Record<string, boolean>;
  readonly listUsers: UserInfo[];
  readonly listDomains: string[];
  readonly listAliases: AliasEntry[];
  readonly lookupAlias: Record<string, AliasTarget[] | null>;
}

export interface DirectoryUnderTest {
  /** Opens a store on this directory's data; may be called again (a second writer, or after close: a reopen). */
  open(): Promise<DirectoryStore>;
  /** Closes every store open() made and removes the data. */
  dispose(): Promise<void>;
}

export interface DirectoryHarness {
  /** In test names: "sqlite", "postgres". */
  readonly name: string;
  /** A new, empty directory whose stores read `clock`. */
  fresh(clock: Clock): Promise<DirectoryUnderTest>;
}

const FAST: ScryptParams = { N: 1024, r: 8, p: 1 };
const T0 = 1_700_000_000_000;

let hashes: Promise<string[]> | null = null;
/** Two real encoded hashes ("pw1", "pw2"), made once. */
function someHashes(): Promise<string[]> {
  hashes ??= Promise.all([hashPassword('pw1', FAST), hashPassword('pw2', FAST)]);
  return hashes;
}

function code(c: string) {
  return (e: unknown) => {
    assert.ok(e instanceof RelayguardError, `a RelayguardError, got ${String(e)}`);
    assert.equal(e.code, c, (e as Error).message);
    return true;
  };
}

async function withDirectory(h: DirectoryHarness, fn: (d: DirectoryUnderTest, clock: ManualClock) => Promise<void>): Promise<void> {
  const clock = new ManualClock(T0);
  const d = await h.fresh(clock);
  try {
    await fn(d, clock);
  } finally {
    await d.dispose();
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Registers the contract tests for one implementation. */
export function directoryContract(h: DirectoryHarness): void {
  const t = (name: string, fn: (t: TestContext) => Promise<void>): void => { test(`directory contract (${h.name}): ${name}`, fn); };

  t('users: add, get and list fold case, Unicode form, IDNA and the trailing dot', async () => withDirectory(h, async (d, clock) => {
    const [h1, h2] = await someHashes();
    const s = await d.open();
    const alice = await s.addUser({ name: 'Alice@Example.ORG.', passwordHash: h1!, addresses: ['Alias@B\u00fccher.example.', '@Corp.Example', 'alias@xn--bcher-kva.example'] });
    assert.deepEqual(alice, {
      name: 'alice@example.org', createdAt: T0, disabled: false,
      addresses: ['@corp.example', 'alias@xn--bcher-kva.example', 'alice@example.org'],
    });
    clock.advance(1000);
    assert.deepEqual(await s.addUser({ name: 'Zoe\u0308', passwordHash: h2!, disabled: true }), { name: 'zo\u00eb', createdAt: T0 + 1000, disabled: true, addresses: [] });
    await s.addUser({ name: 'bob', passwordHash: h1! });
    assert.deepEqual(await s.getUser('ZO\u00cb'), { name: 'zo\u00eb', createdAt: T0 + 1000, disabled: true, addresses: [] });
    assert.deepEqual(await s.getUser('ALICE@example.org.'), alice);
    assert.deepEqual((await s.listUsers()).map((u) => u.name), ['alice@example.org', 'bob', 'zo\u00eb']);
    assert.deepEqual((await s.listUsers())[0], alice);
    for (const bad of ['nobody', '', 'bad name\r\n', 'nul\u0000', 'x'.repeat(300)]) assert.equal(await s.getUser(bad), null, JSON.stringify(bad));
  }));

  t('users: searchUsers pages by name and finds a substring of the name or an owned address, any case', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'alice@example.org', passwordHash: h1!, addresses: ['@corp.example'] });
    await s.addUser({ name: 'bob', passwordHash: h1!, addresses: ['bob@shop.example', 'b2@shop.example'] });
    await s.addUser({ name: 'carol@corp.example', passwordHash: h1!, disabled: true });
    await s.addUser({ name: 'dave', passwordHash: h1! });
    const names = (r: { users: readonly UserInfo[] }): string[] => r.users.map((u) => u.name);
    const all = await s.searchUsers({ offset: 0, limit: 2 });
    assert.equal(all.total, 4);
    assert.deepEqual(names(all), ['alice@example.org', 'bob']);
    assert.deepEqual(all.users[1], await s.getUser('bob'), 'the same UserInfo as getUser, addresses included');
    assert.deepEqual(names(await s.searchUsers({ offset: 2, limit: 2 })), ['carol@corp.example', 'dave']);
    assert.deepEqual(await s.searchUsers({ offset: 4, limit: 2 }), { total: 4, users: [] });
    const corp = await s.searchUsers({ search: 'CORP.Example', offset: 0, limit: 10 });
    assert.deepEqual([corp.total, names(corp)], [2, ['alice@example.org', 'carol@corp.example']], 'an owned address or the name');
    assert.deepEqual(names(await s.searchUsers({ search: 'shop', offset: 0, limit: 10 })), ['bob'], 'one row per user, whatever matches');
    assert.deepEqual(await s.searchUsers({ search: '%', offset: 0, limit: 10 }), { total: 0, users: [] }, 'no wildcards');
    assert.deepEqual(names(await s.searchUsers({ search: '  ', offset: 0, limit: 10 })), ['alice@example.org', 'bob', 'carol@corp.example', 'dave']);
  }));

  t('users: errors carry stable codes and a failed write writes nothing', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'carol', passwordHash: h1! });
    await assert.rejects(s.addUser({ name: 'CAROL', passwordHash: h1! }), code('ERR_USER_EXISTS'));
    for (const name of ['', 'has space', 'ctl\u0000', 'x'.repeat(256), 'bad@', 'a%b@example.org', 'a@b@', '@example.org']) {
      await assert.rejects(s.addUser({ name, passwordHash: h1! }), code('ERR_USER_INVALID'), JSON.stringify(name));
    }
    await assert.rejects(s.addUser({ name: 'erin', passwordHash: h1!, addresses: ['ok@example.org', 'not-an-address'] }), code('ERR_USER_INVALID'));
    await assert.rejects(s.addUser({ name: 'erin', passwordHash: h1!, addresses: ['"quoted"@example.org'] }), code('ERR_USER_INVALID'));
    await assert.rejects(s.addUser({ name: 'erin', passwordHash: 'plain text password' }), code('ERR_USER_INVALID'));
    await assert.rejects(s.addUser({ name: 'erin', passwordHash: '' }), code('ERR_USER_INVALID'));
    assert.equal(await s.getUser('erin'), null);
    assert.equal(await s.isMailbox('ok@example.org'), false);
    await assert.rejects(s.removeUser('dave'), code('ERR_USER_NOT_FOUND'));
    await assert.rejects(s.removeUser('bad name'), code('ERR_USER_INVALID'));
    await assert.rejects(s.setPasswordHash('dave', h1!), code('ERR_USER_NOT_FOUND'));
    await assert.rejects(s.setPasswordHash('carol', 'not a hash'), code('ERR_USER_INVALID'));
    await assert.rejects(s.setDisabled('dave', true), code('ERR_USER_NOT_FOUND'));
    await assert.rejects(s.addAddress('dave', 'dave@example.org'), code('ERR_USER_NOT_FOUND'));
    await assert.rejects(s.addAddress('carol', 'not-an-address'), code('ERR_USER_INVALID'));
    await assert.rejects(s.addAddress('carol', 'x!y@example.org'), code('ERR_USER_INVALID'));
    await assert.rejects(s.removeAddress('dave', 'dave@example.org'), code('ERR_USER_NOT_FOUND'));
    await assert.rejects(s.removeAddress('carol', 'carol@example.org'), code('ERR_USER_NOT_FOUND'));
    assert.deepEqual((await s.listUsers()).map((u) => [u.name, u.addresses]), [['carol', []]]);
    assert.equal((await s.credentials('carol'))?.passwordHash, h1);
  }));

  t('users: credentials, setPasswordHash and setDisabled', async () => withDirectory(h, async (d) => {
    const [h1, h2] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'Frank@Example.org', passwordHash: h1! });
    assert.deepEqual(await s.credentials('FRANK@example.ORG.'), { name: 'frank@example.org', passwordHash: h1, disabled: false });
    await s.setPasswordHash('frank@example.org', h2!);
    assert.equal((await s.credentials('frank@example.org'))?.passwordHash, h2);
    assert.ok(isPasswordHash((await s.credentials('frank@example.org'))!.passwordHash));
    await s.setDisabled('FRANK@example.org', true);
    assert.equal((await s.credentials('frank@example.org'))?.disabled, true);
    assert.equal((await s.getUser('frank@example.org'))?.disabled, true);
    assert.equal(await s.isMailbox('frank@example.org'), false, 'a disabled user has no mailbox');
    assert.equal(await s.owns('frank@example.org', 'frank@example.org'), true, 'owns() does not look at the flag (AUTH does)');
    await s.setDisabled('frank@example.org', false);
    assert.equal(await s.isMailbox('frank@example.org'), true);
    for (const bad of ['nobody', '', 'a b', 'nul\u0000x', '\r\n']) assert.equal(await s.credentials(bad), null, JSON.stringify(bad));
  }));

  t('users: owns is case-insensitive on the whole address and "@domain" covers the domain, not subdomains', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'grace@example.org', passwordHash: h1!, addresses: ['Sales@Example.org', '@corp.example'] });
    await s.addUser({ name: 'heidi', passwordHash: h1! });
    await s.addUser({ name: 'ivan@b\u00fccher.example', passwordHash: h1! });
    const cases: [string, string, boolean][] = [
      ['grace@example.org', 'grace@example.org', true],
      ['GRACE@EXAMPLE.ORG', 'Grace@Example.Org.', true],
      ['grace@example.org', 'sales@example.org', true],
      ['grace@example.org', 'anyone@corp.example', true],
      ['grace@example.org', 'anyone@CORP.example.', true],
      ['grace@example.org', 'anyone@sub.corp.example', false],
      ['grace@example.org', 'other@example.org', false],
      ['grace@example.org', 'x%grace@example.org', false],
      ['grace@example.org', 'grace@example.org@evil.example', false],
      ['grace@example.org', '@corp.example', false],
      ['grace@example.org', '"grace"@example.org', false],
      ['grace@example.org', '', false],
      ['heidi', 'grace@example.org', false],
      ['heidi', 'heidi', false],
      ['nobody', 'grace@example.org', false],
      ['bad name', 'grace@example.org', false],
      ['ivan@xn--bcher-kva.example', 'IVAN@B\u00dcCHER.example', true],
      ['IVAN@b\u00fccher.example', 'ivan@xn--bcher-kva.example', true],
    ];
    for (const [user, address, expected] of cases) assert.equal(await s.owns(user, address), expected, `${user} owns ${address}`);
  }));

  t('users: isMailbox is an exact owned address of an enabled user; "@domain" is no catch-all', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'judy@example.org', passwordHash: h1!, addresses: ['Team@Example.org', '@wild.example'] });
    await s.addUser({ name: 'karl', passwordHash: h1!, addresses: ['karl@example.org'] });
    await s.addUser({ name: 'off@example.org', passwordHash: h1!, disabled: true });
    await s.addUser({ name: 'max@b\u00fccher.example', passwordHash: h1! });
    const cases: [string, boolean][] = [
      ['judy@example.org', true], ['JUDY@EXAMPLE.ORG.', true], ['team@example.org', true], ['karl@example.org', true],
      ['anyone@wild.example', false], ['@wild.example', false], ['karl', false], ['off@example.org', false],
      ['max@xn--bcher-kva.example', true], ['MAX@B\u00dcCHER.example', true], ['judy%x@example.org', false],
      ['"judy"@example.org', false], ['', false], ['nul\u0000@example.org', false], ['judy@example.org.evil', false],
    ];
    for (const [address, expected] of cases) assert.equal(await s.isMailbox(address), expected, address);
  }));

  t('users: addAddress is idempotent, removeAddress and removeUser take the address away', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'lena', passwordHash: h1! });
    await s.addAddress('LENA', 'Lena@Example.NET.');
    await s.addAddress('lena', 'lena@example.net');
    await s.addAddress('lena', '@example.com');
    assert.deepEqual((await s.getUser('lena'))?.addresses, ['@example.com', 'lena@example.net']);
    assert.equal(await s.isMailbox('lena@example.net'), true);
    await s.removeAddress('lena', 'LENA@example.net');
    await assert.rejects(s.removeAddress('lena', 'lena@example.net'), code('ERR_USER_NOT_FOUND'));
    assert.equal(await s.owns('lena', 'lena@example.net'), false);
    assert.equal(await s.owns('lena', 'x@example.com'), true);
    await s.removeUser('Lena');
    assert.equal(await s.getUser('lena'), null);
    assert.equal(await s.owns('lena', 'x@example.com'), false);
    await assert.rejects(s.removeUser('lena'), code('ERR_USER_NOT_FOUND'));
    // The name is free again, and comes back without the old addresses.
    assert.deepEqual((await s.addUser({ name: 'lena', passwordHash: h1! })).addresses, []);
  }));

  t('users: addUsers writes all or none', async () => withDirectory(h, async (d) => {
    const [h1, h2] = await someHashes();
    const s = await d.open();
    await s.addUser({ name: 'existing', passwordHash: h1! });
    const batch = (names: string[]): UserRecord[] => names.map((name, i) => ({ name, passwordHash: i % 2 === 0 ? h1! : h2!, addresses: [`${name.split('@')[0]}.alt@example.org`] }));
    await assert.rejects(s.addUsers(batch(['n1', 'n2', 'EXISTING'])), code('ERR_USER_EXISTS'));
    await assert.rejects(s.addUsers(batch(['n1', 'n2', 'N1'])), code('ERR_USER_EXISTS'));
    await assert.rejects(s.addUsers([...batch(['n1']), { name: 'bad name', passwordHash: h1! }]), code('ERR_USER_INVALID'));
    assert.deepEqual((await s.listUsers()).map((u) => u.name), ['existing']);
    assert.equal(await s.isMailbox('n1.alt@example.org'), false);
    const added = await s.addUsers(batch(['N2@Example.org', 'n1']));
    assert.deepEqual(added.map((u) => [u.name, u.addresses]), [['n2@example.org', ['n2.alt@example.org', 'n2@example.org']], ['n1', ['n1.alt@example.org']]]);
    assert.deepEqual((await s.listUsers()).map((u) => u.name), ['existing', 'n1', 'n2@example.org']);
    assert.equal((await s.credentials('n1'))?.passwordHash, h2);
    assert.deepEqual(await s.addUsers([]), []);
  }));

  t('domains: add, list, has and remove fold case, IDNA and the trailing dot', async () => withDirectory(h, async (d) => {
    const s = await d.open();
    assert.equal(await s.addDomain('Example.ORG.'), 'example.org');
    assert.equal(await s.addDomain('B\u00fccher.example'), 'xn--bcher-kva.example');
    await assert.rejects(s.addDomain('example.org'), code('ERR_DOMAIN_EXISTS'));
    await assert.rejects(s.addDomain('xn--bcher-kva.example.'), code('ERR_DOMAIN_EXISTS'));
    for (const bad of ['bad domain', '-bad.example', '', 'a..b', '[127.0.0.1]', '127.0.0.1', 'nul\u0000.example']) {
      await assert.rejects(s.addDomain(bad), code('ERR_DOMAIN_INVALID'), JSON.stringify(bad));
    }
    assert.deepEqual(await s.listDomains(), ['example.org', 'xn--bcher-kva.example']);
    assert.equal(await s.hasDomain('EXAMPLE.org.'), true);
    assert.equal(await s.hasDomain('b\u00fccher.EXAMPLE'), true);
    assert.equal(await s.hasDomain('other.org'), false);
    assert.equal(await s.hasDomain('bad domain'), false);
    await s.removeDomain('EXAMPLE.ORG.');
    await assert.rejects(s.removeDomain('example.org'), code('ERR_DOMAIN_NOT_FOUND'));
    await assert.rejects(s.removeDomain('bad domain'), code('ERR_DOMAIN_NOT_FOUND'));
    assert.deepEqual(await s.listDomains(), ['xn--bcher-kva.example']);
  }));

  t('aliases: lists, the remote flag, exact lookup, removal and error codes', async () => withDirectory(h, async (d) => {
    const s = await d.open();
    assert.deepEqual(await s.addAlias('Team@Local.Test.', ['bob@local.test', 'Alice@LOCAL.test', 'bob@local.test']), [
      { key: 'team@local.test', target: 'bob@local.test', remote: false, source: 'database' },
      { key: 'team@local.test', target: 'Alice@local.test', remote: false, source: 'database' },
    ]);
    await s.addAlias('fwd@local.test', ['friend@remote.test'], { remote: true });
    await s.addAlias('@B\u00fccher.example', ['catch@local.test']);
    assert.deepEqual(await s.lookupAlias('team@local.test'), [{ address: 'Alice@local.test', remote: false }, { address: 'bob@local.test', remote: false }]);
    assert.deepEqual(await s.lookupAlias('fwd@local.test'), [{ address: 'friend@remote.test', remote: true }]);
    assert.deepEqual(await s.lookupAlias('@xn--bcher-kva.example'), [{ address: 'catch@local.test', remote: false }]);
    // lookupAlias takes the key as stored: the resolver normalizes before it asks.
    assert.equal(await s.lookupAlias('Team@Local.Test'), null);
    assert.equal(await s.lookupAlias('nobody@local.test'), null);
    assert.equal(await s.lookupAlias('nul\u0000@local.test'), null);
    assert.equal(await s.lookupAlias(''), null);
    // Adding a target again sets its remote flag.
    await s.addAlias('team@local.test', ['bob@local.test'], { remote: true });
    assert.deepEqual(await s.lookupAlias('team@local.test'), [{ address: 'Alice@local.test', remote: false }, { address: 'bob@local.test', remote: true }]);
    assert.deepEqual((await s.listAliases()).map((e) => `${e.key} ${e.target} ${e.remote} ${e.source}`), [
      '@xn--bcher-kva.example catch@local.test false database',
      'fwd@local.test friend@remote.test true database',
      'team@local.test Alice@local.test false database',
      'team@local.test bob@local.test true database',
    ]);
    await assert.rejects(s.addAlias('a%b@local.test', ['x@local.test']), code('ERR_ALIAS_INVALID'));
    await assert.rejects(s.addAlias('bare', ['x@local.test']), code('ERR_ALIAS_INVALID'));
    await assert.rejects(s.addAlias('a@local.test', []), code('ERR_ALIAS_INVALID'));
    await assert.rejects(s.addAlias('a@local.test', ['ok@local.test', 'not an address']), code('ERR_ALIAS_INVALID'));
    await assert.rejects(s.addAlias('a@local.test', ['x!y@local.test']), code('ERR_ALIAS_INVALID'));
    assert.equal(await s.lookupAlias('a@local.test'), null, 'a refused alias wrote nothing');
    assert.equal(await s.removeAlias('TEAM@local.test', 'bob@Local.Test.'), 1);
    assert.deepEqual(await s.lookupAlias('team@local.test'), [{ address: 'Alice@local.test', remote: false }]);
    await assert.rejects(s.removeAlias('team@local.test', 'bob@local.test'), code('ERR_ALIAS_NOT_FOUND'));
    await s.addAlias('team@local.test', ['carol@local.test', 'dave@local.test']);
    assert.equal(await s.removeAlias('team@local.test'), 3);
    assert.equal(await s.lookupAlias('team@local.test'), null);
    await assert.rejects(s.removeAlias('team@local.test'), code('ERR_ALIAS_NOT_FOUND'));
    await assert.rejects(s.removeAlias('a%b@local.test'), code('ERR_ALIAS_INVALID'));
    await assert.rejects(s.removeAlias('fwd@local.test', 'bad target'), code('ERR_ALIAS_INVALID'));
  }));

  t('two writers: exactly one creates a user or a domain, the other gets *_EXISTS; batches stay whole', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const a = await d.open();
    const b = await d.open();
    for (let i = 0; i < 10; i++) {
      const name = `racer${i}`;
      const results = await Promise.allSettled([a.addUser({ name, passwordHash: h1!, addresses: [`a${i}@example.org`] }), b.addUser({ name: name.toUpperCase(), passwordHash: h1!, addresses: [`b${i}@example.org`] })]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, `one of two writers created ${name}`);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      code('ERR_USER_EXISTS')(lost.reason);
      const won = (results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{ addresses: readonly string[] }>).value;
      assert.deepEqual((await a.getUser(name))?.addresses, won.addresses, 'the winner\'s addresses, none of the loser\'s');
      const domains = await Promise.allSettled([a.addDomain(`race${i}.example`), b.addDomain(`RACE${i}.example.`)]);
      assert.equal(domains.filter((r) => r.status === 'fulfilled').length, 1);
      code('ERR_DOMAIN_EXISTS')((domains.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason);
    }
    const batches = await Promise.allSettled([
      a.addUsers(['x1', 'x2', 'shared'].map((name) => ({ name, passwordHash: h1! }))),
      b.addUsers(['shared', 'y1', 'y2'].map((name) => ({ name, passwordHash: h1! }))),
    ]);
    assert.equal(batches.filter((r) => r.status === 'fulfilled').length, 1);
    const names = (await a.listUsers()).map((u) => u.name).filter((n) => !n.startsWith('racer'));
    assert.ok(JSON.stringify(names) === '["shared","x1","x2"]' || JSON.stringify(names) === '["shared","y1","y2"]', names.join(','));
    // Idempotent writes from both sides succeed.
    await Promise.all([a.addAddress('racer0', 'same@example.org'), b.addAddress('racer0', 'SAME@example.org')]);
    await Promise.all([a.addAlias('list@example.org', ['x@example.org']), b.addAlias('list@example.org', ['x@example.org'])]);
    assert.equal((await a.lookupAlias('list@example.org'))?.length, 1);
  }));

  t('data survives closing and reopening', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    let s = await d.open();
    await s.addUser({ name: 'mia@example.org', passwordHash: h1!, addresses: ['@example.net'] });
    await s.addUser({ name: 'ned', passwordHash: h1!, disabled: true });
    await s.addDomain('example.org');
    await s.addAlias('info@example.org', ['mia@example.org', 'far@remote.test'], { remote: true });
    const before = { users: await s.listUsers(), domains: await s.listDomains(), aliases: await s.listAliases() };
    await s.close();
    await s.close(); // twice is fine
    s = await d.open();
    assert.deepEqual({ users: await s.listUsers(), domains: await s.listDomains(), aliases: await s.listAliases() }, before);
    assert.deepEqual(await s.credentials('mia@example.org'), { name: 'mia@example.org', passwordHash: h1, disabled: false });
    assert.equal(await s.isMailbox('mia@example.org'), true);
    assert.equal(await s.owns('mia@example.org', 'anyone@example.net'), true);
    assert.equal(await s.hasDomain('example.org'), true);
    assert.deepEqual(await s.lookupAlias('info@example.org'), [{ address: 'far@remote.test', remote: true }, { address: 'mia@example.org', remote: true }]);
  }));

  t('same answers as the synchronous UserStore and AliasStore had (differential, recorded in directory.golden.json)', async () => withDirectory(h, async (d) => {
    const golden = JSON.parse(readFileSync(new URL('./directory.golden.json', import.meta.url), 'utf8')) as Golden;
    const s = await d.open();
    const users: { name: string; addresses?: string[]; disabled?: boolean }[] = [
      { name: 'Olga@Example.org', addresses: ['Sales@example.org', '@Corp.Example.'] },
      { name: 'pete', addresses: ['pete@example.org', 'PETE@b\u00fccher.example'] },
      { name: 'quinn@example.org', disabled: true, addresses: ['q@example.org'] },
      { name: 'rosa@xn--bcher-kva.example' },
      { name: 'Zoe\u0308@example.org' },
    ];
    for (const [i, u] of users.entries()) {
      await s.addUser({ name: u.name, passwordHash: (await someHashes())[0]!, addresses: u.addresses ?? [], disabled: u.disabled === true });
      assert.deepEqual(await s.getUser(u.name), golden.added[i]);
    }
    for (const [i, dom] of ['Example.org.', 'b\u00fccher.example'].entries()) assert.equal(await s.addDomain(dom), golden.domainsAdded[i]);
    const aliases: [string, string[], boolean][] = [['Info@Example.org', ['olga@example.org', 'pete@example.org'], false], ['@corp.example', ['olga@example.org'], false], ['out@example.org', ['x@remote.test'], true]];
    for (const [i, [k, targets, remote]] of aliases.entries()) assert.deepEqual(await s.addAlias(k, targets, { remote }), golden.aliasesAdded[i]);
    for (const n of golden.names) {
      assert.deepEqual(await s.getUser(n), golden.getUser[n], `get ${n}`);
      for (const a of golden.addresses) assert.equal(await s.owns(n, a), golden.owns[n]![a], `owns(${n}, ${a})`);
    }
    for (const a of golden.addresses) assert.equal(await s.isMailbox(a), golden.isMailbox[a], `isMailbox(${a})`);
    for (const [dom, has] of Object.entries(golden.hasDomain)) assert.equal(await s.hasDomain(dom), has, `hasDomain(${dom})`);
    assert.deepEqual(await s.listUsers(), golden.listUsers);
    assert.deepEqual(await s.listDomains(), golden.listDomains);
    assert.deepEqual(await s.listAliases(), golden.listAliases);
    for (const [k, targets] of Object.entries(golden.lookupAlias)) assert.deepEqual(await s.lookupAlias(k), targets, `lookupAlias(${k})`);
  }));

  t('UserAccounts over the store: hashing, authentication with a dummy verification, imports', async () => withDirectory(h, async (d) => {
    const s = await d.open();
    const verified: string[] = [];
    const accounts = new UserAccounts(s, { scrypt: FAST, verify: async (pw, encoded) => { verified.push(encoded); return verifyPassword(pw, encoded); } });
    const info = await accounts.add('Sam@Example.org', 'secret', { addresses: ['sam.alt@example.org'] });
    assert.deepEqual(info.addresses, ['sam.alt@example.org', 'sam@example.org']);
    const stored = (await s.credentials('sam@example.org'))!.passwordHash;
    assert.ok(isPasswordHash(stored) && !stored.includes('secret'), 'the store keeps a hash');
    await assert.rejects(accounts.add('SAM@example.org', 'x'), code('ERR_USER_EXISTS'));
    await assert.rejects(accounts.add('tom', ''), code('ERR_USER_INVALID'));
    await assert.rejects(accounts.add('tom', 'a\nb'), code('ERR_USER_INVALID'));
    await assert.rejects(accounts.add('tom', 'pw', { addresses: ['nope'] }), code('ERR_USER_INVALID'));
    assert.equal(await accounts.authenticate('SAM@example.org', 'secret'), true);
    assert.equal(await accounts.authenticate('sam@example.org', 'wrong'), false);
    verified.length = 0;
    assert.equal(await accounts.authenticate('nobody', 'secret'), false);
    assert.equal(await accounts.authenticate('bad name\r\n', 'secret'), false);
    assert.equal(verified.length, 2, 'unknown and malformed names cost one verification each');
    assert.ok(verified.every((v) => isPasswordHash(v) && v !== stored));
    await s.setDisabled('sam@example.org', true);
    assert.equal(await accounts.authenticate('sam@example.org', 'secret'), false);
    await s.setDisabled('sam@example.org', false);
    await accounts.setPassword('sam@example.org', 'new secret');
    assert.equal(await accounts.authenticate('sam@example.org', 'secret'), false);
    assert.equal(await accounts.authenticate('sam@example.org', 'new secret'), true);
    await assert.rejects(accounts.setPassword('nobody', 'x'), code('ERR_USER_NOT_FOUND'));
    const progress: number[] = [];
    const many = await accounts.addMany(
      [{ name: 'u1', password: 'p1' }, { name: 'u2@example.org', password: 'p2', addresses: ['@example.com'] }, { name: 'u3', password: 'p3', disabled: true }],
      { concurrency: 2, onHashed: (done) => progress.push(done) },
    );
    assert.deepEqual(many.map((u) => [u.name, u.addresses, u.disabled]), [['u1', [], false], ['u2@example.org', ['@example.com', 'u2@example.org'], false], ['u3', [], true]]);
    assert.deepEqual(progress, [1, 2, 3]);
    assert.equal(await accounts.authenticate('u2@example.org', 'p2'), true);
    assert.equal(await accounts.authenticate('u3', 'p3'), false);
    await assert.rejects(accounts.addMany([{ name: 'v1', password: 'p' }, { name: 'U1', password: 'p' }]), code('ERR_USER_EXISTS'));
    await assert.rejects(accounts.addMany([{ name: 'v1', password: 'p' }, { name: 'V1', password: 'p' }]), code('ERR_USER_EXISTS'));
    assert.equal(await s.getUser('v1'), null);
  }));

  t('version() changes with every write, by this store or another writer; watch() reports other writers', async () => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const a = await d.open();
    const b = await d.open();
    const seen: string[] = [await a.version()];
    const changed = async (label: string): Promise<void> => {
      const v = await a.version();
      assert.ok(!seen.includes(v), `${label}: a new version (${v} after ${seen.join(', ')})`);
      seen.push(v);
    };
    assert.equal(await a.version(), seen[0], 'no write, same version');
    await a.addUser({ name: 'vera@example.org', passwordHash: h1! });
    await changed('addUser here');
    await b.addDomain('example.org');
    await changed('addDomain by another writer');
    await b.addAlias('info@example.org', ['vera@example.org']);
    await changed('addAlias by another writer');
    await b.setDisabled('vera@example.org', true);
    await changed('setDisabled by another writer');
    await a.removeAlias('info@example.org');
    await changed('removeAlias here');
    await assert.rejects(b.removeDomain('nothere.example'), code('ERR_DOMAIN_NOT_FOUND'));
    if (a.watch) {
      let calls = 0;
      let wake: () => void = () => {};
      const stop = a.watch(() => { calls++; wake(); });
      try {
        // The listener connects in the background; keep writing until it reports (at most 10 s).
        const deadline = Date.now() + 10_000;
        for (let i = 0; calls === 0 && Date.now() < deadline; i++) {
          await b.addDomain(`watch${i}.example`);
          await new Promise<void>((r) => { wake = r; setTimeout(r, 200); });
        }
        assert.ok(calls > 0, 'watch() reported a write by another store');
      } finally {
        stop();
      }
    }
  }));

  t('latency of the read path (printed, not asserted)', async (tc) => withDirectory(h, async (d) => {
    const [h1] = await someHashes();
    const s = await d.open();
    const USERS = 2000;
    await s.addUsers(Array.from({ length: USERS }, (_, i) => ({ name: `user${i}@example.org`, passwordHash: h1!, addresses: [`alt${i}@example.org`] })));
    for (let i = 0; i < 500; i += 50) {
      const keys = Array.from({ length: 50 }, (_, j) => `list${i + j}@example.org`);
      for (const k of keys) await s.addAlias(k, [`user${i}@example.org`, `user${i + 1}@example.org`]);
    }
    const measure = async (label: string, call: (i: number) => Promise<unknown>): Promise<string> => {
      for (let i = 0; i < 200; i++) await call(i); // warm-up: prepared statements, pool, page cache
      const N = 2000;
      const times: number[] = [];
      const start = performance.now();
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        await call(i);
        times.push(performance.now() - t0);
      }
      const serial = performance.now() - start;
      times.sort((x, y) => x - y);
      const inFlight = 16;
      let next = 0;
      const cStart = performance.now();
      await Promise.all(Array.from({ length: inFlight }, async () => { while (next < N) await call(next++); }));
      const concurrent = performance.now() - cStart;
      const us = (ms: number): string => `${(ms * 1000).toFixed(0)} us`;
      return `${h.name} ${label}: mean ${us(serial / N)}, p50 ${us(percentile(times, 0.5))}, p99 ${us(percentile(times, 0.99))} (${N} calls one at a time); ${Math.round(N / (concurrent / 1000))} calls/s with ${inFlight} in flight`;
    };
    const lines = [
      await measure('isMailbox', (i) => s.isMailbox(i % 2 === 0 ? `alt${i % USERS}@example.org` : `missing${i}@example.org`)),
      await measure('lookupAlias', (i) => s.lookupAlias(i % 2 === 0 ? `list${i % 500}@example.org` : `missing${i}@example.org`)),
    ];
    for (const line of lines) tc.diagnostic(line);
    process.stderr.write(`${lines.map((l) => `# latency ${l}`).join('\n')}\n`);
  }));
}
