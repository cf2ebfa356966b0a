import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { bindTxt, bindZone, cidrBlocks4, cidrBlocks6, rbldnsdIp4set, rbldnsdIp6trie, toText, writeRbldnsdFiles } from './export.ts';
import { buildZone, type ZoneEntry } from './zone.ts';
import { numberToIpv4 } from './network.ts';

const zone = buildZone(
  [
    { network: '10.0.0.0/30', code: '127.0.0.4', txt: 'net $ costs $$5' },
    { network: '10.0.0.2', excluded: true },
    { network: '10.0.1.0/24', txt: '=starts with equals' },
    { network: '10.0.2.1', txt: null },
    { network: '2001:db8::/126', txt: 'six $' },
  ],
  { apex: 'relays.test', ns: ['ns.example.net'], soa: { serial: 5 } },
);

/** Parses our rbldnsd output back (only the subset we write) into zone entries. */
function parseRbldnsd(text: string): ZoneEntry[] {
  const out: ZoneEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.startsWith('$')) continue;
    const m = /^(\S+) :([0-9.]+):(.*)$/.exec(line);
    assert.ok(m, line);
    const t = m[3]!;
    out.push({ network: m[1]!, code: m[2]!, txt: t === '' ? null : t.startsWith('==') ? t.slice(1) : t });
  }
  return out;
}

describe('CIDR decomposition', () => {
  it('splits ranges into the fewest aligned blocks', () => {
    assert.deepEqual([...cidrBlocks4(0x0a000000, 0x0a0000ff)].map(([n, p]) => `${numberToIpv4(n)}/${p}`), ['10.0.0.0/24']);
    assert.deepEqual([...cidrBlocks4(0x0a000001, 0x0a000006)].map(([n, p]) => `${numberToIpv4(n)}/${p}`),
      ['10.0.0.1/32', '10.0.0.2/31', '10.0.0.4/31', '10.0.0.6/32']);
    assert.deepEqual([...cidrBlocks4(0, 0xffffffff)], [[0, 0]]);
    assert.deepEqual([...cidrBlocks6(0n, (1n << 128n) - 1n)], [[0n, 0]]);
  });

  it('covers exactly the range (property)', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.bigInt({ min: 0n, max: 1n << 20n }), (a, len) => {
      const b = a + len > (1n << 128n) - 1n ? (1n << 128n) - 1n : a + len;
      let next = a;
      for (const [net, p] of cidrBlocks6(a, b)) {
        assert.equal(net, next);
        assert.equal(net & ((1n << BigInt(128 - p)) - 1n), 0n);
        next = net + (1n << BigInt(128 - p));
      }
      assert.equal(next, b + 1n);
    }), { numRuns: 300 });
  });
});

describe('rbldnsd export', () => {
  it('writes flattened entries with their values and the SOA/NS specials', () => {
    const text = toText(rbldnsdIp4set(zone));
    assert.match(text, /^\$SOA 3600 ns\.example\.net\. hostmaster\.relays\.test\. 5 3600 600 259200 300$/m);
    assert.match(text, /^\$NS 3600 ns\.example\.net\.$/m);
    assert.match(text, /^\$TTL 2100$/m);
    const body = text.split('\n').filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('$'));
    assert.deepEqual(body, [
      '10.0.0.0/31 :127.0.0.4:net $ costs $$5',
      '10.0.0.3 :127.0.0.4:net $ costs $$5',
      '10.0.1.0/24 :127.0.0.2:==starts with equals',
      '10.0.2.1 :127.0.0.2:',
      '127.0.0.2 :127.0.0.2:RFC 5782 test point: $ is always listed',
    ]);
    const six = toText(rbldnsdIp6trie(zone)).split('\n').filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('$'));
    assert.deepEqual(six, ['::ffff:7f00:2/128 :127.0.0.2:RFC 5782 test point: $ is always listed', '2001:db8::/126 :127.0.0.2:six $']);
  });

  it('round-trips: the exported entries build a zone with the same answers (property)', () => {
    const entry = fc.record({
      network: fc.tuple(fc.integer({ min: 0, max: 511 }), fc.integer({ min: 23, max: 32 })).map(([off, p]) => {
        const size = 2 ** (32 - p);
        return `${numberToIpv4(0xc0000000 + Math.floor(off / size) * size)}/${p}`;
      }),
      excluded: fc.boolean(),
      code: fc.constantFrom('127.0.0.2', '127.0.0.3'),
      txt: fc.constantFrom('a $', null, '=b $$ $'),
    });
    fc.assert(fc.property(fc.array(entry, { maxLength: 15 }), (entries) => {
      const z1 = buildZone(entries, { apex: 'relays.test' });
      const z2 = buildZone([...parseRbldnsd(toText(rbldnsdIp4set(z1))), ...parseRbldnsd(toText(rbldnsdIp6trie(z1)))], { apex: 'relays.test' });
      for (let ip = 0xc0000000 - 2; ip < 0xc0000000 + 514; ip++) {
        assert.deepEqual(z2.lookupAddress(numberToIpv4(ip)), z1.lookupAddress(numberToIpv4(ip)));
      }
    }), { numRuns: 50 });
  });

  it('writes the files atomically and returns the rbldnsd arguments', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dnsbl-export-'));
    try {
      const files = await writeRbldnsdFiles(zone, dir);
      assert.deepEqual(files.args, ['relays.test:ip4set:relays.test.ip4set', 'relays.test:ip6trie:relays.test.ip6trie']);
      assert.equal(readFileSync(files.ip4set, 'utf8'), toText(rbldnsdIp4set(zone)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('BIND export', () => {
  it('writes the apex records, names and wildcards with quoted TXT', () => {
    const lines = [...bindZone(zone)];
    assert.equal(lines[1], '$ORIGIN relays.test.');
    assert.equal(lines[2], '@\t3600\tIN\tSOA\tns.example.net. hostmaster.relays.test. 5 3600 600 259200 300');
    assert.equal(lines[3], '@\t3600\tIN\tNS\tns.example.net.');
    assert.ok(lines.includes('0.0.0.10\t2100\tIN\tA\t127.0.0.4'));
    assert.ok(lines.includes('0.0.0.10\t2100\tIN\tTXT\t"net 10.0.0.0 costs $5"'));
    assert.ok(!lines.some((l) => l.startsWith('2.0.0.10\t')));
    assert.ok(lines.includes('*.1.0.10\t2100\tIN\tTXT\t"=starts with equals"'));
    assert.ok(lines.includes(`3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2\t2100\tIN\tA\t127.0.0.2`));
  });

  it('escapes TXT and splits it at 255 bytes', () => {
    assert.equal(bindTxt('a "b" \\c'), '"a \\"b\\" \\\\c"');
    assert.equal(bindTxt('é'), '"\\195\\169"');
    assert.equal(bindTxt(''), '""');
    const long = bindTxt('x'.repeat(300));
    assert.equal(long, `"${'x'.repeat(255)}" "${'x'.repeat(45)}"`);
  });
});
