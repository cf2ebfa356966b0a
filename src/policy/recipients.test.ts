import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalize, parsePath } from '../core/address.ts';
import { createLocality } from '../core/locality.ts';
import { LocalRecipients, MAX_TARGETS, unknownUserReply, type AliasTarget, type RecipientSettings } from './recipients.ts';
import { testDirectory } from '../testing/directory.ts';
import { normalizeAliasKey, normalizeAliasTarget, parseAliasFile } from './aliases.ts';

const locality = createLocality({ domains: () => new Set(['local.test', 'other.test']), ownAddresses: () => ['192.0.2.10'] });

function make(aliases: Record<string, AliasTarget[]>, mailboxes: string[], settings: Partial<RecipientSettings> = {}): LocalRecipients {
  const boxes = new Set(mailboxes);
  return new LocalRecipients(
    { aliases: (k) => aliases[k] ?? null, isMailbox: (a) => boxes.has(a) },
    { postmaster: null, abuse: null, delimiter: '+', foldCase: true, defaultDomain: () => 'local.test', ...settings },
    locality,
  );
}

function rcpt(text: string) {
  const p = parsePath(`<${text}>`, { smtputf8: true, allowNull: false, allowUnqualifiedPostmaster: true });
  assert.ok(p.ok, text);
  return canonicalize(p.path.mailbox!);
}

const L = (address: string, remote = false): AliasTarget => ({ address, remote });

function targetsOf(r: LocalRecipients, address: string): readonly string[] | null {
  const res = r.resolve(rcpt(address));
  return res.known ? res.targets : null;
}

test('mailboxes, case folding and the recipient delimiter', () => {
  const r = make({}, ['alice@local.test']);
  assert.deepEqual(r.resolve(rcpt('alice@local.test')), { known: true, targets: ['alice@local.test'], via: 'mailbox' });
  assert.deepEqual(r.resolve(rcpt('ALICE@Local.Test.')), { known: true, targets: ['alice@local.test'], via: 'mailbox' });
  assert.deepEqual(r.resolve(rcpt('alice+news@local.test')), { known: true, targets: ['alice@local.test'], via: 'mailbox (extension)' });
  assert.equal(r.resolve(rcpt('bob@local.test')).known, false);
  assert.equal(r.resolve(rcpt('+alice@local.test')).known, false, 'a leading delimiter is not an extension');
  const noExt = make({}, ['alice@local.test'], { delimiter: '' });
  assert.equal(noExt.resolve(rcpt('alice+news@local.test')).known, false);
  const cased = make({}, ['alice@local.test'], { foldCase: false });
  assert.equal(cased.resolve(rcpt('Alice@local.test')).known, false);
});

test('aliases: single, lists, nested, loops cut, dangling targets dropped, remote only when allowed', () => {
  const r = make({
    'sales@local.test': [L('alice@local.test')],
    'team@local.test': [L('alice@local.test'), L('bob@local.test'), L('sales@local.test')],
    'loop1@local.test': [L('loop2@local.test')],
    'loop2@local.test': [L('loop1@local.test'), L('bob@local.test')],
    'dangling@local.test': [L('nobody@local.test')],
    'fwd@local.test': [L('friend@remote.test', true)],
    'sneaky@local.test': [L('friend@remote.test', false)],
  }, ['alice@local.test', 'bob@local.test']);
  assert.deepEqual(r.resolve(rcpt('sales@local.test')), { known: true, targets: ['alice@local.test'], via: 'alias' });
  const team = r.resolve(rcpt('team@local.test'));
  assert.ok(team.known);
  assert.deepEqual([...team.targets].sort(), ['alice@local.test', 'bob@local.test']);
  const loop = r.resolve(rcpt('loop1@local.test'));
  assert.ok(loop.known);
  assert.deepEqual(loop.targets, ['bob@local.test']);
  assert.equal(r.resolve(rcpt('dangling@local.test')).known, false, 'an alias that leads nowhere is unknown: refused at RCPT, not bounced later');
  assert.deepEqual(r.resolve(rcpt('fwd@local.test')), { known: true, targets: ['friend@remote.test'], via: 'alias' });
  assert.equal(r.resolve(rcpt('sneaky@local.test')).known, false, 'a remote target the admin did not allow');
});

test('a huge list is cut at MAX_TARGETS', () => {
  const boxes = Array.from({ length: MAX_TARGETS + 50 }, (_, i) => `u${i}@local.test`);
  const r = make({ 'all@local.test': boxes.map((b) => L(b)) }, boxes);
  const res = r.resolve(rcpt('all@local.test'));
  assert.ok(res.known);
  assert.equal(res.targets.length, MAX_TARGETS);
});

