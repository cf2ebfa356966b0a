import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildZone, normalizeTxtTemplate, ZoneBuilder, ZoneError, type LookupResult, type ZoneEntry } from './zone.ts';
import { dnsblName, parseNetwork, isNetworkError, numberToIpv4, bigintToIpv6, formatIpv6Words } from './network.ts';

const APEX = 'relays.test';
const V6_TP_LISTED = '2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0';
const V6_TP_UNLISTED = '1.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0';

function kind(r: LookupResult): string {
  return r.kind === 'listed' ? `listed ${r.code} ${r.txt ?? '-'}` : r.kind;
}

const zone = buildZone(
  [
    { network: '10.0.0.0/8', code: '127.0.0.4', txt: 'slash8 $' },
    { network: '10.1.2.0/24', code: '127.0.0.6', txt: 'slash24 $' },
    { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $ costs $$5' },
    { network: '10.1.3.0/24', excluded: true },
    { network: '10.1.3.7', code: '127.0.0.9', txt: 'inside an exclusion' },
    { network: '192.0.2.0/25', txt: null },
    { network: '2a01:db8::/32', txt: 'v6 $' },
    { network: '2a01:db8:1::5', excluded: true },
    { network: '127.0.0.0/8', excluded: true },
    { network: '::ffff:0:0/96', excluded: true },
  ],
  { apex: 'Relays.Test.', soa: { serial: 7 } },
);

describe('zone lookups (RFC 5782)', () => {
  const cases: Array<[string, string]> = [
    // DB-01 test points, even though 127/8 and ::ffff:0:0/96 are excluded
    [`2.0.0.127.${APEX}`, 'listed 127.0.0.2 RFC 5782 test point: 127.0.0.2 is always listed'],
    [`1.0.0.127.${APEX}`, 'nxdomain'],
    [`${V6_TP_LISTED}.${APEX}`, 'listed 127.0.0.2 RFC 5782 test point: ::ffff:7f00:2 is always listed'],
    [`${V6_TP_UNLISTED}.${APEX}`, 'nxdomain'],
    // most specific listing wins; exclusions win outright
    [`1.0.0.10.${APEX}`, 'listed 127.0.0.4 slash8 10.0.0.1'],
    [`4.2.1.10.${APEX}`, 'listed 127.0.0.6 slash24 10.1.2.4'],
    [`3.2.1.10.${APEX}`, 'listed 127.0.0.7 single 10.1.2.3 costs $5'],
    [`7.3.1.10.${APEX}`, 'nxdomain'],
    [`8.3.1.10.${APEX}`, 'nxdomain'],
    [`127.2.0.192.${APEX}`, 'listed 127.0.0.2 -'],
    [`128.2.0.192.${APEX}`, 'nxdomain'],
    // IPv6
    [`9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.a.2.${APEX}`, 'listed 127.0.0.2 v6 2a01:db8:1::9'],
    [`5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.B.D.0.1.0.A.2.${APEX}`, 'nxdomain'],
    // apex, empty non-terminals, outside
    [APEX, 'apex'],
    [`RELAYS.test.`, 'apex'],
    [`0.0.127.${APEX}`, 'nodata'],
    [`0.127.${APEX}`, 'nodata'],
    [`127.${APEX}`, 'nodata'],
    [`2.1.10.${APEX}`, 'nodata'],
    [`3.1.10.${APEX}`, 'nxdomain'], // 10.1.3.0/24 is excluded but 10.1.3.7? no: the exclusion wins, nothing below
    [`11.${APEX}`, 'nxdomain'],
    [`8.b.d.0.1.0.a.2.${APEX}`, 'nodata'],
    [`0.0.0.0.${APEX}`, 'nodata'], // a 4-nibble prefix of ::ffff:7f00:2
    ['example.org', 'refused'],
    [`x${APEX}`, 'refused'],
    // DB-02: never listed
    [`1.2.3.4.5.${APEX}`, 'nxdomain'],
    [`256.1.1.10.${APEX}`, 'nxdomain'],
    [`01.2.1.10.${APEX}`, 'nxdomain'],
    [`1.02.1.10.${APEX}`, 'nxdomain'],
    [`a.b.c.d.${APEX}`, 'nxdomain'],
    [`-1.2.1.10.${APEX}`, 'nxdomain'],
    [`1..1.10.${APEX}`, 'nxdomain'],
    [`0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.a.2.${APEX}`, 'nodata'], // 31 nibbles
    [`00.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.a.2.${APEX}`, 'nxdomain'],
    [`g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.a.2.${APEX}`, 'nxdomain'],
    [`0.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.a.2.${APEX}`, 'nxdomain'], // 33 labels
    [`*.2.1.10.${APEX}`, 'nxdomain'],
  ];
  for (const [q, want] of cases) {
    it(`${q} -> ${want}`, () => assert.equal(kind(zone.lookupName(q)), want));
  }

  it('is case-insensitive for the apex and nibbles (DB-03)', () => {
    assert.equal(kind(zone.lookupName(`3.2.1.10.ReLaYs.TeSt`)), 'listed 127.0.0.7 single 10.1.2.3 costs $5');
  });

  it('omits TXT work when not asked', () => {
    const r = zone.lookupName(`3.2.1.10.${APEX}`, false);
    assert.equal(r.kind, 'listed');
    assert.equal(r.kind === 'listed' ? r.txt : 'x', null);
  });

  it('exposes the SOA defaults and the serial', () => {
    assert.equal(zone.apex, 'relays.test');
    assert.equal(zone.serial, 7);
    assert.equal(zone.soa.rname, 'hostmaster.relays.test');
    assert.deepEqual(zone.ns, ['localhost']);
    assert.equal(zone.negativeTtl, 300);
  });
});

describe('zone building', () => {
  it('merges adjacent addresses with the same value into one interval', () => {
    const entries: ZoneEntry[] = [];
    for (let i = 0; i < 256; i++) entries.push({ network: `198.51.100.${i}`, txt: 'x $' });
    const z = buildZone(entries, { apex: APEX });
    assert.equal(z.stats.v4Intervals, 2); // the block + the 127.0.0.2 test point
    assert.equal(kind(z.lookupAddress('198.51.100.77')), 'listed 127.0.0.2 x 198.51.100.77');
  });

  it('builds once: the builder frees its entries', () => {
    const b = new ZoneBuilder({ apex: APEX });
    for (let i = 0; i < 5000; i++) b.add({ network: numberToIpv4(0x0a000000 + i * 2), txt: 'x $' });
    const z = b.build();
    assert.equal(z.stats.v4Intervals, 5001);
    assert.equal(kind(z.lookupAddress('10.0.39.14')), 'listed 127.0.0.2 x 10.0.39.14');
    assert.throws(() => b.build(), ZoneError);
    assert.throws(() => b.add({ network: '10.0.0.1' }), ZoneError);
  });

  it('refuses bad input', () => {
    assert.throws(() => buildZone([{ network: '10.0.0.1/8' }], { apex: APEX }), /host bits/);
    assert.throws(() => buildZone([{ network: '10.0.0.256' }], { apex: APEX }), ZoneError);
    assert.throws(() => buildZone([{ network: '10.0.0.1', code: '10.0.0.1' }], { apex: APEX }), /127\.0\.0\.0\/8/);
    assert.throws(() => buildZone([{ network: '10.0.0.1', txt: 'a$1' }], { apex: APEX }), /\$1/);
    assert.throws(() => buildZone([{ network: '10.0.0.1', txt: 'a\nb' }], { apex: APEX }), /control/);
    assert.throws(() => buildZone([], { apex: 'bad..name' }), /apex/);
    assert.throws(() => buildZone([], { apex: APEX, hosts: [{ name: '1.2.3.4', addresses: ['127.0.0.1'] }] }), /hide/);
  });

  it('normalizes templates like rbldnsd (trimmed) and keeps $$', () => {
    assert.equal(normalizeTxtTemplate('  a $$ b $ '), 'a $$ b $');
  });

  it('serves host records for in-zone name servers', () => {
    const z = buildZone([], { apex: APEX, ns: ['ns1.relays.test'], hosts: [{ name: 'ns1.relays.test', addresses: ['192.0.2.53', '2001:db8::53'] }] });
    const r = z.lookupName('NS1.relays.test');
    assert.equal(r.kind, 'host');
    assert.equal(kind(z.lookupName('x.ns1.relays.test')), 'nxdomain');
    const recs = [...z.records()].filter((x) => x.name === 'ns1');
    assert.deepEqual(recs.map((x) => `${x.type} ${x.data}`), ['A 192.0.2.53', 'AAAA 2001:db8::53']);
  });

  it('enumerates records with octet- and nibble-aligned wildcards', () => {
    const z = buildZone([
      { network: '10.0.0.0/23', txt: 'net $' },
      { network: '10.0.0.5', excluded: true },
      { network: '2001:db8::/63', txt: 'six $' },
    ], { apex: APEX });
    const names = [...z.records()].filter((r) => r.type === 'A').map((r) => r.name);
    assert.ok(names.includes('*.1.0.10'));
    assert.ok(names.includes('4.0.0.10') && names.includes('6.0.0.10') && !names.includes('5.0.0.10'));
    assert.ok(names.includes('*.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2')); // 2001:db8::/64
    assert.ok(names.includes('*.1.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2')); // 2001:db8:0:1::/64
    const txt = [...z.records()].find((r) => r.type === 'TXT' && r.name === '*.1.0.10');
    assert.equal(txt?.data, 'net 10.0.1.0/24');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Property: the index agrees with a naive model (exclusion wins, then longest prefix, test points forced).
// ---------------------------------------------------------------------------------------------------------------

interface ModelEntry { first: bigint; last: bigint; prefix: number; excluded: boolean; code: string; family: 4 | 6 }

function modelLookup(entries: readonly ModelEntry[], family: 4 | 6, ip: bigint): string | null {
  if (family === 4 && ip === 0x7f000002n) return '127.0.0.2';
  if (family === 4 && ip === 0x7f000001n) return null;
  if (family === 6 && ip === 0xffff7f000002n) return '127.0.0.2';
  if (family === 6 && ip === 0xffff7f000001n) return null;
  let best: ModelEntry | null = null;
  for (const e of entries) {
    if (e.family !== family || ip < e.first || ip > e.last) continue;
    if (e.excluded) return null;
    if (best === null || e.prefix >= best.prefix) best = e;
  }
  return best?.code ?? null;
}

describe('zone index vs a naive model (property)', () => {
  // Small address spaces so that entries overlap a lot: IPv4 inside 10.0.0.0/22, IPv6 inside 2001:db8::/118.
  const v4 = fc.tuple(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 22, max: 32 })).map(([off, p]) => {
    const size = 2 ** (32 - p);
    const first = 0x0a000000 + Math.floor(off / size) * size;
    return `${numberToIpv4(first)}/${p}`;
  });
  const v6 = fc.tuple(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 118, max: 128 })).map(([off, p]) => {
    const size = 2 ** (128 - p);
    const first = (0x20010db8n << 96n) + BigInt(Math.floor(off / size) * size);
    return `${bigintToIpv6(first)}/${p}`;
  });
  const entry = fc.record({
    network: fc.oneof(v4, v6, fc.constantFrom('127.0.0.0/8', '127.0.0.1', '::ffff:7f00:0/120', '::ffff:7f00:2')),
    excluded: fc.boolean(),
    code: fc.constantFrom('127.0.0.2', '127.0.0.3', '127.0.0.4'),
  });

  it('answers like the model for every address of the space', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 25 }), (raw) => {
        // The store keeps one entry per network; mirror that (last one wins).
        const byNet = new Map<string, { network: string; excluded: boolean; code: string }>();
        for (const e of raw) {
          const n = parseNetwork(e.network);
          if (isNetworkError(n)) throw new Error(n.error);
          byNet.set(n.text, e);
        }
        const entries = [...byNet.values()];
        const z = buildZone(entries.map((e) => ({ ...e, txt: `$ ${e.code}` })), { apex: APEX });
        const model: ModelEntry[] = entries.map((e) => {
          const n = parseNetwork(e.network);
          if (isNetworkError(n)) throw new Error(n.error);
          return { first: BigInt(n.first), last: BigInt(n.last), prefix: n.prefix, excluded: e.excluded, code: e.code, family: n.family };
        });
        const check = (address: string, family: 4 | 6, ip: bigint): void => {
          const want = modelLookup(model, family, ip);
          const name = dnsblName(address, APEX)!;
          const got = z.lookupName(name);
          if (want === null) assert.notEqual(got.kind, 'listed', `${address} should not be listed`);
          else {
            assert.equal(got.kind, 'listed', `${address} should be listed`);
            if (got.kind === 'listed') {
              assert.equal(got.code, want);
              if (!/^(127\.0\.0\.2|::ffff:7f00:2)$/.test(address)) assert.equal(got.txt, `${address} ${want}`);
            }
          }
        };
        for (let i = 0; i < 1024 + 8; i += 1) {
          const ip4 = 0x0a000000 - 4 + i;
          check(numberToIpv4(ip4), 4, BigInt(ip4));
          const ip6 = (0x20010db8n << 96n) - 4n + BigInt(i);
          check(bigintToIpv6(ip6), 6, ip6);
        }
        for (const ip of [0x7f000000, 0x7f000001, 0x7f000002, 0x7f000003]) check(numberToIpv4(ip), 4, BigInt(ip));
        for (const ip of [0xffff7f000001n, 0xffff7f000002n, 0xffff7f000003n]) check(bigintToIpv6(ip), 6, ip);
      }),
      { numRuns: 60 },
    );
  });

  it('answers like the model around /16 boundaries for wide networks (the lookup directory)', () => {
    const wide = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 9, max: 24 })).map(([off, p]) => {
      const size = 2 ** (32 - p);
      const first = 0x0a000000 + Math.floor((off * 65536 + (off % 7) * 4096) / size) * size;
      return `${numberToIpv4(first)}/${p}`;
    });
    fc.assert(
      fc.property(fc.array(fc.record({ network: wide, excluded: fc.boolean(), code: fc.constantFrom('127.0.0.2', '127.0.0.3') }), { maxLength: 12 }), (raw) => {
        const byNet = new Map<string, { network: string; excluded: boolean; code: string }>();
        for (const e of raw) byNet.set(e.network, e);
        const entries = [...byNet.values()];
        const z = buildZone(entries, { apex: APEX });
        const model: ModelEntry[] = entries.map((e) => {
          const n = parseNetwork(e.network);
          if (isNetworkError(n)) throw new Error(n.error);
          return { first: BigInt(n.first), last: BigInt(n.last), prefix: n.prefix, excluded: e.excluded, code: e.code, family: n.family };
        });
        for (let h = 0x0a00 - 1; h <= 0x0b00; h++) {
          for (const ip of [h * 65536 - 1, h * 65536, h * 65536 + 4096, h * 65536 + 65535]) {
            if (ip < 0) continue;
            const want = modelLookup(model, 4, BigInt(ip));
            const got = z.lookupAddress(numberToIpv4(ip));
            assert.equal(got.kind === 'listed' ? got.code : null, want, numberToIpv4(ip));
          }
        }
      }),
      { numRuns: 40 },
    );
  });

  it('formats IPv6 like RFC 5952 (and rbldnsd)', () => {
    assert.equal(formatIpv6Words(0x2a010000, 0x00010000, 0, 1), '2a01:0:1::1');
    assert.equal(formatIpv6Words(0x2a010db8, 0x00000001, 0x00010001, 0x00010001), '2a01:db8:0:1:1:1:1:1');
    assert.equal(formatIpv6Words(0xfe800000, 0, 0x00010000, 0), 'fe80::1:0:0:0');
    assert.equal(formatIpv6Words(0xfe800000, 0x00000001, 0, 0), 'fe80:0:0:1::');
    assert.equal(formatIpv6Words(0, 0, 0, 0), '::');
    assert.equal(formatIpv6Words(0x00010000, 0, 0, 0), '1::');
  });
});
