import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalize, parsePath } from '../core/address.ts';
import type { CanonicalAddress } from '../core/address.ts';
import { checkSenderOwnership, decideRecipient } from './relay.ts';
import type { RelayContext, RelayDecision } from './relay.ts';

// T = remote.test (third party), H = mail.local.test (our host name), D = local.test, IP = 127.0.0.1 (our address).
const T = 'remote.test';
const H = 'mail.local.test';
const D = 'local.test';
const IP = '[127.0.0.1]';

const UNTRUSTED: RelayContext = {
  role: 'mx',
  trusted: false,
  user: null,
  localDomains: new Set([D, H]),
  relayDomains: new Set(['backup.test']),
  localAddresses: new Set(['127.0.0.1', '::1', '192.0.2.10']),
};
const TRUSTED: RelayContext = { ...UNTRUSTED, trusted: true };
const AUTHED: RelayContext = { ...UNTRUSTED, user: 'alice' };
const SUBMISSION: RelayContext = { ...UNTRUSTED, role: 'submission', user: 'alice' };

type Outcome = { kind: 'parse-error'; code: string } | { kind: 'decided'; decision: RelayDecision; rcpt: CanonicalAddress };

/** Runs the text after "RCPT TO:" through parsePath, canonicalize and decideRecipient. */
function rcpt(text: string, ctx: RelayContext = UNTRUSTED, smtputf8 = false): Outcome {
  const r = parsePath(text, { smtputf8, allowNull: false, allowUnqualifiedPostmaster: true });
  if (!r.ok) return { kind: 'parse-error', code: r.error.code };
  // The engine refuses a non-empty rest that does not start with a space; anything after it is parameters.
  if (r.rest !== '' && !r.rest.startsWith(' ')) return { kind: 'parse-error', code: 'syntax' };
  assert.ok(r.path.mailbox);
  const c = canonicalize(r.path.mailbox);
  return { kind: 'decided', decision: decideRecipient(c, ctx), rcpt: c };
}

function assertRefused(text: string, ctx: RelayContext = UNTRUSTED, smtputf8 = false): void {
  const o = rcpt(text, ctx, smtputf8);
  if (o.kind === 'parse-error') return;
  assert.equal(o.decision.action, 'reject', `${JSON.stringify(text)} -> ${JSON.stringify(o.decision)}`);
  if (o.decision.action === 'reject') assert.ok(o.decision.reply.code >= 500 && o.decision.reply.code < 600);
}

function assertDecision(text: string, action: RelayDecision['action'], rule: string, ctx: RelayContext = UNTRUSTED, smtputf8 = false): RelayDecision {
  const o = rcpt(text, ctx, smtputf8);
  assert.equal(o.kind, 'decided', `${JSON.stringify(text)} -> ${JSON.stringify(o)}`);
  if (o.kind !== 'decided') throw new Error('unreachable');
  assert.equal(o.decision.action, action, JSON.stringify(o.decision));
  assert.equal(o.decision.rule, rule);
  return o.decision;
}

// ------------------------------------------------------------------------------------------------------------
// V01-V22 (relay-testers.md 1.8) and RL-01..RL-17 (hostile-inputs.md 1.3), untrusted unauthenticated MX client
// ------------------------------------------------------------------------------------------------------------

interface Row {
  readonly id: string;
  readonly mail: string;
  readonly rcpt: readonly string[];
}

