// respondFast on IPv6 names (32 nibble labels): whenever it answers, the bytes are respond()'s.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { buildZone, type Zone } from './zone.ts';
import { FAST_OUT_BYTES, respond, respondFast } from './wire.ts';

const entries = [
  { network: '2001:db8::/32', txt: 'six $' },
  { network: '2001:db8:1::/48', code: '127.0.0.3', txt: null },
  { network: '2001:db8:1:2::/64', excluded: true },
  { network: '2a01:4f8::1', code: '127.0.0.5', txt: 'one $ and $' },
  { network: 'fe80::/10', code: '127.0.0.6', txt: 'link-local' },
  { network: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124', code: '127.0.0.7' },
  { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' },
];
const plain = buildZone(entries, { apex: 'Relays.Test', soa: { serial: 3 }, ns: ['ns.example.net', 'ns2.relays.test'] });
const long = buildZone(entries, { apex: 'a.b.c.dnsbl.example.org', soa: { serial: 4, mname: 'ns.a.b.c.dnsbl.example.org' } });
const withHosts = buildZone(entries, { apex: 'relays.test', ns: ['ns1.relays.test'], hosts: [{ name: 'ns1', addresses: ['192.0.2.53'] }], soa: { serial: 9 } });
const zones: Array<[string, Zone]> = [['relays.test', plain], ['a.b.c.dnsbl.example.org', long], ['relays.test', withHosts]];
const out = Buffer.alloc(FAST_OUT_BYTES);

/** The reversed nibble name of a 32-hex-digit address. */
const nibbles = (hex32: string): string => [...hex32].reverse().join('.');
const hexOf = (prefix: string, rest: readonly number[]): string => (prefix + rest.map((n) => n.toString(16)).join('')).slice(0, 32);

function query(name: string, type: string, o: { id?: number; rd?: boolean; edns?: number | null; version?: number; do?: boolean } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query', id: o.id ?? 7, flags: o.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as dnsPacket.RecordType, name, class: 'IN' }],
    additionals: o.edns === undefined || o.edns === null ? [] : [{
      type: 'OPT', name: '.', udpPayloadSize: o.edns, extendedRcode: 0, ednsVersion: o.version ?? 0, flags: o.do ? dnsPacket.DNSSEC_OK : 0, options: [],
    } as unknown as dnsPacket.Answer],
  });
}

function same(msg: Buffer, z: Zone, ours: number): number {
  const n = respondFast(msg, z, ours, out);
  if (n === 0) return 0;
  const r = respond(msg, z, { tcp: false, ednsUdpSize: ours });
  assert.equal(r.kind, 'reply');
  if (r.kind === 'reply') assert.equal(out.subarray(0, n).toString('hex'), r.bytes.toString('hex'));
  return n;
}

describe('respondFast, IPv6 names', () => {
  it('answers like respond() byte for byte, or leaves the query to it (property)', () => {
    let fast = 0;
    let total = 0;
    const prefix = fc.constantFrom('20010db8', '20010db80001', '20010db800010002', '2a0104f8', 'fe8', 'ffffffffffffffffffffffffffffff', '2a0104f8000000000000000000000001', '');
    fc.assert(fc.property(
      prefix, fc.array(fc.nat(15), { minLength: 32, maxLength: 32 }), fc.nat(2), fc.integer({ min: 0, max: 0x7fffffff }),
      fc.constantFrom('A', 'A', 'TXT', 'AAAA', 'ANY'), fc.option(fc.constantFrom(0, 512, 1232, 4096)), fc.constantFrom(512, 1232),
      fc.record({ id: fc.nat(65535), rd: fc.boolean(), do: fc.boolean(), version: fc.constantFrom(0, 0, 1) }),
      (p, rest, zi, flips, type, edns, ours, o) => {
        const [apex, z] = zones[zi]!;
        const name = [...`${nibbles(hexOf(p, rest))}.${apex}`].map((c, i) => ((flips >> (i % 31)) & 1 ? c.toUpperCase() : c)).join('');
        total++;
        if (same(query(name, type, { ...o, edns }), z, ours) > 0) fast++;
      },
    ), { numRuns: 6000 });
    assert.ok(fast > total / 4, `fast path answered only ${fast} of ${total}`);
  });

  it('answers IPv6 A and negative answers itself; TXT with an address, host zones and partial names go to respond()', () => {
    const listed = `${nibbles('20010db8000000000000000000000001')}.relays.test`;
    const unlisted = `${nibbles('20010db9000000000000000000000001')}.relays.test`;
    const excluded = `${nibbles('20010db8000100020000000000000001')}.relays.test`;
    const noTxt = `${nibbles('20010db8000100030000000000000001')}.relays.test`;
    for (const [name, type] of [[listed, 'A'], [unlisted, 'A'], [unlisted, 'TXT'], [excluded, 'A'], [noTxt, 'TXT'], [listed.toUpperCase(), 'A']] as const) {
      assert.ok(same(query(name, type), plain, 1232) > 0, `${name} ${type}`);
      assert.ok(same(query(name, type, { edns: 1232, do: true }), plain, 1232) > 0, `${name} ${type} EDNS`);
    }
    assert.equal(respondFast(query(listed, 'TXT'), plain, 1232, out), 0, 'the TXT text carries the formatted IPv6 address');
    assert.equal(respondFast(query(unlisted, 'A'), withHosts, 1232, out), 0, 'host zones: NXDOMAIN is the general path\'s');
    assert.ok(same(query(listed, 'A'), withHosts, 1232) > 0, 'a listed address is answered in a host zone too');
    assert.equal(respondFast(query(listed.split('.').slice(1).join('.'), 'A'), plain, 1232, out), 0, '31 nibbles');
    assert.equal(respondFast(query(`0.${listed}`, 'A'), plain, 1232, out), 0, '33 nibbles');
    assert.equal(respondFast(query(listed.replace(/^1\./, 'g.'), 'A'), plain, 1232, out), 0, 'not a hex digit');
    assert.equal(respondFast(query(listed.replace(/^1\./, '01.'), 'A'), plain, 1232, out), 0, 'two-character label');
    // IPv4 still answered, and a name that starts like IPv4 but is IPv6 too.
    assert.ok(same(query('3.2.1.10.relays.test', 'TXT'), plain, 1232) > 0);
    assert.ok(same(query(`${nibbles('20010db8000000000000000000001234')}.relays.test`, 'A'), plain, 1232) > 0, 'first four nibbles decimal digits');
  });
});
