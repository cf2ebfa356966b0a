import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { buildZone } from './zone.ts';
import { axfrMessages, FAST_OUT_BYTES, parseQuery, respond, respondFast, serialAtLeast, type RespondContext } from './wire.ts';
import type { Zone } from './zone.ts';

const zone = buildZone(
  [
    { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' },
    { network: '10.9.9.9', txt: `${'long '.repeat(150)}$` },
    { network: '192.0.2.0/24', txt: 'net $' },
    { network: '2001:db8::/32', txt: 'six $' },
  ],
  { apex: 'relays.test', ns: ['ns1.relays.test', 'ns.example.net'], hosts: [{ name: 'ns1', addresses: ['192.0.2.53'] }], soa: { serial: 9 } },
);
const UDP: RespondContext = { tcp: false, ednsUdpSize: 1232 };
const TCP: RespondContext = { tcp: true, ednsUdpSize: 1232 };

function query(name: string, type: string, opts: { id?: number; edns?: number; ednsVersion?: number; rd?: boolean } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 4242,
    flags: opts.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as dnsPacket.RecordType, name, class: 'IN' }],
    additionals: opts.edns === undefined ? [] : [{
      type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: opts.ednsVersion ?? 0, flags: 0, options: [],
    } as unknown as dnsPacket.Answer],
  });
}

function reply(msg: Buffer, ctx = UDP): Buffer {
  const r = respond(msg, zone, ctx);
  assert.equal(r.kind, 'reply');
  return r.kind === 'reply' ? r.bytes : Buffer.alloc(0);
}

function decode(b: Buffer): dnsPacket.Packet & { rcode?: string; flag_aa?: boolean; flag_tc?: boolean } {
  return dnsPacket.decode(b) as dnsPacket.Packet & { rcode?: string };
}