const REFUSED: readonly Row[] = [
  { id: 'V01 null sender', mail: '<>', rcpt: [`<u@${T}>`] },
  { id: 'V02 external to external', mail: `<s@${T}>`, rcpt: [`<u@${T}>`] },
  { id: 'V03 spoof target host', mail: `<s@${H}>`, rcpt: [`<u@${T}>`] },
  { id: 'V04 spoof target IP literal', mail: `<s@${IP}>`, rcpt: [`<u@${T}>`] },
  { id: 'V05 spoof target domain', mail: `<s@${D}>`, rcpt: [`<u@${T}>`] },
  { id: 'V06 spoof localhost', mail: '<s@localhost>', rcpt: [`<u@${T}>`] },
  { id: 'V07 unqualified sender', mail: '<spamtest>', rcpt: [`<u@${T}>`] },
  { id: 'V08 percent hack via IP', mail: `<s@${IP}>`, rcpt: [`<u%${T}@${IP}>`] },
  { id: 'V09 percent hack via host/domain', mail: `<s@${IP}>`, rcpt: [`<u%${T}@${H}>`, `<u%${T}@${D}>`] },
  { id: 'V10 quoted local part with @', mail: `<s@${IP}>`, rcpt: [`<"u@${T}">`] },
  { id: 'V11 quoted percent', mail: `<s@${IP}>`, rcpt: [`<"u%${T}">`] },
  { id: 'V12 double @ via IP', mail: `<s@${IP}>`, rcpt: [`<u@${T}@${IP}>`] },
  { id: 'V13 quoted then via IP/host', mail: `<s@${IP}>`, rcpt: [`<"u@${T}"@${IP}>`, `<"u@${T}"@${H}>`] },
  { id: 'V14 double @ via host', mail: `<s@${IP}>`, rcpt: [`<u@${T}@${H}>`] },
  { id: 'V15 source route via IP', mail: `<s@${IP}>`, rcpt: [`<@${IP}:u@${T}>`] },
  { id: 'V16 source route via host', mail: `<s@${IP}>`, rcpt: [`<@${H}:u@${T}>`] },
  { id: 'V17 bang path', mail: `<s@${IP}>`, rcpt: [`<${T}!u>`] },
  { id: 'V18 bang path via IP', mail: `<s@${IP}>`, rcpt: [`<${T}!u@${IP}>`] },
  { id: 'V19 bang path via host', mail: `<s@${IP}>`, rcpt: [`<${T}!u@${H}>`] },
  { id: 'V20 trailing/empty domain', mail: `<s@${IP}>`, rcpt: [`<u@${T}@>`, `<u%${T}@>`] },
  { id: 'V22 unbracketed path', mail: `<s@${T}>`, rcpt: [`u@${T}`] },
  { id: 'RL-01', mail: '<x@remote.test>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-02 forged local sender', mail: '<postmaster@local.test>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-03 null sender', mail: '<>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-04 unqualified / localhost / literal sender', mail: '<spamtest>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-04b', mail: '<spamtest@localhost>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-04c', mail: '<spamtest@[127.0.0.1]>', rcpt: ['<y@remote.test>'] },
  { id: 'RL-05 percent hack', mail: '<x@remote.test>', rcpt: ['<y%remote.test@local.test>'] },
  { id: 'RL-06 percent hack via literal', mail: '<x@remote.test>', rcpt: ['<y%remote.test@[127.0.0.1]>'] },
  { id: 'RL-07 quoted', mail: '<x@remote.test>', rcpt: ['<"y@remote.test">'] },
  { id: 'RL-08 quoted percent', mail: '<x@remote.test>', rcpt: ['<"y%remote.test">'] },
  { id: 'RL-09 quoted then local', mail: '<x@remote.test>', rcpt: ['<"y@remote.test"@local.test>'] },
  { id: 'RL-10 double @', mail: '<x@remote.test>', rcpt: ['<y@remote.test@local.test>', '<y@local.test@remote.test>'] },
  { id: 'RL-11 double @ via literal', mail: '<x@remote.test>', rcpt: ['<y@remote.test@[127.0.0.1]>'] },
  { id: 'RL-12 source route', mail: '<x@remote.test>', rcpt: ['<@local.test:y@remote.test>'] },
  { id: 'RL-14 bang path', mail: '<x@remote.test>', rcpt: ['<remote.test!y>'] },
  { id: 'RL-15 bang via local', mail: '<x@remote.test>', rcpt: ['<remote.test!y@local.test>', '<remote.test!y@[127.0.0.1]>'] },
  { id: 'RL-16 trailing dot (remote)', mail: '<x@remote.test>', rcpt: ['<y@remote.test.>', '<y@REMOTE.test.>'] },
  {
    id: 'RL-19 malformed literals and numeric domains',
    mail: '<x@remote.test>',
    rcpt: ['<y@[127.1]>', '<y@[0x7f.0.0.1]>', '<y@[2130706433]>', '<y@[1.2.3.4.5]>', '<y@[321.255.255.255]>', '<y@127.0.0.1>', '<y@[8.8.8.8]>'],
  },
  { id: 'RL-21 homograph with SMTPUTF8', mail: '<x@remote.test>', rcpt: ['<y@ex\u0430mple.com>', '<y@loc\u0430l.test>'] },
  {
    id: 'RL-24 several addresses or junk',
    mail: '<x@remote.test>',
    rcpt: ['<a@local.test><b@remote.test>', 'a@local.test,b@remote.test', '<a@local.test,b@remote.test>'],
  },
];

