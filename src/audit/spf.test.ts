import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkMacroString, evaluateSpf, expandMacros, parseSpf, type SpfMechanism } from './spf.ts';
import { memoryResolver } from '../testing/audit-resolver.ts';

const ctx = (ip: string) => ({ ip, sender: 'postmaster@example.test', helo: 'mail.example.test' });

describe('parseSpf', () => {
  it('parses mechanisms, qualifiers, cidrs and modifiers', () => {
    const p = parseSpf('v=spf1 ip4:192.0.2.0/24 -ip6:2001:db8::/32 ~a:mail.example.test/28//64 ?mx include:_spf.example.test exists:%{i}.bl.example.test redirect=_r.example.test exp=explain.example.test x-foo=bar');
    assert.ok(p.ok, JSON.stringify(p));
    const m = p.record.terms.filter((t): t is SpfMechanism => t.kind === 'mechanism');
    assert.deepEqual(m.map((t) => `${t.qualifier}${t.name}:${t.value}/${t.cidr4}//${t.cidr6}`), [
      '+ip4:192.0.2.0/24//null', '-ip6:2001:db8::/null//32', '~a:mail.example.test/28//64', '?mx:null/null//null',
      '+include:_spf.example.test/null//null', '+exists:%{i}.bl.example.test/null//null',
    ]);
    assert.equal(p.record.redirect, '_r.example.test');
    assert.equal(p.record.exp, 'explain.example.test');
    assert.ok(p.warnings.some((w) => w.includes('x-foo')));
  });

  const bad: Array<[string, RegExp]> = [
    ['v=spf1 ip4:192.0.2.300 -all', /not an IPv4 address/],
    ['v=spf1 ip4:192.0.2.0/33 -all', /prefix length/],
    ['v=spf1 ip6:2001:db8::/129 -all', /prefix length/],
    ['v=spf1 include -all', /needs ":domain"/],
    ['v=spf1 foo:bar -all', /unknown mechanism "foo"/],
    ['v=spf1 all:x', /takes no argument/],
    ['v=spf1 redirect=a.test redirect=b.test', /more than one "redirect"/],
    ['v=spf1 include:%{z}.test -all', /bad macro/],
    ['v=spf1 include:%{c}.test -all', /only allowed in an explanation/],
    ['v=spf1 a:nodot -all', /not fully qualified/],
    ['v=spf1 include:example.123 -all', /bad top label/],
    ['v=spf1 ip4:192.0.2.1 -all\u00e9', /not printable ASCII/],
    ['v=spf2 -all', /does not start with "v=spf1"/],
    ['v=spf1 include:a..b.test -all', /empty label/],
    ['v=spf1 ip4:01.2.3.4 -all', /not an IPv4 address/],
  ];
  for (const [rec, re] of bad) {
    it(`rejects ${JSON.stringify(rec)}`, () => {
      const p = parseSpf(rec);
      assert.equal(p.ok, false);
      assert.match((p as { error: string }).error, re);
    });
  }

  it('warns about ptr, unreachable terms and ignored redirect', () => {
    const p = parseSpf('v=spf1 ptr -all mx redirect=x.example.test');
    assert.ok(p.ok);
    assert.ok(p.warnings.some((w) => w.includes('"ptr"')));
    assert.ok(p.warnings.some((w) => w.includes('never reached')));
    assert.ok(p.warnings.some((w) => w.includes('redirect" is ignored')));
  });

  it('never throws, on any input (fuzz)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => { parseSpf(`v=spf1 ${s}`); parseSpf(s); }), { numRuns: 2000 });
    fc.assert(fc.property(fc.array(fc.constantFrom('v=spf1', ' ', 'ip4:', 'ip6:', '/', '//', ':', '%{', '}', 'i', 'r', '.', 'a', 'mx', 'include', '=', 'redirect', '1', '0', 'all', '-', '+', '~', '?', 'x'), { maxLength: 40 }), (parts) => { parseSpf(parts.join('')); }), { numRuns: 3000 });
  });

  it('round-trips generated valid records (property)', () => {
    const label = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);
    const domain = fc.tuple(label, label).map(([a, b]) => `${a}.${b}`);
    const ip4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
    const q = fc.constantFrom('', '+', '-', '~', '?');
    const term = fc.oneof(
      fc.tuple(q, ip4, fc.option(fc.integer({ min: 0, max: 32 }), { nil: undefined })).map(([qq, ip, c]) => ({ text: `${qq}ip4:${ip}${c === undefined ? '' : `/${c}`}`, name: 'ip4' })),
      fc.tuple(q, domain).map(([qq, d]) => ({ text: `${qq}include:${d}`, name: 'include' })),
      fc.tuple(q, fc.option(domain, { nil: undefined }), fc.option(fc.integer({ min: 0, max: 32 }), { nil: undefined })).map(([qq, d, c]) => ({ text: `${qq}a${d ? `:${d}` : ''}${c === undefined ? '' : `/${c}`}`, name: 'a' })),
      fc.tuple(q, domain).map(([qq, d]) => ({ text: `${qq}mx:${d}//64`, name: 'mx' })),
      fc.tuple(q, domain).map(([qq, d]) => ({ text: `${qq}exists:%{ir}.%{l1r-}.${d}`, name: 'exists' })),
    );
    fc.assert(fc.property(fc.array(term, { maxLength: 12 }), q, (terms, allQ) => {
      const text = ['v=spf1', ...terms.map((t) => t.text), `${allQ}all`].join(' ');
      const p = parseSpf(text);
      assert.ok(p.ok, `${text}: ${(p as { error?: string }).error}`);
      assert.deepEqual(p.record.terms.map((t) => t.text), [...terms.map((t) => t.text), `${allQ}all`]);
      assert.deepEqual(p.record.terms.map((t) => (t.kind === 'mechanism' ? t.name : '')), [...terms.map((t) => t.name), 'all']);
    }), { numRuns: 500 });
  });
});