describe('respond: answers', () => {
  it('A and TXT for a listed address, authoritative, RD copied, no RA', () => {
    const a = decode(reply(query('3.2.1.10.relays.test', 'A')));
    assert.equal(a.rcode, 'NOERROR');
    assert.equal(a.flag_aa, true);
    assert.equal((a as { flag_rd?: boolean }).flag_rd, true);
    assert.equal((a as { flag_ra?: boolean }).flag_ra, false);
    assert.deepEqual(a.answers?.map((x) => [x.name, x.type, (x as { data: unknown }).data, (x as { ttl?: number }).ttl]), [['3.2.1.10.relays.test', 'A', '127.0.0.7', 2100]]);
    const t = decode(reply(query('3.2.1.10.relays.test', 'TXT')));
    assert.deepEqual((t.answers?.[0] as { data: Buffer[] }).data.map(String), ['single 10.1.2.3']);
  });

  it('echoes the question byte for byte (DB-03: mixed case, 0x20)', () => {
    const q = query('3.2.1.10.ReLaYs.TeSt', 'A');
    const r = reply(q);
    const end = parseQuery(q).kind === 'query' ? (parseQuery(q) as { query: { questionEnd: number } }).query.questionEnd : 0;
    assert.deepEqual(r.subarray(12, end), q.subarray(12, end));
    assert.equal(decode(r).answers?.[0]?.name, '3.2.1.10.ReLaYs.TeSt'); // the owner is a pointer to the question
  });

  it('NXDOMAIN and NODATA carry the SOA with the negative TTL', () => {
    const nx = decode(reply(query('4.2.1.10.relays.test', 'A')));
    assert.equal(nx.rcode, 'NXDOMAIN');
    assert.equal(nx.answers?.length, 0);
    assert.equal(nx.authorities?.[0]?.type, 'SOA');
    assert.equal(nx.authorities?.[0]?.ttl, 300);
    const nodata = decode(reply(query('2.1.10.relays.test', 'A')));
    assert.equal(nodata.rcode, 'NOERROR');
    assert.equal(nodata.answers?.length, 0);
    assert.equal(nodata.authorities?.[0]?.type, 'SOA');
    const aaaa = decode(reply(query('3.2.1.10.relays.test', 'AAAA')));
    assert.equal(aaaa.rcode, 'NOERROR');
    assert.equal(aaaa.answers?.length, 0);
  });

  it('SOA, NS and host records at the apex; ANY is one RRset', () => {
    const soa = decode(reply(query('relays.test', 'SOA')));
    assert.deepEqual((soa.answers?.[0] as { data: { mname: string; serial: number } }).data.mname, 'ns1.relays.test');
    assert.equal((soa.answers?.[0] as { data: { serial: number } }).data.serial, 9);
    const ns = decode(reply(query('relays.test', 'NS')));
    assert.deepEqual(ns.answers?.map((x) => (x as { data: string }).data), ['ns1.relays.test', 'ns.example.net']);
    const host = decode(reply(query('ns1.relays.test', 'A')));
    assert.deepEqual(host.answers?.map((x) => (x as { data: string }).data), ['192.0.2.53']);
    const anyApex = decode(reply(query('relays.test', 'ANY')));
    assert.deepEqual(anyApex.answers?.map((x) => x.type), ['SOA']);
    const anyListed = decode(reply(query('3.2.1.10.relays.test', 'ANY')));
    assert.deepEqual(anyListed.answers?.map((x) => x.type), ['A']);
  });

  it('REFUSED outside the zone and for other classes', () => {
    assert.equal(decode(reply(query('example.org', 'A'))).rcode, 'REFUSED');
    const ch = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'TXT', name: 'version.bind', class: 'CH' }] });
    assert.equal(decode(reply(ch)).rcode, 'REFUSED');
  });

  it('AXFR: refused over UDP or without permission; "xfr" over TCP when allowed', () => {
    assert.equal(decode(reply(query('relays.test', 'AXFR'))).rcode, 'REFUSED');
    assert.equal(decode(reply(query('relays.test', 'AXFR'), TCP)).rcode, 'REFUSED');
    assert.equal(respond(query('relays.test', 'AXFR'), zone, { ...TCP, xfrAllowed: true }).kind, 'xfr');
    assert.equal(decode(reply(query('x.relays.test', 'AXFR'), { ...TCP, xfrAllowed: true })).rcode, 'REFUSED');
  });

  it('AXFR messages start and end with the SOA and hold every record', () => {
    const q = query('Relays.Test', 'AXFR');
    const p = parseQuery(q);
    assert.equal(p.kind, 'query');
    if (p.kind !== 'query') return;
    const msgs = [...axfrMessages(q, p.query, zone, 300)];
    assert.ok(msgs.length > 1);
    const records = msgs.flatMap((m) => decode(m).answers ?? []);
    assert.equal(records[0]?.type, 'SOA');
    assert.equal(records.at(-1)?.type, 'SOA');
    assert.equal(records.length, [...zone.records()].length + 1);
    assert.ok(records.some((r) => r.name === '*.2.0.192.Relays.Test' && r.type === 'TXT'));
  });
});