describe('relay tricks are refused for an untrusted, unauthenticated MX client', () => {
  for (const row of REFUSED) {
    it(row.id, () => {
      // The sender never grants relay: whatever MAIL FROM said (or whether it parsed), RCPT is judged alone.
      const mail = parsePath(row.mail, { smtputf8: false, allowNull: true });
      if (row.mail === '<>') assert.ok(mail.ok && mail.path.isNull, 'a null sender must be accepted at MAIL');
      for (const text of row.rcpt) {
        assertRefused(text);
        assertRefused(text, UNTRUSTED, true);
        assertRefused(` ${text}`);
      }
    });
  }

  it('routed and default-deny replies say Relay access denied with the canonical address', () => {
    const d = assertDecision('<y%remote.test@LOCAL.test.>', 'reject', 'routed-address');
    assert.deepEqual(d.action === 'reject' && d.reply, {
      code: 554,
      enhanced: '5.7.1',
      text: '<y%remote.test@local.test>: Relay access denied',
    });
    const e = assertDecision('<@local.test:"y"@Remote.Test.>', 'reject', 'default-deny');
    assert.deepEqual(e.action === 'reject' && e.reply, { code: 554, enhanced: '5.7.1', text: '<y@remote.test>: Relay access denied' });
    assertDecision('<"y@remote.test"@local.test>', 'reject', 'routed-address');
    assertDecision('<remote.test!y@[127.0.0.1]>', 'reject', 'routed-address');
  });

  it('RL-22 style: a remote address stays refused whatever the sender', () => {
    for (const sender of ['<>', '<postmaster@local.test>', '<s@[127.0.0.1]>']) {
      assert.ok(parsePath(sender, { smtputf8: false, allowNull: true }).ok);
      assertDecision('<y@remote.test>', 'reject', 'default-deny');
    }
  });
});

describe('what is ours is accepted as local', () => {
  const LOCAL: ReadonlyArray<[string, string]> = [
    ['<u@local.test>', 'local-domain'],
    ['<u@local.test.>', 'local-domain'], // RL-16
    ['<u@LOCAL.TEST>', 'local-domain'], // RL-17
    ['<U@local.test>', 'local-domain'], // RL-17: case of the local part is kept
    ['<"u"@local.test>', 'local-domain'],
    ['<@remote.test:u@local.test>', 'local-domain'], // the source route is ignored
    ['<u@mail.local.test>', 'local-domain'],
    ['<postmaster@local.test>', 'local-domain'],
    ['<Postmaster>', 'postmaster'], // RL-25
    ['<postmaster>', 'postmaster'],
    ['<u@[127.0.0.1]>', 'local-address-literal'], // RL-19, V21
    ['<u@[IPv6:::1]>', 'local-address-literal'], // RL-19
    ['<u@[IPv6:0:0:0:0:0:0:0:1]>', 'local-address-literal'],
    ['<u@[IPv6:::ffff:127.0.0.1]>', 'local-address-literal'],
    ['<u@[192.0.2.10]>', 'local-address-literal'],
  ];
  for (const [text, rule] of LOCAL) {
    it(`${text} -> local (${rule})`, () => {
      assertDecision(text, 'local', rule);
      assertDecision(text, 'local', rule, TRUSTED);
      assertDecision(text, 'local', rule, AUTHED);
    });
  }

  it('RL-17 keeps the local part case', () => {
    const o = rcpt('<U@LOCAL.TEST>');
    assert.ok(o.kind === 'decided');
    assert.equal(o.rcpt.address, 'U@local.test');
  });

  it('RL-21: with SMTPUTF8 a U-label local domain is compared as A-labels', () => {
    const ctx: RelayContext = { ...UNTRUSTED, localDomains: new Set(['xn--bcher-kva.example']) };
    assertDecision('<u@B\u00fccher.Example.>', 'local', 'local-domain', ctx, true);
    assertDecision('<u@xn--bcher-kva.example>', 'local', 'local-domain', ctx);
  });

  it('relay domains are relayed for anyone', () => {
    assertDecision('<u@backup.test>', 'relay', 'relay-domain');
    assertDecision('<u@Backup.Test.>', 'relay', 'relay-domain');
    assertRefused('<u%remote.test@backup.test>');
  });
});

