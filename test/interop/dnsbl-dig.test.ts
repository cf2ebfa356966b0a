/**
 * The ORDB DNS server against Debian's dig (bind9-dnsutils): every query shape of the issue, over UDP and TCP,
 * plus the hostile packets of hostile-inputs.md section 1.8 (DB-01..DB-04) sent as raw UDP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import { DnsblServer, buildZone, dnsblName, type Zone } from '../../src/dnsbl/index.ts';

const run = promisify(execFile);
const APEX = 'relays.test';
const LONG_REASON = `Long reason ${'x'.repeat(600)} $`;

interface DigResult {
  status: string;
  flags: string[];
  question: string[];
  answer: string[];
  authority: string[];
  opt: string | null;
  raw: string;
}

let server: DnsblServer;
let zone: Zone;

async function dig(...args: string[]): Promise<DigResult> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(server.port), '+time=2', '+tries=1', '+nocookie', ...args], { timeout: 10_000 });
  const section = (name: string): string[] => {
    const m = new RegExp(`;; ${name} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(stdout);
    return m ? m[1]!.split('\n').filter((l) => l.trim() !== '') : [];
  };
  return {
    status: /status: (\w+)/.exec(stdout)?.[1] ?? 'NONE',
    flags: (/;; flags: ([^;]*);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/).filter(Boolean),
    question: section('QUESTION'),
    answer: section('ANSWER'),
    authority: section('AUTHORITY'),
    opt: /; EDNS: ([^\n]*)/.exec(stdout)?.[1] ?? null,
    raw: stdout,
  };
}

/** The fields of a dig record line: owner, TTL, class, type, rdata. */
function rr(line: string): { owner: string; ttl: number; type: string; data: string } {
  const m = /^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$/.exec(line);
  assert.ok(m, `not a record line: ${line}`);
  return { owner: m[1]!, ttl: Number(m[2]), type: m[3]!, data: m[4]! };
}

function rdata(line: string): string {
  return rr(line).data;
}

const v6name = (a: string): string => dnsblName(a, APEX)!;

before(async () => {
  zone = buildZone(
    [
      { network: '10.20.30.40', code: '127.0.0.2', txt: 'Open relay, see http://relays.test/lookup?ip=$' },
      { network: '192.0.2.0/24', code: '127.0.0.4', txt: 'Whole TEST-NET-1 listed ($)' },
      { network: '192.0.2.1', excluded: true },
      { network: '198.51.100.9', code: '127.0.0.3', txt: LONG_REASON },
      { network: '2001:db8::/48', code: '127.0.0.2', txt: 'IPv6 $ listed' },
      { network: '2001:db8::bad', excluded: true },
    ],
    { apex: APEX, ns: ['ns1.relays.test', 'ns.example.net'], hosts: [{ name: 'ns1', addresses: ['127.0.0.1'] }], soa: { serial: 2026010101 }, ttl: 900 },
  );
  server = new DnsblServer({ zone, port: 0, axfrAllow: ['127.0.0.1'] });
  await server.start();
});

after(async () => {
  await server.stop();
});