describe('respond: EDNS and truncation', () => {
  it('echoes an OPT record advertising our size', () => {
    const r = decode(reply(query('3.2.1.10.relays.test', 'A', { edns: 4096 })));
    const opt = r.additionals?.find((x) => x.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    assert.equal(opt?.udpPayloadSize, 1232);
  });

  it('sets TC when the answer does not fit 512 bytes without EDNS, and answers in full over TCP', () => {
    const u = decode(reply(query('9.9.9.10.relays.test', 'TXT')));
    assert.equal(u.flag_tc, true);
    assert.equal(u.answers?.length, 0);
    const e = decode(reply(query('9.9.9.10.relays.test', 'TXT', { edns: 1232 })));
    assert.equal(e.flag_tc, false);
    const t = decode(reply(query('9.9.9.10.relays.test', 'TXT'), TCP));
    assert.equal(t.flag_tc, false);
    const txt = (t.answers?.[0] as { data: Buffer[] }).data.map(String).join('');
    assert.equal(txt, `${'long '.repeat(150)}10.9.9.9`);
    assert.ok((t.answers?.[0] as { data: Buffer[] }).data.every((s) => s.length <= 255));
  });

  it('EDNS sizes below 512 count as 512, above our maximum as our maximum (DB-04: 65535)', () => {
    assert.equal(decode(reply(query('9.9.9.10.relays.test', 'TXT', { edns: 100 }))).flag_tc, true);
    const big = reply(query('9.9.9.10.relays.test', 'TXT', { edns: 65535 }));
    assert.ok(big.length <= 1232);
  });

  it('BADVERS for EDNS version 1', () => {
    const r = reply(query('3.2.1.10.relays.test', 'A', { edns: 1232, ednsVersion: 1 }));
    const d = decode(r);
    assert.equal(d.answers?.length, 0);
    // extended rcode 1 (<<4 = 16 = BADVERS) is the first byte of the OPT TTL
    const opt = r.subarray(r.length - 11);
    assert.equal(opt.readUInt16BE(1), 41);
    assert.equal(opt[5], 1);
  });
});

describe('respond: malformed queries (DB-04)', () => {
  const base = query('3.2.1.10.relays.test', 'A');

  const rcodeOf = (b: Buffer): number | 'drop' => {
    const r = respond(b, zone, UDP);
    if (r.kind === 'drop') return 'drop';
    assert.equal(r.kind, 'reply');
    return r.kind === 'reply' ? r.rcode : -1;
  };

  it('drops runts and responses', () => {
    assert.equal(rcodeOf(Buffer.alloc(0)), 'drop');
    assert.equal(rcodeOf(base.subarray(0, 11)), 'drop');
    const resp = Buffer.from(base);
    resp[2] = resp[2]! | 0x80;
    assert.equal(rcodeOf(resp), 'drop');
  });

  it('FORMERR for QDCOUNT 0 or 2, truncated questions; trailing bytes are ignored as BIND and rbldnsd do (D4)', () => {
    const qd0 = Buffer.from(base);
    qd0.writeUInt16BE(0, 4);
    assert.equal(rcodeOf(qd0), 1);
    const qd2 = Buffer.concat([base, base.subarray(12)]);
    qd2.writeUInt16BE(2, 4);
    assert.equal(rcodeOf(qd2), 1);
    assert.equal(rcodeOf(base.subarray(0, 20)), 1);
    assert.equal(rcodeOf(base.subarray(0, base.length - 2)), 1);
    assert.equal(rcodeOf(Buffer.concat([base, Buffer.from([0])])), rcodeOf(base));
    const formerr = respond(qd2, zone, UDP);
    assert.ok(formerr.kind === 'reply' && formerr.bytes.length === 12);
  });

  it('FORMERR for compression pointers in the question, including a loop', () => {
    const loop = Buffer.concat([base.subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(loop), 1);
    const fwd = Buffer.concat([base.subarray(0, 12), Buffer.from([1, 0x61, 0xc0, 20, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(fwd), 1);
  });

  it('FORMERR for a pointer loop in the additional section', () => {
    const m = Buffer.concat([base, Buffer.from([0xc0, base.length, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0])]);
    m.writeUInt16BE(1, 10);
    assert.equal(rcodeOf(m), 1);
  });

  it('FORMERR for two OPT records or bad option framing', () => {
    const opt = Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    const two = Buffer.concat([base, opt, opt]);
    two.writeUInt16BE(2, 10);
    assert.equal(rcodeOf(two), 1);
    const badOpt = Buffer.concat([base, Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 3, 0, 10, 0])]);
    badOpt.writeUInt16BE(1, 10);
    assert.equal(rcodeOf(badOpt), 1);
  });

  it('NOTIMP for other opcodes, names longer than 255 bytes are FORMERR', () => {
    const notify = Buffer.from(base);
    notify[2] = (notify[2]! & 0x87) | (4 << 3);
    assert.equal(rcodeOf(notify), 4);
    // RD and CD are not copied into a NOTIMP answer (D4, genreport opcodeflg); the opcode is.
    const flagged = Buffer.from(base);
    flagged[2] = (15 << 3) | 0x01; // opcode 15, RD
    flagged[3] = 0x10; // CD
    const r = respond(flagged, zone, UDP);
    assert.ok(r.kind === 'reply');
    const f = r.bytes.readUInt16BE(2);
    assert.equal(f & 0x000f, 4, 'NOTIMP');
    assert.equal((f >> 11) & 0xf, 15, 'opcode echoed');
    assert.equal(f & 0x0100, 0, 'RD not copied');
    assert.equal(f & 0x0010, 0, 'CD not copied');
    const labels: number[] = [];
    for (let i = 0; i < 130; i++) labels.push(1, 0x30);
    const long = Buffer.concat([base.subarray(0, 12), Buffer.from([...labels, 0, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(long), 1);
  });

  it('binary labels and labels with dots are NXDOMAIN, never listed (DB-02)', () => {
    const q = Buffer.concat([base.subarray(0, 12), Buffer.from([3, 0x31, 0x2e, 0x32, 1, 0x31, 1, 0x31, 1, 0x31]),
      Buffer.from([6, ...Buffer.from('relays'), 4, ...Buffer.from('test'), 0, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(q), 3);
    const bin = Buffer.concat([base.subarray(0, 12), Buffer.from([1, 0xff, 1, 0x00, 1, 0x80, 1, 0x31]),
      Buffer.from([6, ...Buffer.from('relays'), 4, ...Buffer.from('test'), 0, 0, 1, 0, 1])]);
    assert.equal(rcodeOf(bin), 3);
  });

  it('never throws and never answers with more than the query for garbage (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, tcp) => {
      const msg = Buffer.from(bytes);
      const r = respond(msg, zone, tcp ? TCP : UDP);
      if (r.kind === 'reply' && r.rcode !== 0 && r.rcode !== 3) assert.ok(r.bytes.length <= Math.max(msg.length, 12) + 11);
    }), { numRuns: 3000 });
  });

  it('survives mutations of a valid query (property)', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(200), fc.nat(255)), { maxLength: 6 }), fc.nat(80), (muts, cut) => {
      const m = Buffer.from(query('2.0.0.127.relays.test', 'TXT', { edns: 1232 }));
      for (const [pos, v] of muts) if (pos < m.length) m[pos] = v;
      const r = respond(m.subarray(0, Math.max(0, m.length - cut)), zone, UDP);
      if (r.kind === 'reply') assert.ok(r.bytes.length <= 1232);
    }), { numRuns: 3000 });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// respondFast: the allocation-free UDP path must give respond()'s bytes whenever it answers.
// ---------------------------------------------------------------------------------------------------------------

describe('respondFast', () => {
  const entries = [
    { network: '10.1.2.3', code: '127.0.0.7', txt: 'single $' },
    { network: '10.9.9.9', txt: `${'long '.repeat(60)}$ and again $ and $$ (${'x'.repeat(200)})` },
    { network: '10.0.0.0/16', code: '127.0.0.3', txt: 'Ünïcödé ✓ $ 😀 $' },
    { network: '10.0.5.0/24', code: '127.0.0.4', txt: null },
    { network: '10.0.6.0/24', txt: 'no address here' },
    { network: '10.0.6.128/25', excluded: true },
    { network: '1.2.3.0/24', txt: '$' },
    { network: '192.0.2.0/24', txt: 'net $' },
    { network: '2001:db8::/32', txt: 'six $' },
  ];
  const plain = buildZone(entries, { apex: 'Relays.Test', soa: { serial: 3 }, ns: ['ns.example.net', 'ns2.relays.test'], testPointTxt: '' });
  const long = buildZone(entries, { apex: 'a.b.c.dnsbl.example.org', soa: { serial: 4, mname: 'ns.a.b.c.dnsbl.example.org' } });
  const withHosts = zone; // has a host record: unlisted names go to respond()
  const out = Buffer.alloc(FAST_OUT_BYTES);

  const octet = fc.oneof(
    fc.constantFrom('0', '1', '2', '3', '5', '6', '9', '10', '127', '192', '200', '255', '256', '01', '007', '999', 'a', '1a'),
    fc.integer({ min: 0, max: 255 }).map(String),
  );
  const ipName = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
  const known = fc.constantFrom('3.2.1.10', '9.9.9.10', '7.0.0.10', '7.5.0.10', '7.6.0.10', '200.6.0.10', '5.3.2.1', '2.0.0.127', '1.0.0.127', '7.2.0.192', '1.2.3.4', '0.0.0.0', '3.0.0.10');
  const caseMix = (s: string, flips: number): string => [...s].map((c, i) => ((flips >> (i % 31)) & 1 ? c.toUpperCase() : c)).join('');
  const zones: Array<[string, Zone]> = [['relays.test', plain], ['a.b.c.dnsbl.example.org', long], ['relays.test', withHosts]];

  it('answers like respond() byte for byte, or leaves the query to it (property)', () => {
    let fast = 0;
    let total = 0;
    fc.assert(fc.property(
      fc.oneof(known, ipName, fc.constantFrom('', '2.1.10', '1.2.3.4.5', 'x.3.2.1.10')),
      fc.nat(2),
      fc.integer({ min: 0, max: 0x7fffffff }),
      fc.constantFrom('A', 'TXT', 'TXT', 'AAAA', 'ANY', 'SOA'),
      fc.option(fc.constantFrom(0, 100, 512, 600, 1232, 4096, 65535)),
      fc.constantFrom(512, 1232, 4096),
      fc.record({ id: fc.nat(65535), rd: fc.boolean(), cd: fc.boolean(), do: fc.boolean(), version: fc.constantFrom(0, 0, 0, 1), cls: fc.constantFrom(1, 1, 1, 3, 255), opts: fc.boolean() }),
      (label, zi, flips, type, edns, ours, o) => {
        const [apex, z] = zones[zi]!;
        const name = caseMix(label === '' ? apex : `${label}.${apex}`, flips);
        const msg = dnsPacket.encode({
          type: 'query', id: o.id,
          flags: (o.rd ? dnsPacket.RECURSION_DESIRED : 0) | (o.cd ? dnsPacket.CHECKING_DISABLED : 0),
          questions: [{ type: type as dnsPacket.RecordType, name, class: 'IN' }],
          additionals: edns === null ? [] : [{
            type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: o.version, flags: o.do ? dnsPacket.DNSSEC_OK : 0,
            options: o.opts ? [{ code: 10, data: Buffer.from('12345678') }] : [],
          } as unknown as dnsPacket.Answer],
        });
        const qEnd = msg.length - (edns === null ? 0 : o.opts ? 23 : 11);
        msg.writeUInt16BE(o.cls, qEnd - 2);
        const n = respondFast(msg, z, ours, out);
        total++;
        if (n === 0) return;
        fast++;
        const r = respond(msg, z, { tcp: false, ednsUdpSize: ours });
        assert.equal(r.kind, 'reply');
        if (r.kind === 'reply') assert.deepEqual(out.subarray(0, n).toString('hex'), r.bytes.toString('hex'), `${name} ${type}`);
      },
    ), { numRuns: 6000 });
    assert.ok(fast > total / 25, `fast path answered only ${fast} of ${total}`);
  });

  it('leaves malformed and mutated queries to respond(), or answers them identically (property)', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(80), fc.nat(255)), { maxLength: 4 }), fc.nat(20), fc.boolean(), (muts, cut, edns) => {
      const m = Buffer.from(query('3.2.1.10.relays.test', 'TXT', edns ? { edns: 1232 } : {}));
      for (const [pos, v] of muts) if (pos < m.length) m[pos] = v;
      const msg = m.subarray(0, Math.max(0, m.length - cut));
      const n = respondFast(msg, plain, 1232, out);
      if (n === 0) return;
      const r = respond(msg, plain, UDP);
      assert.equal(r.kind, 'reply');
      if (r.kind === 'reply') assert.equal(out.subarray(0, n).toString('hex'), r.bytes.toString('hex'));
    }), { numRuns: 5000 });
  });

  it('answers the common queries itself', () => {
    for (const [name, type] of [['3.2.1.10', 'A'], ['3.2.1.10', 'TXT'], ['7.0.0.10', 'TXT'], ['77.5.0.10', 'TXT'], ['4.3.2.11', 'A'], ['2.0.0.127', 'TXT']] as const) {
      assert.ok(respondFast(query(`${name}.relays.test`, type), plain, 1232, out) > 0, `${name} ${type}`);
      assert.ok(respondFast(query(`${name}.relays.test`, type, { edns: 1232 }), plain, 1232, out) > 0, `${name} ${type} EDNS`);
    }
    // Too long for 512 bytes: respond() sets TC.
    assert.equal(respondFast(query('9.9.9.10.relays.test', 'TXT'), plain, 1232, out), 0);
  });
});