test('postmaster and abuse always exist; own literals have only them; the unqualified <postmaster> too', () => {
  const none = make({}, []);
  assert.deepEqual(targetsOf(none, 'postmaster@local.test'), ['postmaster@local.test']);
  assert.deepEqual(targetsOf(none, 'Abuse@other.test'), ['postmaster@local.test']);
  const r = make({}, ['carol@local.test'], { postmaster: 'carol@local.test', abuse: 'abuse-desk@remote.test' });
  for (const a of ['postmaster@local.test', 'postmaster@[127.0.0.1]', 'POSTMASTER@[IPv6:::1]', 'postmaster@[192.0.2.10]', 'postmaster']) {
    assert.deepEqual(r.resolve(rcpt(a)), { known: true, targets: ['carol@local.test'], via: 'postmaster (config)' }, a);
  }
  assert.deepEqual(r.resolve(rcpt('abuse@[127.0.0.1]')), { known: true, targets: ['abuse-desk@remote.test'], via: 'abuse (config)' });
  for (const a of ['x@[127.0.0.1]', 'carol@[127.0.0.1]', 'x@[IPv6:::ffff:127.0.0.1]', 'www@[192.0.2.10]']) {
    assert.equal(r.resolve(rcpt(a)).known, false, a);
  }
  // An explicit alias for postmaster@ wins over the role default.
  const explicit = make({ 'postmaster@other.test': [L('alice@local.test')] }, ['alice@local.test'], { postmaster: 'carol@local.test' });
  assert.deepEqual(targetsOf(explicit, 'postmaster@other.test'), ['alice@local.test']);
});

test('catch-all only when written, after every exact entry', () => {
  const r = make({ '@other.test': [L('alice@local.test')] }, ['alice@local.test', 'bob@other.test']);
  assert.deepEqual(targetsOf(r, 'bob@other.test'), ['bob@other.test']);
  assert.deepEqual(r.resolve(rcpt('anything@other.test')), { known: true, targets: ['alice@local.test'], via: 'catch-all' });
  assert.equal(r.resolve(rcpt('anything@local.test')).known, false);
  assert.equal(r.isKnown('anything@other.test'), true);
  assert.equal(r.isKnown('anything@local.test'), false);
  assert.equal(r.isKnown('victim@[127.0.0.1]'), false, 'a bounce to a forged literal sender finds no mailbox');
});

test('unknownUserReply is Postfix\'s wording', () => {
  assert.deepEqual(unknownUserReply('bob@local.test'), { code: 550, enhanced: '5.1.1', text: '<bob@local.test>: Recipient address rejected: User unknown' });
});

test('alias keys and targets are normalized; routing and junk refused', () => {
  assert.equal(normalizeAliasKey('Sales@Local.TEST.'), 'sales@local.test');
  assert.equal(normalizeAliasKey('@Local.Test'), '@local.test');
  assert.equal(normalizeAliasKey('root'), null);
  assert.equal(normalizeAliasKey('root', { bare: true }), 'root');
  for (const bad of ['a%b@local.test', 'a!b@local.test', 'a\uFF05b@local.test', 'a b@local.test', 'a@local..test', '"a"@local.test']) assert.equal(normalizeAliasKey(bad), null, bad);
  assert.equal(normalizeAliasTarget('Bob@Remote.TEST'), 'Bob@remote.test');
  assert.equal(normalizeAliasTarget('x@[IPv6:::ffff:127.0.0.1]'), 'x@[127.0.0.1]');
  assert.equal(normalizeAliasTarget('a%b@remote.test'), null);
});

test('alias files: virtual(5) and aliases(5) forms, continuation lines, comments; remote targets only when allowed', () => {
  const text = [
    '# comment',
    'sales@local.test   alice@local.test, bob@local.test',
    'root: alice@local.test',
    'team@local.test alice@local.test,',
    '   bob@local.test   # continued',
    '@other.test  alice@local.test',
    'fwd@local.test friend@remote.test',
    'bad@@key x@local.test',
  ].join('\n');
  const isLocal = (d: string): boolean => d === 'local.test' || d === 'other.test';
  const { entries, problems } = parseAliasFile(text, { allowRemote: false, isLocal });
  assert.deepEqual(entries.get('sales@local.test'), [L('alice@local.test'), L('bob@local.test')]);
  assert.deepEqual(entries.get('root'), [L('alice@local.test')]);
  assert.deepEqual(entries.get('team@local.test'), [L('alice@local.test'), L('bob@local.test')]);
  assert.deepEqual(entries.get('@other.test'), [L('alice@local.test')]);
  assert.equal(entries.has('fwd@local.test'), false);
  assert.deepEqual(problems.map((p) => p.line), [7, 8]);
  assert.match(problems[0]!.message, /allowRemoteAliasTargets/);
  const allowed = parseAliasFile(text, { allowRemote: true, isLocal });
  assert.deepEqual(allowed.entries.get('fwd@local.test'), [L('friend@remote.test', true)]);
});

test('database aliases: add, list, lookup, remove', async () => {
  const s = testDirectory(':memory:');
  try {
    await s.addAlias('Team@Local.Test', ['alice@local.test', 'bob@local.test']);
    await s.addAlias('fwd@local.test', ['friend@remote.test'], { remote: true });
    assert.deepEqual(await s.lookupAlias('team@local.test'), [L('alice@local.test'), L('bob@local.test')]);
    assert.deepEqual(await s.lookupAlias('fwd@local.test'), [L('friend@remote.test', true)]);
    assert.equal(await s.lookupAlias('nobody@local.test'), null);
    assert.equal((await s.listAliases()).length, 3);
    assert.equal(await s.removeAlias('team@local.test', 'bob@local.test'), 1);
    assert.deepEqual(await s.lookupAlias('team@local.test'), [L('alice@local.test')]);
    assert.equal(await s.removeAlias('team@local.test'), 1);
    await assert.rejects(s.removeAlias('team@local.test'), /No alias/);
    await assert.rejects(s.addAlias('a%b@local.test', ['x@local.test']), /Invalid alias/);
    await assert.rejects(s.addAlias('a@local.test', []), /at least one target/);
  } finally {
    await s.close();
  }
});