describe('dig: query shapes', () => {
  it('A and TXT for a listed IPv4 address: authoritative, no recursion', async () => {
    const [a, t] = await Promise.all([dig('40.30.20.10.relays.test', 'A'), dig('40.30.20.10.relays.test', 'TXT')]);
    assert.equal(a.status, 'NOERROR');
    assert.ok(a.flags.includes('aa') && a.flags.includes('qr') && !a.flags.includes('ra'), a.flags.join(' '));
    assert.deepEqual(a.answer.map(rdata), ['127.0.0.2']);
    assert.equal(rr(a.answer[0]!).ttl, 900);
    assert.deepEqual(t.answer.map(rdata), ['"Open relay, see http://relays.test/lookup?ip=10.20.30.40"']);
  });

  it('CIDR listings, exclusions and NXDOMAIN with the SOA', async () => {
    const [net, excl, nx] = await Promise.all([
      dig('7.2.0.192.relays.test', 'TXT'), dig('1.2.0.192.relays.test', 'A'), dig('41.30.20.10.relays.test', 'A'),
    ]);
    assert.deepEqual(net.answer.map(rdata), ['"Whole TEST-NET-1 listed (192.0.2.7)"']);
    assert.equal(excl.status, 'NXDOMAIN');
    assert.equal(nx.status, 'NXDOMAIN');
    assert.ok(nx.flags.includes('aa'));
    assert.equal(rr(nx.authority[0]!).ttl, 300);
    assert.match(rr(nx.authority[0]!).data, /^ns1\.relays\.test\. hostmaster\.relays\.test\. 2026010101 /);
  });

  it('SOA and NS at the apex, glue for the in-zone name server', async () => {
    const [soa, ns, glue] = await Promise.all([dig('relays.test', 'SOA'), dig('relays.test', 'NS'), dig('ns1.relays.test', 'A')]);
    assert.deepEqual(soa.answer.map(rdata), ['ns1.relays.test. hostmaster.relays.test. 2026010101 3600 600 259200 300']);
    assert.deepEqual(ns.answer.map(rdata).sort(), ['ns.example.net.', 'ns1.relays.test.']);
    assert.deepEqual(glue.answer.map(rdata), ['127.0.0.1']);
  });

  it('ANY gets one small RRset (RFC 8482, no amplification)', async () => {
    const [listed, apex] = await Promise.all([dig('40.30.20.10.relays.test', 'ANY'), dig('relays.test', 'ANY')]);
    assert.deepEqual(listed.answer.map((l) => rr(l).type), ['A']);
    assert.deepEqual(apex.answer.map((l) => rr(l).type), ['SOA']);
  });

  it('RFC 5782 test points, IPv4 and IPv6 (DB-01)', async () => {
    const [l4, n4, l6, n6] = await Promise.all([
      dig('2.0.0.127.relays.test', 'A'), dig('1.0.0.127.relays.test', 'A'),
      dig(v6name('::ffff:7f00:2'), 'A'), dig(v6name('::ffff:7f00:1'), 'A'),
    ]);
    assert.deepEqual(l4.answer.map(rdata), ['127.0.0.2']);
    assert.equal(n4.status, 'NXDOMAIN');
    assert.deepEqual(l6.answer.map(rdata), ['127.0.0.2']);
    assert.equal(n6.status, 'NXDOMAIN');
  });

  it('IPv6 32-nibble names: listed, excluded, outside', async () => {
    const [listed, excluded, outside, upper] = await Promise.all([
      dig(v6name('2001:db8::1'), 'TXT'), dig(v6name('2001:db8::bad'), 'A'), dig(v6name('2001:db8:1::1'), 'A'),
      dig(v6name('2001:db8::abc').toUpperCase(), 'A'),
    ]);
    assert.deepEqual(listed.answer.map(rdata), ['"IPv6 2001:db8::1 listed"']);
    assert.equal(excluded.status, 'NXDOMAIN');
    assert.equal(outside.status, 'NXDOMAIN');
    assert.deepEqual(upper.answer.map(rdata), ['127.0.0.2']);
  });

  it('mixed case: same answer, question echoed exactly (DB-03)', async () => {
    const r = await dig('40.30.20.10.ReLaYs.TeSt', 'A');
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(r.question.map((l) => l.split(/\s+/).join(' ')), [';40.30.20.10.ReLaYs.TeSt. IN A']);
    assert.equal(rr(r.answer[0]!).owner, '40.30.20.10.ReLaYs.TeSt.');
    assert.doesNotMatch(r.raw, /mismatch/i);
  });

  it('empty non-terminals are NOERROR/NODATA, malformed names never listed (DB-02)', async () => {
    const ent = await dig('20.10.relays.test', 'A');
    assert.equal(ent.status, 'NOERROR');
    assert.equal(ent.answer.length, 0);
    assert.equal(ent.authority.length, 1);
    const bad = ['256.30.20.10', '040.30.20.10', '1.2.3.4.5', 'a.b.c.d', 'x-y.30.20.10', '\\000.30.20.10', '40\\.30.20.10',
      v6name('2001:db8::1').split('.').slice(1).join('.').replace(/\.relays\.test$/, '')];
    const rs = await Promise.all(bad.map((n) => dig(`${n}.relays.test`, 'A')));
    rs.forEach((r, i) => {
      assert.ok(r.status === 'NXDOMAIN' || r.status === 'NOERROR', `${bad[i]}: ${r.status}`);
      assert.equal(r.answer.length, 0, bad[i]);
    });
    assert.equal((await dig('example.org', 'A')).status, 'REFUSED');
  });

  it('+tcp answers the same', async () => {
    const r = await dig('+tcp', '40.30.20.10.relays.test', 'TXT');
    assert.deepEqual(r.answer.map(rdata), ['"Open relay, see http://relays.test/lookup?ip=10.20.30.40"']);
  });

  it('EDNS: OPT echoed with our size whatever the client offers', async () => {
    const [small, big, none] = await Promise.all([
      dig('+bufsize=512', '40.30.20.10.relays.test', 'A'), dig('+bufsize=65535', '40.30.20.10.relays.test', 'A'),
      dig('+noedns', '40.30.20.10.relays.test', 'A'),
    ]);
    assert.match(small.opt ?? '', /version: 0, flags:; udp: 1232/);
    assert.match(big.opt ?? '', /udp: 1232/);
    assert.equal(none.opt, null);
  });

  it('a long TXT sets TC over UDP and succeeds over TCP', async () => {
    const [tc, retried, viaTcp] = await Promise.all([
      dig('+noedns', '+ignore', '9.100.51.198.relays.test', 'TXT'),
      dig('+noedns', '9.100.51.198.relays.test', 'TXT'),
      dig('+tcp', '9.100.51.198.relays.test', 'TXT'),
    ]);
    assert.ok(tc.flags.includes('tc'), tc.flags.join(' '));
    assert.equal(tc.answer.length, 0);
    assert.match(retried.raw, /Truncated, retrying in TCP mode/);
    for (const r of [retried, viaTcp]) {
      const strings = [...rdata(r.answer[0]!).matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
      assert.equal(strings.join(''), LONG_REASON.replace('$', '198.51.100.9'));
      assert.ok(strings.every((s) => s.length <= 255));
    }
  });

  it('AXFR over TCP: SOA first and last, every record', async () => {
    const r = await dig('relays.test', 'AXFR');
    const lines = r.raw.split('\n').filter((l) => l !== '' && !l.startsWith(';')).map(rr);
    assert.equal(lines[0]!.type, 'SOA');
    assert.equal(lines.at(-1)!.type, 'SOA');
    assert.equal(lines.length, [...zone.records()].length + 1);
    const has = (owner: string, type: string, data: string): boolean =>
      lines.some((l) => l.owner === owner && l.type === type && l.data === data && l.ttl === 900);
    assert.ok(has('40.30.20.10.relays.test.', 'A', '127.0.0.2'));
    // 192.0.2.0/24 minus .1 is written as single names: a wildcard could not carry the exclusion
    assert.ok(!lines.some((l) => l.owner === '*.2.0.192.relays.test.'));
    assert.ok(has('7.2.0.192.relays.test.', 'TXT', '"Whole TEST-NET-1 listed (192.0.2.7)"'));
    assert.ok(has('*.1.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.relays.test.', 'TXT', '"IPv6 2001:db8:0:1::/64 listed"'));
    assert.match(r.raw, /XFR size: \d+ records/);
  });

  it('IXFR with the client SOA in the authority section (as BIND and dig send it): never FORMERR (field report L1/D1)', async () => {
    // An older serial: the whole zone, AXFR-style (RFC 1995 section 4).
    const old = await dig('relays.test', 'IXFR=2026010100');
    const lines = old.raw.split('\n').filter((l) => l !== '' && !l.startsWith(';')).map(rr);
    assert.doesNotMatch(old.raw, /FORMERR/);
    assert.equal(lines[0]!.type, 'SOA');
    assert.equal(lines.at(-1)!.type, 'SOA');
    assert.equal(lines.length, [...zone.records()].length + 1);
    // The current serial (and one "ahead" by RFC 1982): the SOA alone, the client is up to date.
    for (const serial of [2026010101, 2026010105]) {
      const cur = await dig('relays.test', `IXFR=${serial}`);
      const recs = cur.raw.split('\n').filter((l) => l !== '' && !l.startsWith(';')).map(rr);
      assert.deepEqual(recs.map((r) => r.type), ['SOA'], cur.raw);
      assert.match(recs[0]!.data, / 2026010101 /);
    }
    // Serial wrap-around: 4294967295 is "before" 2026010101 (RFC 1982), so the zone comes whole.
    const wrapped = await dig('relays.test', 'IXFR=4294967295');
    assert.ok(wrapped.raw.split('\n').filter((l) => / IN\s+A\s/.test(l)).length > 0);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Hostile packets (DB-04): FORMERR or silence, bounded, and the server keeps answering.
// ---------------------------------------------------------------------------------------------------------------

async function rawUdp(msg: Buffer, waitMs = 300): Promise<Buffer | null> {
  const s = createSocket('udp4');
  try {
    s.send(msg, server.port, '127.0.0.1');
    return await new Promise<Buffer | null>((resolve) => {
      const t = setTimeout(() => resolve(null), waitMs);
      s.once('message', (m) => { clearTimeout(t); resolve(m); });
    });
  } finally {
    s.close();
  }
}

const GOOD = dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: '40.30.20.10.relays.test', class: 'IN' }] });

function formerrOrSilence(reply: Buffer | null, what: string): void {
  if (reply === null) return;
  assert.ok(reply.length <= 12, `${what}: ${reply.length}-byte reply`);
  assert.equal(reply[3]! & 0x0f, 1, `${what}: rcode ${reply[3]! & 0x0f}`);
}

describe('hostile packets over UDP (DB-04)', () => {
  const cases: Array<[string, () => Buffer]> = [
    ['QDCOUNT 0', () => { const b = Buffer.from(GOOD); b.writeUInt16BE(0, 4); return b; }],
    ['QDCOUNT 2', () => { const b = Buffer.concat([GOOD, GOOD.subarray(12)]); b.writeUInt16BE(2, 4); return b; }],
    ['truncated header', () => GOOD.subarray(0, 7)],
    ['truncated question', () => GOOD.subarray(0, 25)],
    ['compression pointer loop in the QNAME', () => Buffer.concat([GOOD.subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])])],
    ['pointer loop in an additional record', () => {
      const b = Buffer.concat([GOOD, Buffer.from([0xc0, GOOD.length, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0])]);
      b.writeUInt16BE(1, 10);
      return b;
    }],
    ['label longer than 63 (0x40 type)', () => Buffer.concat([GOOD.subarray(0, 12), Buffer.from([0x41, 0x41, 0, 0, 1, 0, 1])])],
    ['ANCOUNT in a query', () => { const b = Buffer.from(GOOD); b.writeUInt16BE(1, 6); return b; }],
    ['a response (QR set)', () => { const b = Buffer.from(GOOD); b[2] = b[2]! | 0x80; return b; }],
    ['empty datagram', () => Buffer.alloc(0)],
  ];
  for (const [what, make] of cases) {
    it(`${what}: FORMERR or silence`, async () => {
      formerrOrSilence(await rawUdp(make()), what);
    });
  }

  it('EDNS size 65535 is capped at 1232', async () => {
    const q = dnsPacket.encode({
      type: 'query', id: 9, questions: [{ type: 'TXT', name: '9.100.51.198.relays.test', class: 'IN' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 65535, flags: 0, options: [] } as unknown as dnsPacket.Answer],
    });
    const r = await rawUdp(q);
    assert.ok(r !== null && r.length <= 1232);
  });

  it('garbage: 500 random datagrams, never an amplified reply', async () => {
    const s = createSocket('udp4');
    let bytesIn = 0;
    let bytesOut = 0;
    s.on('message', (m) => { bytesOut += m.length; });
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    for (let i = 0; i < 500; i++) {
      const g = randomBytes(1 + (i % 300));
      if (i % 2 === 0) g[2] = g[2]! & 0x07; // half of them look like queries (QR clear, opcode 0)
      bytesIn += g.length;
      s.send(g, server.port, '127.0.0.1');
    }
    await new Promise((r) => setTimeout(r, 300));
    s.close();
    assert.ok(bytesOut <= bytesIn, `out ${bytesOut} > in ${bytesIn}`);
  });

  it('still answers afterwards', async () => {
    const r = await dig('40.30.20.10.relays.test', 'A');
    assert.deepEqual(r.answer.map(rdata), ['127.0.0.2']);
  });
});