describe('IXFR queries (RFC 1995) and serial arithmetic (RFC 1982)', () => {
  const soa = { mname: 'ns.x.test', rname: 'h.x.test', serial: 41, refresh: 1, retry: 1, expire: 1, minimum: 1 };
  const ixfr = (authority: dnsPacket.Answer[], type: dnsPacket.RecordType = 'IXFR'): Buffer =>
    dnsPacket.encode({ type: 'query', id: 7, questions: [{ type, name: 'relays.test', class: 'IN' }], authorities: authority });

  it('parses the client SOA serial from the authority section (names compressed or not)', () => {
    const p = parseQuery(ixfr([{ type: 'SOA', name: 'relays.test', ttl: 0, data: soa }]));
    assert.equal(p.kind, 'query');
    assert.equal(p.kind === 'query' ? p.query.ixfrSerial : -1, 41);
    const bare = parseQuery(ixfr([]));
    assert.equal(bare.kind === 'query' ? bare.query.ixfrSerial : -1, null);
  });

  it('FORMERR for authority records anywhere else: another type, a non-SOA record, two records, a short SOA', () => {
    const formerr = (m: Uint8Array, what: string): void => {
      const p = parseQuery(m);
      assert.equal(p.kind, 'error', what);
      assert.equal(p.kind === 'error' ? p.rcode : 0, 1, what);
    };
    formerr(ixfr([{ type: 'SOA', name: 'relays.test', ttl: 0, data: soa }], 'A'), 'A query with an SOA');
    formerr(ixfr([{ type: 'A', name: 'relays.test', ttl: 0, data: '127.0.0.2' }]), 'IXFR with an A record');
    formerr(ixfr([{ type: 'SOA', name: 'relays.test', ttl: 0, data: soa }, { type: 'SOA', name: 'relays.test', ttl: 0, data: soa }]), 'two SOAs');
    const m = ixfr([{ type: 'SOA', name: 'relays.test', ttl: 0, data: soa }]);
    formerr(m.subarray(0, m.length - 3), 'truncated SOA');
  });

  it('serialAtLeast follows RFC 1982 including wrap-around', () => {
    assert.ok(serialAtLeast(5, 5));
    assert.ok(serialAtLeast(6, 5));
    assert.ok(!serialAtLeast(4, 5));
    assert.ok(serialAtLeast(0, 0xffff_ffff), '0 follows 2^32-1');
    assert.ok(!serialAtLeast(0xffff_ffff, 0));
    assert.ok(serialAtLeast(0x7fff_ffff, 0), 'just under half the space ahead');
    assert.ok(!serialAtLeast(0x8000_0001, 0), 'more than half the space ahead is behind');
  });
});