describe('macros', () => {
  it('expands the RFC 7208 section 7.4 examples', () => {
    const c = { ip: '192.0.2.3', sender: 'strong-bad@email.example.com', helo: 'mx.example.org' };
    const d = 'email.example.com';
    assert.equal(expandMacros('%{s}', c, d), 'strong-bad@email.example.com');
    assert.equal(expandMacros('%{o}', c, d), 'email.example.com');
    assert.equal(expandMacros('%{d}', c, d), 'email.example.com');
    assert.equal(expandMacros('%{d4}', c, d), 'email.example.com');
    assert.equal(expandMacros('%{d3}', c, d), 'email.example.com');
    assert.equal(expandMacros('%{d2}', c, d), 'example.com');
    assert.equal(expandMacros('%{d1}', c, d), 'com');
    assert.equal(expandMacros('%{dr}', c, d), 'com.example.email');
    assert.equal(expandMacros('%{d2r}', c, d), 'example.email');
    assert.equal(expandMacros('%{l}', c, d), 'strong-bad');
    assert.equal(expandMacros('%{l-}', c, d), 'strong.bad');
    assert.equal(expandMacros('%{lr}', c, d), 'strong-bad');
    assert.equal(expandMacros('%{lr-}', c, d), 'bad.strong');
    assert.equal(expandMacros('%{l1r-}', c, d), 'strong');
    assert.equal(expandMacros('%{ir}.%{v}._spf.%{d2}', c, d), '3.2.0.192.in-addr._spf.example.com');
    assert.equal(expandMacros('%{lr-}.lp._spf.%{d2}', c, d), 'bad.strong.lp._spf.example.com');
    assert.equal(expandMacros('%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}', c, d), '3.2.0.192.in-addr.strong.lp._spf.example.com');
    assert.equal(expandMacros('%{d2}.trusted-domains.example.net', c, d), 'example.com.trusted-domains.example.net');
    const c6 = { ...c, ip: '2001:db8::cb01' };
    assert.equal(expandMacros('%{ir}.%{v}._spf.%{d2}', c6, d), '1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com');
    assert.equal(expandMacros('%%%_%-', c, d), '% %20');
  });

  it('%{i} of IPv4 reversed with r is the reversed octets (property)', () => {
    fc.assert(fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), (o) => {
      const ip = o.join('.');
      assert.equal(expandMacros('%{i}', ctx(ip), 'x.test'), ip);
      assert.equal(expandMacros('%{ir}', ctx(ip), 'x.test'), [...o].reverse().join('.'));
      assert.equal(checkMacroString('%{ir}.%{v}.%{d2}'), null);
    }));
  });
});

