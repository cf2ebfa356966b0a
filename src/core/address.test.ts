import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  addressErrorReply,
  canonicalize,
  formatMailbox,
  formatPath,
  isDotString,
  isPostmaster,
  normalizeIp,
  parsePath,
  quoteLocalPart,
  type ParsePathOptions,
} from './address.ts';
import type { AddressErrorCode, CanonicalAddress, Mailbox, Path } from './address.ts';

const RCPT: ParsePathOptions = { smtputf8: false, allowNull: false, allowUnqualifiedPostmaster: true };
const RCPT_UTF8: ParsePathOptions = { ...RCPT, smtputf8: true };
const MAIL: ParsePathOptions = { smtputf8: false, allowNull: true };

function show(x: unknown): string {
  const s = JSON.stringify(x);
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

function ok(input: string, options: ParsePathOptions = RCPT): { path: Path; rest: string } {
  const r = parsePath(input, options);
  if (!r.ok) assert.fail(`expected ${show(input)} to parse, got ${r.error.code}: ${r.error.message}`);
  return r;
}

function err(input: string, options: ParsePathOptions = RCPT): AddressErrorCode {
  const r = parsePath(input, options);
  if (r.ok) assert.fail(`expected ${show(input)} to fail, got ${show(r.path)}`);
  return r.error.code;
}

function canon(input: string, options: ParsePathOptions = RCPT): CanonicalAddress {
  const { path } = ok(input, options);
  assert.ok(path.mailbox);
  return canonicalize(path.mailbox);
}

describe('parsePath: accepted forms', () => {
  const cases: ReadonlyArray<[string, string, string, readonly string[]]> = [
    // input, localPart, domain, sourceRoute
    ['<u@local.test>', 'u', 'local.test', []],
    [' <u@local.test>', 'u', 'local.test', []],
    ['   <u@local.test>', 'u', 'local.test', []],
    ['<U.s-er+tag@Local.TEST>', 'U.s-er+tag', 'Local.TEST', []],
    ['<u@local.test.>', 'u', 'local.test.', []], // RL-16: one trailing dot as sent
    ['<"u@T"@local.test>', '"u@T"', 'local.test', []], // RL-09 parses; the policy refuses it
    ['<"a b\\"c"@x.test>', '"a b\\"c"', 'x.test', []],
    ['<y%remote.test@local.test>', 'y%remote.test', 'local.test', []], // RL-05 parses; routed
    ['<remote.test!y@local.test>', 'remote.test!y', 'local.test', []], // RL-15 parses; routed
    ['<@local.test:y@remote.test>', 'y', 'remote.test', ['local.test']], // RL-12
    ['<@a.test,@[127.0.0.1]:y@remote.test>', 'y', 'remote.test', ['a.test', '[127.0.0.1]']],
    ['<y@[127.0.0.1]>', 'y', '[127.0.0.1]', []],
    ['<y@[IPv6:::1]>', 'y', '[IPv6:::1]', []],
    ['<y@[ipv6:0:0::1]>', 'y', '[ipv6:0:0::1]', []],
    ['<y@[IPv6:::ffff:127.0.0.1]>', 'y', '[IPv6:::ffff:127.0.0.1]', []],
    ['<Postmaster>', 'Postmaster', '', []], // RL-25
    ['<postmaster>', 'postmaster', '', []],
    ['<x@a-b.c-d.test>', 'x', 'a-b.c-d.test', []],
    ['<x@1a.test>', 'x', '1a.test', []],
    ['<x@localhost>', 'x', 'localhost', []],
    ["<!#$%&'*+-/=?^_`{|}~@x.test>", "!#$%&'*+-/=?^_`{|}~", 'x.test', []],
  ];
  for (const [input, localPart, domain, route] of cases) {
    it(input, () => {
      const { path, rest } = ok(input);
      assert.equal(path.isNull, false);
      assert.deepEqual(path.mailbox, { localPart, domain });
      assert.deepEqual(path.sourceRoute, route);
      assert.equal(rest, '');
    });
  }

  it('null path only when allowed', () => {
    assert.deepEqual(ok('<>', MAIL).path, { isNull: true, sourceRoute: [], mailbox: null });
    assert.equal(ok(' <> SIZE=10', MAIL).rest, ' SIZE=10');
    assert.equal(err('<>', RCPT), 'syntax');
  });

  it('returns the ESMTP parameters as rest', () => {
    assert.equal(ok('<u@local.test> SIZE=100 BODY=8BITMIME', MAIL).rest, ' SIZE=100 BODY=8BITMIME');
    assert.equal(ok('<"a>b"@local.test> X=1', MAIL).rest, ' X=1');
  });

  it('RL-24: a second address or junk stays in rest for the caller to refuse', () => {
    assert.equal(ok('<a@local.test> <b@remote.test>').rest, ' <b@remote.test>');
    assert.equal(ok('<a@local.test> (c)').rest, ' (c)');
    assert.equal(ok('<a@local.test><b@remote.test>').rest, '<b@remote.test>');
    assert.equal(err('a@local.test,b@remote.test'), 'syntax');
    assert.equal(err('<a@local.test,b@remote.test>'), 'syntax');
  });
});

describe('parsePath: refused forms', () => {
  const cases: ReadonlyArray<[string, AddressErrorCode, ParsePathOptions?]> = [
    // V22: unbracketed
    ['u@remote.test', 'syntax'],
    ['', 'syntax'],
    ['   ', 'syntax'],
    ['<', 'syntax'],
    ['<u@local.test', 'syntax'],
    ['u@local.test>', 'syntax'],
    ['\t<u@local.test>', 'syntax'],
    // RL-10, RL-11, V12, V14, V20: double @ and empty domains
    ['<y@remote.test@local.test>', 'syntax'],
    ['<y@local.test@remote.test>', 'syntax'],
    ['<y@remote.test@[127.0.0.1]>', 'syntax'],
    ['<u@remote.test@>', 'syntax'],
    ['<u%remote.test@>', 'syntax'],
    ['<u@>', 'syntax'],
    ['<@local.test>', 'syntax'],
    ['<@>', 'syntax'],
    // unqualified (RL-04 / V07, RL-07, RL-08, RL-14 / V17)
    ['<spamtest>', 'syntax', MAIL],
    ['<spamtest>', 'syntax'],
    ['<"y@remote.test">', 'syntax'],
    ['<"y%remote.test">', 'syntax'],
    ['<remote.test!y>', 'syntax'],
    ['<"postmaster">', 'syntax'],
    ['<@local.test:postmaster>', 'syntax'],
    ['<postmaster>', 'syntax', MAIL],
    // dots and labels (RL-16)
    ['<u@local.test..>', 'syntax'],
    ['<u@.>', 'syntax'],
    ['<u@.local.test>', 'syntax'],
    ['<u@local..test>', 'syntax'],
    ['<u@-local.test>', 'syntax'],
    ['<u@local-.test>', 'syntax'],
    ['<u@loc_al.test>', 'syntax'],
    ['<.u@local.test>', 'syntax'],
    ['<u.@local.test>', 'syntax'],
    ['<u..v@local.test>', 'syntax'],
    ['<"">', 'syntax'],
    ['<""@local.test>', 'syntax'],
    ['<"u@local.test>', 'syntax'],
    ['<u v@local.test>', 'syntax'],
    ['<u@local.test.@x.test>', 'syntax'],
    ['<@local.test.:u@x.test>', 'syntax'],
    ['<@local.test u@x.test>', 'syntax'],
    // RL-19: literals and numeric domains
    ['<y@[127.1]>', 'bad-literal'],
    ['<y@[0x7f.0.0.1]>', 'bad-literal'],
    ['<y@[2130706433]>', 'bad-literal'],
    ['<y@[1.2.3.4.5]>', 'bad-literal'],
    ['<y@[321.255.255.255]>', 'bad-literal'],
    ['<y@[127.000.0.1]>', 'bad-literal'],
    ['<y@[]>', 'bad-literal'],
    ['<y@[IPv6:]>', 'bad-literal'],
    ['<y@[IPv6:fe80::1%eth0]>', 'bad-literal'],
    ['<y@[IPv6:1::2:3:4:5:6:7:8]>', 'bad-literal'],
    ['<y@[IPv6:127.0.0.1]>', 'bad-literal'],
    ['<y@[::1]>', 'bad-literal'],
    ['<y@[tag:anything]>', 'bad-literal'],
    ['<y@[1.2.3.4 ]>', 'bad-literal'],
    ['<y@[1.2.3.4>', 'syntax'],
    ['<y@[1.2.3.4].test>', 'syntax'],
    ['<y@127.0.0.1>', 'syntax'],
    ['<y@2130706433>', 'syntax'],
    ['<y@1.2.3.0x7f>', 'syntax'],
    ['<y@127.0.0.1.>', 'syntax'],
    // RL-27: injection-shaped addresses
    ['<;sleep 10;>', 'syntax', MAIL],
    ['<${run{\x2Fbin\x2Fsh\t-c\t\x22id\x22}}@local.test>', 'syntax'],
    // control characters, inside and outside quotes
    ['<u\x00@local.test>', 'syntax'],
    ['<u\r\n@local.test>', 'syntax'],
    ['<"u\r\nMAIL FROM:<x>"@local.test>', 'syntax'],
    ['<"u\\\t"@local.test>', 'syntax'],
    ['<"u\\\x00"@local.test>', 'syntax'],
    ['<"u\t"@local.test>', 'syntax'],
    ['<u@local\x00.test>', 'syntax'],
    ['<u@local.test\r\n>', 'syntax'],
    ['<u\x7f@local.test>', 'syntax'],
    // RL-20: non-ASCII without SMTPUTF8
    ['<y@ex\u0430mple.com>', 'need-smtputf8'],
    ['<\u00e9@local.test>', 'need-smtputf8'],
    ['<"\u00e9"@local.test>', 'need-smtputf8'],
    ['<y@[1.2.3.\u0664]>', 'need-smtputf8'],
    // with SMTPUTF8: still no C1 controls, lone surrogates, U+FFFD, invalid U-labels
    ['<u\u0085@local.test>', 'syntax', RCPT_UTF8],
    ['<u\ud800@local.test>', 'syntax', RCPT_UTF8],
    ['<u\ufffd@local.test>', 'syntax', RCPT_UTF8],
    ['<u@exa\ufffdmple.com>', 'syntax', RCPT_UTF8],
    ['<u@a.\u00e9_b>', 'syntax', RCPT_UTF8],
    ['<"\\\u00e9"@local.test>', 'syntax', RCPT_UTF8],
  ];
  for (const [input, code, options] of cases) {
    it(`${JSON.stringify(input)} -> ${code}`, () => {
      assert.equal(err(input, options ?? RCPT), code);
    });
  }
});

describe('parsePath: RL-23 limits (octets, RFC 5321 section 4.5.3.1)', () => {
  const wide: ParsePathOptions = { ...RCPT, maxLength: 100_000 };
  it('local part: 64 accepted, 65 refused', () => {
    ok(`<${'a'.repeat(64)}@x.test>`);
    assert.equal(err(`<${'a'.repeat(65)}@x.test>`), 'too-long');
    assert.equal(err(`<"${'a'.repeat(63)}"@x.test>`), 'too-long');
    ok(`<"${'a'.repeat(62)}"@x.test>`);
  });
  it('local part counts UTF-8 octets', () => {
    ok(`<${'\u00e9'.repeat(32)}@x.test>`, RCPT_UTF8);
    assert.equal(err(`<${'\u00e9'.repeat(32)}a@x.test>`, RCPT_UTF8), 'too-long');
    assert.equal(err(`<${'\u{1f600}'.repeat(17)}@x.test>`, RCPT_UTF8), 'too-long');
  });
  it('label: 63 accepted, 64 refused', () => {
    ok(`<u@${'a'.repeat(63)}.test>`);
    assert.equal(err(`<u@${'a'.repeat(64)}.test>`), 'too-long');
  });
  const domainOf = (octets: number): string => {
    const labels: string[] = [];
    let left = octets;
    while (left > 0) {
      const len = Math.min(63, left);
      labels.push('a'.repeat(len));
      left -= len + 1;
    }
    const d = labels.join('.');
    return d.length === octets ? d : `${d.slice(0, octets - 1)}b`;
  };
  it('domain: 255 accepted, 256 refused', () => {
    assert.equal(domainOf(255).length, 255);
    ok(`<u@${domainOf(255)}>`, wide);
    assert.equal(err(`<u@${domainOf(256)}>`, wide), 'too-long');
  });
  it('path: 256 accepted, 257 refused (brackets included)', () => {
    const at256 = `<${'a'.repeat(64)}@${domainOf(256 - 67)}>`;
    assert.equal(at256.length, 256);
    ok(at256);
    const at257 = `<${'a'.repeat(64)}@${domainOf(257 - 67)}>`;
    assert.equal(err(at257), 'too-long');
    assert.equal(err(`<@${domainOf(200)}:u@${domainOf(60)}>`), 'too-long');
  });
  it('maxLength option', () => {
    assert.equal(err('<abc@x.test>', { ...RCPT, maxLength: 11 }), 'too-long');
    ok('<abc@x.test>', { ...RCPT, maxLength: 12 });
  });
  it('100 KB inputs are refused after reading only a bounded prefix', () => {
    const big = 100 * 1024;
    const inputs = [
      `<${'a'.repeat(big)}@local.test>`,
      `<${'a.'.repeat(big / 2)}a@local.test>`,
      `<"${'a'.repeat(big)}"@local.test>`,
      `<"${'\\"'.repeat(big / 2)}"@local.test>`,
      `<u@${'a.'.repeat(big / 2)}test>`,
      `<u@${'a'.repeat(big)}>`,
      `<u@[${'1'.repeat(big)}]>`,
      `<${'@a,'.repeat(big / 3)}@a:u@b.test>`,
      `<${'\u00e9'.repeat(big)}@local.test>`,
    ];
    const started = performance.now();
    for (let round = 0; round < 20; round++) {
      for (const input of inputs) {
        assert.equal(err(input, RCPT_UTF8), 'too-long');
      }
    }
    // Generous bound: 180 parses of 100 KB each; a quadratic scanner would take minutes.
    assert.ok(performance.now() - started < 5000);
    assert.equal(err(`<${'a'.repeat(big)}`), 'too-long');
    // Leading spaces are skipped in one pass; the command-line length limit is the engine's business.
    assert.equal(ok(`${' '.repeat(big)}<u@x.test>`).path.mailbox?.localPart, 'u');
  });
});

describe('canonicalize', () => {
  const cases: ReadonlyArray<[string, Partial<CanonicalAddress>, ParsePathOptions?]> = [
    ['<u@LOCAL.TEST>', { localPart: 'u', domain: 'local.test', address: 'u@local.test', routed: false, literal: null }],
    ['<U@local.test>', { localPart: 'U', domain: 'local.test', address: 'U@local.test' }], // RL-17
    ['<u@local.test.>', { domain: 'local.test', address: 'u@local.test' }], // RL-16
    ['<"u"@local.test>', { localPart: 'u', address: 'u@local.test', routed: false }],
    ['<"u.v"@local.test>', { localPart: 'u.v', address: 'u.v@local.test' }],
    ['<"u..v"@local.test>', { localPart: 'u..v', address: '"u..v"@local.test' }],
    ['<"\\u\\\\v"@local.test>', { localPart: 'u\\v', address: '"u\\\\v"@local.test' }],
    ['<"a\\"b c"@x.test>', { localPart: 'a"b c', address: '"a\\"b c"@x.test' }],
    ['<"y@remote.test"@local.test>', { localPart: 'y@remote.test', routed: true, address: '"y@remote.test"@local.test' }],
    ['<y%remote.test@local.test>', { routed: true, address: 'y%remote.test@local.test' }],
    ['<remote.test!y@[127.0.0.1]>', { routed: true, domain: '[127.0.0.1]', literal: '127.0.0.1' }],
    ['<@local.test:y@Remote.Test>', { localPart: 'y', domain: 'remote.test', address: 'y@remote.test', routed: false }],
    ['<y@[IPv6:0:0::1]>', { domain: '[IPv6:::1]', literal: '::1', address: 'y@[IPv6:::1]' }],
    ['<y@[ipv6:2001:DB8:0:0:0:0:0:1]>', { domain: '[IPv6:2001:db8::1]', literal: '2001:db8::1' }],
    ['<Postmaster>', { localPart: 'Postmaster', domain: '', address: 'Postmaster', routed: false }],
    // RL-21: U-labels compare as A-labels
    ['<y@ex\u0430mple.com>', { domain: 'xn--exmple-4nf.com', address: 'y@xn--exmple-4nf.com' }, RCPT_UTF8],
    ['<y@B\u00fcCHER.example.>', { domain: 'xn--bcher-kva.example' }, RCPT_UTF8],
    ['<\u00e9l\u00e8ve@x.test>', { localPart: '\u00e9l\u00e8ve', address: '\u00e9l\u00e8ve@x.test' }, RCPT_UTF8],
  ];
  for (const [input, expected, options] of cases) {
    it(input, () => {
      const c = canon(input, options ?? RCPT);
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(c[k as keyof CanonicalAddress], v, k);
    });
  }

  it('isPostmaster matches only the unqualified special recipient', () => {
    assert.equal(isPostmaster(canon('<Postmaster>')), true);
    assert.equal(isPostmaster(canon('<POSTMASTER>')), true);
    assert.equal(isPostmaster(canon('<postmaster@local.test>')), false);
    assert.equal(isPostmaster(canon('<postmaster@remote.test>')), false);
    assert.equal(isPostmaster(canon('<"postmaster"@local.test>')), false);
  });

  it('normalizeIp', () => {
    assert.equal(normalizeIp('127.0.0.1'), '127.0.0.1');
    assert.equal(normalizeIp('0:0::1'), '::1');
    assert.equal(normalizeIp('2001:DB8::0:1'), '2001:db8::1');
    assert.equal(normalizeIp('127.1'), null);
    assert.equal(normalizeIp('fe80::1%eth0'), null);
    assert.equal(normalizeIp('010.0.0.1'), null);
  });
});

describe('addressErrorReply', () => {
  it('maps error codes to replies that never echo the input', () => {
    const e = (input: string, options: ParsePathOptions = RCPT) => {
      const r = parsePath(input, options);
      assert.ok(!r.ok);
      return r.error;
    };
    assert.deepEqual(addressErrorReply(e('<y@ex\u0430mple.com>'), 'rcpt'), {
      code: 553,
      enhanced: '5.6.7',
      text: 'Must declare SMTPUTF8 to send unicode address',
    });
    assert.deepEqual(addressErrorReply(e('<y@[127.1]>'), 'rcpt'), {
      code: 501,
      enhanced: '5.1.3',
      text: 'Bad recipient address syntax: invalid address literal',
    });
    assert.deepEqual(addressErrorReply(e('<spamtest>', MAIL), 'mail'), { code: 501, enhanced: '5.1.7', text: 'Bad sender address syntax' });
    const long = addressErrorReply(e(`<${'a'.repeat(65)}@x.test>`), 'rcpt');
    assert.equal(long.code, 501);
    assert.equal(long.enhanced, '5.1.3');
    assert.doesNotMatch(String(long.text), /aaaa/);
  });
});

describe('formatPath / formatMailbox', () => {
  it('drops the source route and keeps the mailbox as sent', () => {
    assert.equal(formatPath(ok('<@a.test,@b.test:"u v"@Local.Test.>').path), '<"u v"@Local.Test.>');
    assert.equal(formatPath(ok('<>', MAIL).path), '<>');
    assert.equal(formatPath(ok('<Postmaster>').path), '<Postmaster>');
    assert.equal(formatMailbox({ localPart: 'u', domain: '[IPv6:::1]' }), 'u@[IPv6:::1]');
  });
});

// ------------------------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------------------------

const ATEXT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~".split('');
const atom = fc.string({ unit: fc.constantFrom(...ATEXT_CHARS), minLength: 1, maxLength: 8 });
const dotString = fc.array(atom, { minLength: 1, maxLength: 4 }).map((a) => a.join('.'));
const qchar = fc.oneof(
  fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  fc.constantFrom('"', '\\'),
);
const quotedString = fc
  .array(qchar, { minLength: 1, maxLength: 20 })
  .map((chars) => `"${chars.map((ch) => (ch === '"' || ch === '\\' ? `\\${ch}` : ch)).join('')}"`);
const LDH = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.split('');
const label = fc
  .tuple(
    fc.constantFrom(...LDH),
    fc.string({ unit: fc.constantFrom(...LDH, '-'), maxLength: 10 }),
    fc.constantFrom(...LDH),
  )
  .map(([a, mid, b]) => a + mid + b);
const tld = fc.string({ unit: fc.constantFrom(...LDH.slice(0, 52)), minLength: 2, maxLength: 6 });
const hostname = fc
  .tuple(fc.array(label, { maxLength: 3 }), tld, fc.boolean())
  .map(([labels, t, dot]) => [...labels, t].join('.') + (dot ? '.' : ''));
const ipv4Literal = fc.ipV4().map((ip) => `[${ip}]`);
const ipv6Literal = fc.ipV6().map((ip) => `[IPv6:${ip}]`);
const mailboxArb: fc.Arbitrary<Mailbox> = fc.record({
  localPart: fc.oneof(dotString, quotedString),
  domain: fc.oneof({ weight: 4, arbitrary: hostname }, ipv4Literal, ipv6Literal),
});

describe('properties', () => {
  it('parse(formatPath(x)) round-trips generated mailboxes', () => {
    fc.assert(
      fc.property(mailboxArb, fc.array(hostname.filter((h) => !h.endsWith('.')), { maxLength: 2 }), (mailbox, route) => {
        const text = formatPath({ isNull: false, sourceRoute: [], mailbox });
        const prefix = route.length > 0 ? `${route.map((r) => `@${r}`).join(',')}:` : '';
        const withRoute = `<${prefix}${text.slice(1)}`;
        fc.pre(Buffer.byteLength(withRoute) <= 256);
        const r = parsePath(`${withRoute} SIZE=1`, RCPT);
        assert.ok(r.ok, JSON.stringify(r));
        assert.deepEqual(r.path.mailbox, { ...mailbox });
        assert.deepEqual(r.path.sourceRoute, route);
        assert.equal(r.rest, ' SIZE=1');
        assert.equal(formatPath(r.path), text);
      }),
      { numRuns: 500 },
    );
  });

  it('the canonical address parses back to the same canonical form (idempotent)', () => {
    fc.assert(
      fc.property(mailboxArb, (mailbox) => {
        const c = canonicalize(mailbox);
        const r = parsePath(`<${c.address}>`, RCPT);
        assert.ok(r.ok, JSON.stringify({ c, r }));
        assert.ok(r.path.mailbox);
        assert.deepEqual(canonicalize(r.path.mailbox), c);
        if (!c.domain.startsWith('[')) assert.equal(c.domain, c.domain.toLowerCase());
        assert.ok(!c.domain.endsWith('.'));
      }),
      { numRuns: 500 },
    );
  });

  it('quoteLocalPart / dequote round-trip any printable local part', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 40 }), (local) => {
        const q = quoteLocalPart(local);
        const r = parsePath(`<${q}@x.test>`, RCPT);
        assert.ok(r.ok);
        assert.ok(r.path.mailbox);
        assert.equal(canonicalize(r.path.mailbox).localPart, local);
        assert.equal(isDotString(q) || q.startsWith('"'), true);
        assert.equal(canonicalize(r.path.mailbox).routed, /[@%!]/.test(local));
      }),
    );
  });

  it('never throws, and a success always has a well-formed rest', () => {
    const unit = fc.oneof(
      fc.constantFrom('<', '>', '@', '"', '\\', '.', ':', ',', '[', ']', ' ', '%', '!', 'a', '1', '-', '\r', '\n', '\x00', '\u00e9'),
      fc.string({ maxLength: 2 }),
    );
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 40 }).map((a) => a.join('')), fc.boolean(), (input, smtputf8) => {
        const r = parsePath(input, { ...RCPT, smtputf8, allowNull: true });
        if (r.ok) {
          assert.ok(input.endsWith(r.rest));
          if (r.path.mailbox) {
            const c = canonicalize(r.path.mailbox);
            assert.doesNotMatch(c.address, /[\x00-\x1f\x7f]/);
            if (c.domain !== '' && !c.domain.startsWith('[')) assert.match(c.domain, /^[a-z0-9.-]+$/);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('without SMTPUTF8, an accepted address is pure ASCII', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (s) => {
        const r = parsePath(`<${s}@x.test>`, RCPT);
        if (r.ok) assert.match(formatPath(r.path), /^[\x20-\x7e]*$/);
      }),
    );
  });
});