describe('trusted and authenticated clients', () => {
  it('relay plain remote addresses', () => {
    assertDecision('<y@remote.test>', 'relay', 'trusted-network', TRUSTED);
    assertDecision('<y@remote.test>', 'relay', 'authenticated', AUTHED);
    assertDecision('<y@remote.test>', 'relay', 'authenticated', SUBMISSION);
    assertDecision('<y@[8.8.8.8]>', 'relay', 'trusted-network', TRUSTED);
  });

  it('never get sender-specified routing', () => {
    for (const ctx of [TRUSTED, AUTHED]) {
      for (const text of ['<y%remote.test@local.test>', '<"y@remote.test"@local.test>', '<remote.test!y@local.test>', '<y%a.test@remote.test>']) {
        const d = assertDecision(text, 'reject', 'routed-address', ctx);
        assert.ok(d.action === 'reject');
        assert.equal(d.reply.code, 553);
        assert.equal(d.reply.enhanced, '5.1.3');
        assert.match(String(d.reply.text), /Sender-specified routing is not supported$/);
      }
    }
  });

  it('a submission listener without a user refuses everything (530)', () => {
    const ctx: RelayContext = { ...UNTRUSTED, role: 'submission', trusted: true };
    for (const text of ['<u@local.test>', '<y@remote.test>', '<postmaster>']) {
      const d = assertDecision(text, 'reject', 'submission-auth', ctx);
      assert.ok(d.action === 'reject');
      assert.deepEqual(d.reply, { code: 530, enhanced: '5.7.0', text: 'Authentication required' });
    }
  });

  it('an unqualified address built by hand is refused, and a hand-built routed flag is rechecked', () => {
    const unq: CanonicalAddress = { localPart: 'bob', domain: '', literal: null, routed: false, address: 'bob' };
    const d = decideRecipient(unq, TRUSTED);
    assert.equal(d.rule, 'unqualified');
    assert.equal(d.action, 'reject');
    const lying: CanonicalAddress = { localPart: 'y%remote.test', domain: 'local.test', literal: null, routed: false, address: 'y%remote.test@local.test' };
    assert.equal(decideRecipient(lying, UNTRUSTED).rule, 'routed-address');
  });
});

describe('checkSenderOwnership (RL-26)', () => {
  const owned = (a: string): boolean => a === 'alice@local.test';
  const sender = (text: string): CanonicalAddress => {
    const r = parsePath(text, { smtputf8: false, allowNull: false });
    assert.ok(r.ok && r.path.mailbox);
    return canonicalize(r.path.mailbox);
  };
  it('accepts owned addresses in any domain case, and the null sender', () => {
    assert.deepEqual(checkSenderOwnership(sender('<alice@Local.Test.>'), 'alice', owned), { ok: true });
    assert.deepEqual(checkSenderOwnership(null, 'alice', owned), { ok: true });
  });
  it("refuses another user's address", () => {
    assert.deepEqual(checkSenderOwnership(sender('<b@local.test>'), 'A', owned), {
      ok: false,
      reply: { code: 553, enhanced: '5.7.1', text: '<b@local.test>: Sender address rejected: not owned by user A' },
    });
    assert.equal(checkSenderOwnership(sender('<Alice@local.test>'), 'alice', owned).ok, false);
  });
});