describe('evaluateSpf', () => {
  it('passes through include and redirect, and counts lookups', async () => {
    const r = memoryResolver({
      'example.test': { TXT: ['v=spf1 include:_a.example.test redirect=_r.example.test', 'some other text'] },
      '_a.example.test': { TXT: ['v=spf1 ip4:198.51.100.0/24 -all'] },
      '_r.example.test': { TXT: ['v=spf1 a:mail.example.test mx -all'] },
      'mail.example.test': { A: ['192.0.2.10'] },
    });
    const e1 = await evaluateSpf(r, 'example.test', ctx('198.51.100.7'));
    assert.equal(e1.result, 'pass');
    assert.deepEqual(e1.matched, { domain: 'example.test', term: 'include:_a.example.test' });
    const e2 = await evaluateSpf(r, 'example.test', ctx('192.0.2.10'));
    assert.equal(e2.result, 'pass');
    assert.equal(e2.lookups, 3);
    const e3 = await evaluateSpf(r, 'example.test', ctx('203.0.113.1'));
    assert.equal(e3.result, 'fail');
    const ex = await evaluateSpf(r, 'example.test', ctx('198.51.100.7'), { exhaustive: true });
    assert.equal(ex.result, 'pass');
    assert.equal(ex.lookups, 4, 'include + redirect + a + mx');
    assert.equal(ex.voidLookups, 1, 'the mx of _r.example.test is NXDOMAIN');
  });

  it('permerror past 10 lookups; the exhaustive walk reports the total even when the first match is early', async () => {
    const zone: Record<string, { TXT: string[] }> = { 'example.test': { TXT: [`v=spf1 ip4:192.0.2.1 ${Array.from({ length: 11 }, (_, i) => `include:i${i}.example.test`).join(' ')} -all`] } };
    for (let i = 0; i < 11; i++) zone[`i${i}.example.test`] = { TXT: ['v=spf1 ip4:203.0.113.99 -all'] };
    const r = memoryResolver(zone);
    assert.equal((await evaluateSpf(r, 'example.test', ctx('192.0.2.1'))).result, 'pass');
    const far = await evaluateSpf(r, 'example.test', ctx('198.51.100.1'));
    assert.equal(far.result, 'permerror');
    assert.ok(far.problems.some((p) => p.kind === 'limit'));
    const ex = await evaluateSpf(r, 'example.test', ctx('192.0.2.1'), { exhaustive: true });
    assert.equal(ex.lookups, 11);
    assert.ok(ex.problems.some((p) => p.kind === 'limit' && /11 DNS lookups/.test(p.error)));
  });

  it('permerror past 2 void lookups', async () => {
    const r = memoryResolver({ 'example.test': { TXT: ['v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test -all'] } });
    const e = await evaluateSpf(r, 'example.test', ctx('192.0.2.1'));
    assert.equal(e.result, 'permerror');
    assert.ok(e.problems.some((p) => p.kind === 'void'));
  });

  it('multiple records, syntax errors in includes and missing include targets are permerror, named', async () => {
    const r = memoryResolver({
      'two.test': { TXT: ['v=spf1 -all', 'v=spf1 +all'] },
      'inc.test': { TXT: ['v=spf1 include:bad.inc.test -all'] },
      'bad.inc.test': { TXT: ['v=spf1 ip4:1.2.3 -all'] },
      'gone.test': { TXT: ['v=spf1 include:nothing.gone.test -all'] },
    });
    const two = await evaluateSpf(r, 'two.test', ctx('192.0.2.1'));
    assert.equal(two.result, 'permerror');
    assert.equal(two.problems[0]!.kind, 'multiple');
    const inc = await evaluateSpf(r, 'inc.test', ctx('192.0.2.1'));
    assert.equal(inc.result, 'permerror');
    assert.deepEqual([inc.problems[0]!.domain, inc.problems[0]!.record, inc.problems[0]!.kind], ['bad.inc.test', 'v=spf1 ip4:1.2.3 -all', 'syntax']);
    const gone = await evaluateSpf(r, 'gone.test', ctx('192.0.2.1'));
    assert.equal(gone.result, 'permerror');
    assert.equal(gone.problems[0]!.kind, 'missing');
  });

  it('a timeout is temperror (unreachable), never none', async () => {
    const r = memoryResolver({ 'slow.test': { mode: 'TIMEOUT' }, 'inc.test': { TXT: ['v=spf1 include:slow.test -all'] }, 'sf.test': { mode: 'SERVFAIL' } });
    const e = await evaluateSpf(r, 'slow.test', ctx('192.0.2.1'));
    assert.equal(e.result, 'temperror');
    assert.equal(e.problems[0]!.dns, 'unreachable');
    assert.equal((await evaluateSpf(r, 'inc.test', ctx('192.0.2.1'))).result, 'temperror');
    const sf = await evaluateSpf(r, 'sf.test', ctx('192.0.2.1'));
    assert.equal(sf.result, 'temperror');
    assert.equal(sf.problems[0]!.dns, 'broken');
  });

  it('mx, ptr, exists and ip6 mechanisms; IPv4-mapped clients match ip4', async () => {
    const r = memoryResolver({
      'example.test': { TXT: ['v=spf1 mx/24 exists:%{ir}.ok.example.test ptr ip6:2001:db8::/32 -all'], MX: [{ exchange: 'mx.example.test', priority: 10 }] },
      'mx.example.test': { A: ['192.0.2.10'] },
      '9.9.51.198.ok.example.test': { A: ['127.0.0.2'] },
      '7.113.0.203.in-addr.arpa': { PTR: ['host.example.test'] },
      'host.example.test': { A: ['203.0.113.7'] },
    });
    assert.equal((await evaluateSpf(r, 'example.test', ctx('192.0.2.200'))).result, 'pass');
    assert.equal((await evaluateSpf(r, 'example.test', ctx('::ffff:192.0.2.200'))).result, 'pass');
    assert.equal((await evaluateSpf(r, 'example.test', ctx('198.51.9.9'))).matched?.term, 'exists:%{ir}.ok.example.test');
    assert.equal((await evaluateSpf(r, 'example.test', ctx('203.0.113.7'))).matched?.term, 'ptr');
    assert.equal((await evaluateSpf(r, 'example.test', ctx('2001:db8::1'))).result, 'pass');
    assert.equal((await evaluateSpf(r, 'example.test', ctx('2001:db9::1'))).result, 'fail');
  });

  it('no record is none; a redirect to nothing is permerror', async () => {
    const r = memoryResolver({ 'r.test': { TXT: ['v=spf1 redirect=none.r.test'] } });
    assert.equal((await evaluateSpf(r, 'absent.test', ctx('192.0.2.1'))).result, 'none');
    assert.equal((await evaluateSpf(r, 'r.test', ctx('192.0.2.1'))).result, 'permerror');
  });

  it('include and redirect loops are permerror, named with the chain', async () => {
    const r = memoryResolver({
      'a.test': { TXT: ['v=spf1 include:b.test -all'] }, 'b.test': { TXT: ['v=spf1 include:a.test -all'] },
      'r.test': { TXT: ['v=spf1 redirect=r2.test'] }, 'r2.test': { TXT: ['v=spf1 redirect=r.test'] },
      'same.test': { TXT: ['v=spf1 include:x.same.test include:x.same.test -all'] }, 'x.same.test': { TXT: ['v=spf1 -all'] },
    });
    for (const exhaustive of [false, true]) {
      const e = await evaluateSpf(r, 'a.test', ctx('192.0.2.1'), { exhaustive });
      assert.equal(e.result, 'permerror');
      assert.deepEqual(e.problems.map((p) => [p.kind, p.error]), [['loop', 'include loop: a.test -> b.test -> a.test']]);
      assert.ok(e.lookups <= 3);
    }
    const rr = await evaluateSpf(r, 'r.test', ctx('192.0.2.1'));
    assert.equal(rr.result, 'permerror');
    assert.equal(rr.problems[0]!.error, 'redirect loop: r.test -> r2.test -> r.test');
    const same = await evaluateSpf(r, 'same.test', ctx('192.0.2.1'));
    assert.equal(same.result, 'fail', 'an include used twice is no loop');
    assert.ok(same.warnings.some((w) => /included twice/.test(w)));
  });
});