// ------------------------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------------------------

const LOWER = 'abcdefghijklmnopqrstuvwxyz'.split('');
const ALNUM = [...LOWER, ...'0123456789'.split('')];
const labelArb = fc
  .tuple(fc.constantFrom(...LOWER), fc.string({ unit: fc.constantFrom(...ALNUM, '-'), maxLength: 8 }), fc.constantFrom(...ALNUM))
  .map(([a, mid, b]) => a + mid + b);
const remoteDomainArb = fc
  .tuple(fc.array(labelArb, { minLength: 1, maxLength: 3 }), fc.constantFrom('test', 'example', 'com', 'org'))
  .map(([ls, tld]) => [...ls, tld].join('.'))
  .filter((d) => !UNTRUSTED.localDomains!.has(d) && !UNTRUSTED.relayDomains.has(d));
const userArb = fc.string({ unit: fc.constantFrom(...ALNUM, '.', '_', '+', '-'), minLength: 1, maxLength: 10 }).filter((u) => !u.startsWith('.') && !u.endsWith('.') && !u.includes('..'));
/** Randomly upper-cases letters. */
const recase = (s: string, mask: readonly boolean[]): string =>
  s
    .split('')
    .map((ch, i) => (mask[i % Math.max(1, mask.length)] ? ch.toUpperCase() : ch))
    .join('');
const maskArb = fc.array(fc.boolean(), { minLength: 1, maxLength: 16 });
/** A way of naming us: a local domain (any case, optional trailing dot) or one of our literals. */
const usArb = fc.oneof(
  fc.tuple(fc.constantFrom(D, H), maskArb, fc.boolean()).map(([d, m, dot]) => recase(d, m) + (dot ? '.' : '')),
  fc.constantFrom('[127.0.0.1]', '[IPv6:::1]', '[IPv6:::ffff:127.0.0.1]', '[192.0.2.10]'),
);

describe('properties', () => {
  it('(a) every relay-trick mutation of a remote address is refused for an untrusted client', () => {
    const tricks: ReadonlyArray<(u: string, r: string, l: string) => string> = [
      (u, r) => `<${u}@${r}>`,
      (u, r) => `<${u}@${r}.>`,
      (u, r, l) => `<${u}%${r}@${l}>`,
      (u, r) => `<${u}%${r}>`,
      (u, r) => `<${u}%${r}@>`,
      (u, r) => `<"${u}@${r}">`,
      (u, r) => `<"${u}%${r}">`,
      (u, r, l) => `<"${u}@${r}"@${l}>`,
      (u, r, l) => `<"${u}%${r}"@${l}>`,
      (u, r, l) => `<${u}@${r}@${l}>`,
      (u, r, l) => `<${u}@${l}@${r}>`,
      (u, r) => `<${u}@${r}@>`,
      (u, r, l) => `<@${l}:${u}@${r}>`,
      (u, r, l) => `<@${l},@${l}:${u}@${r}>`,
      (u, r) => `<${r}!${u}>`,
      (u, r, l) => `<${r}!${u}@${l}>`,
      (u, r, l) => `<"${r}!${u}"@${l}>`,
      (u, r, l) => `<${u}%${r}%${l}@${l}>`,
      (u, r, l) => `<${u}@${r}> <x@${l}>`,
      (u, r, l) => `<${u}@${r}>,<x@${l}>`,
      (u, r, l) => `${u}@${r} <x@${l}>`,
    ];
    fc.assert(
      fc.property(userArb, remoteDomainArb, maskArb, usArb, fc.nat({ max: tricks.length - 1 }), fc.boolean(), (u, r, m, l, k, utf8) => {
        const text = tricks[k]!(u, recase(r, m), l);
        const o = rcpt(text, UNTRUSTED, utf8);
        if (o.kind === 'decided') assert.equal(o.decision.action, 'reject', `${text} -> ${JSON.stringify(o.decision)}`);
      }),
      { numRuns: 2000 },
    );
  });

  it('(b) case variants and one trailing dot of a local domain are accepted as local', () => {
    fc.assert(
      fc.property(userArb, fc.constantFrom(D, H), maskArb, fc.boolean(), fc.boolean(), (u, d, m, dot, quoted) => {
        const local = quoted ? `"${u}"` : u;
        const text = `<${local}@${recase(d, m)}${dot ? '.' : ''}>`;
        const o = rcpt(text);
        assert.equal(o.kind, 'decided', text);
        if (o.kind === 'decided') {
          assert.equal(o.decision.action, 'local');
          assert.equal(o.rcpt.domain, d);
          assert.equal(o.rcpt.localPart, u);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('(c) trusted and authenticated clients get relay for plain remote addresses', () => {
    fc.assert(
      fc.property(userArb, remoteDomainArb, maskArb, fc.boolean(), (u, r, m, trusted) => {
        const ctx = trusted ? TRUSTED : AUTHED;
        const o = rcpt(`<${u}@${recase(r, m)}>`, ctx);
        assert.ok(o.kind === 'decided');
        assert.equal(o.decision.action, 'relay');
        assert.equal(o.decision.rule, trusted ? 'trusted-network' : 'authenticated');
        assert.equal(o.rcpt.address, `${u}@${r}`);
        // ... but an untrusted client is refused for the same address.
        const n = rcpt(`<${u}@${recase(r, m)}>`);
        assert.ok(n.kind === 'decided' && n.decision.action === 'reject');
      }),
      { numRuns: 500 },
    );
  });

  it('for any input, an untrusted client is accepted only for local or relay destinations, never with routing', () => {
    // Structured noise: about one input in fifteen parses, spread over local, relay, remote, literal and routed forms.
    const piece = fc.constantFrom('u', 'U', 'postmaster', 'Postmaster', '"u@remote.test"', '"u"', '%', '!', '.', '@', 'remote.test', 'local.test', '"', '\\', '[127.0.0.1]', ' ');
    const domainArb = fc.oneof(
      fc.constantFrom('local.test', 'LOCAL.Test.', 'mail.local.test', 'remote.test', 'backup.test', 'Backup.TEST.', '[127.0.0.1]', '[IPv6:::1]', '[IPv6:::ffff:127.0.0.1]', '[10.0.0.1]', '', 'local.test..'),
      fc.array(piece, { maxLength: 4 }).map((a) => a.join('')),
    );
    const textArb = fc
      .tuple(
        fc.constantFrom('', '@local.test:', '@remote.test,@[127.0.0.1]:', '@'),
        fc.array(piece, { maxLength: 4 }).map((a) => a.join('')),
        fc.option(domainArb, { nil: undefined }),
        fc.constantFrom('', ' SIZE=1', '<x@remote.test>', ' <x@remote.test>', '@remote.test>'),
      )
      .map(([route, local, domain, tail]) => `<${route}${local}${domain === undefined ? '' : `@${domain}`}>${tail}`);
    fc.assert(
      fc.property(textArb, fc.boolean(), (text, utf8) => {
        const o = rcpt(text, UNTRUSTED, utf8);
        if (o.kind !== 'decided' || o.decision.action === 'reject') return;
        assert.equal(o.rcpt.routed, false);
        assert.doesNotMatch(o.rcpt.localPart, /[@%!]/);
        if (o.decision.action === 'relay') assert.ok(UNTRUSTED.relayDomains.has(o.rcpt.domain), text);
        else {
          const ours =
            UNTRUSTED.localDomains!.has(o.rcpt.domain) ||
            (o.rcpt.domain === '' && o.rcpt.localPart.toLowerCase() === 'postmaster') ||
            ['[127.0.0.1]', '[IPv6:::1]', '[IPv6:::ffff:7f00:1]', '[192.0.2.10]'].includes(o.rcpt.domain);
          assert.ok(ours, `${text} -> ${JSON.stringify(o)}`);
        }
      }),
      { numRuns: 5000 },
    );
  });
});
