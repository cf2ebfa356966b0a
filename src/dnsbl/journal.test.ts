import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { diffZones, ZoneJournal } from './journal.ts';
import { ListingStore } from './store.ts';
import { parseQuery, ixfrMessages } from './wire.ts';
import { buildZone, type Zone, type ZoneEntry, type ZoneRecord } from './zone.ts';

const zoneOf = (serial: number, entries: ZoneEntry[], ns = ['ns.relays.test']): Zone =>
  buildZone(entries, { apex: 'relays.test', ns, hosts: [{ name: 'ns', addresses: ['127.0.0.1'] }], soa: { serial } });

const key = (r: ZoneRecord): string => `${r.name} ${r.type} ${r.ttl} ${typeof r.data === 'string' ? r.data : JSON.stringify(r.data)}`;
const recordSet = (z: Zone): string[] => [...z.records()].filter((r) => r.type !== 'SOA').map(key).sort();

/** Applies a diff the way a secondary does: delete the removed records, add the added ones. */
function apply(base: string[], d: { removed: readonly ZoneRecord[]; added: readonly ZoneRecord[] }): string[] {
  const out = new Map<string, number>();
  for (const k of base) out.set(k, (out.get(k) ?? 0) + 1);
  for (const r of d.removed) {
    const n = out.get(key(r));
    assert.ok(n !== undefined, `removes a record the secondary does not have: ${key(r)}`);
    if (n === 1) out.delete(key(r)); else out.set(key(r), n - 1);
  }
  for (const r of d.added) {
    assert.ok(!out.has(key(r)), `adds a record the secondary already has: ${key(r)}`);
    out.set(key(r), 1);
  }
  return [...out.keys()].sort();
}

describe('diffZones', () => {
  it('a one-address change on a big zone is a handful of records', () => {
    const entries: ZoneEntry[] = [];
    for (let i = 0; i < 5000; i++) entries.push({ network: `10.${(i >> 8) & 255}.${i & 255}.7`, txt: 'Open relay $' });
    const a = zoneOf(1, entries);
    const b = zoneOf(2, [...entries, { network: '192.0.2.9', txt: 'Open relay $' }]);
    const d = diffZones(a, b);
    assert.deepEqual(d.removed, []);
    assert.deepEqual(d.added.map((r) => [r.name, r.type]), [['9.2.0.192', 'A'], ['9.2.0.192', 'TXT']]);
    assert.deepEqual(apply(recordSet(a), d), recordSet(b));
  });

  it('NS, glue, exclusions splitting a block, TXT and code changes, IPv6', () => {
    const a = zoneOf(1, [{ network: '192.0.2.0/24', txt: 'net $' }, { network: '2001:db8::/48', txt: 'v6 $' }]);
    const b = zoneOf(2, [{ network: '192.0.2.0/24', txt: 'net $' }, { network: '192.0.2.17', excluded: true }, { network: '2001:db8::/48', code: '127.0.0.3', txt: 'v6 $' }], ['ns.relays.test', 'ns2.example.org']);
    const d = diffZones(a, b);
    assert.ok(d.added.some((r) => r.type === 'NS' && r.data === 'ns2.example.org'));
    assert.ok(d.removed.some((r) => r.name === '*.2.0.192'), 'the /24 wildcard goes (its block is split)');
    assert.deepEqual(apply(recordSet(a), d), recordSet(b));
  });

  it('property: old + diff = new, for random listings and exclusions', () => {
    const entry = fc.record({
      network: fc.oneof(
        fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 }), fc.constantFrom(32, 30, 24)).map(([b, c, p]) => `198.51.${b}.${p === 24 ? 0 : c & (p === 30 ? 0xfc : 0xff)}/${p}`),
        fc.integer({ min: 0, max: 255 }).map((n) => `2001:db8:0:${n.toString(16)}::/64`),
      ),
      excluded: fc.boolean(),
      code: fc.constantFrom('127.0.0.2', '127.0.0.3'),
      txt: fc.constantFrom('a $', 'b $', null),
    });
    fc.assert(fc.property(fc.array(entry, { maxLength: 25 }), fc.array(entry, { maxLength: 25 }), (ea, eb) => {
      const a = zoneOf(1, ea.map((e) => (e.excluded ? { network: e.network, excluded: true } : e)));
      const b = zoneOf(2, eb.map((e) => (e.excluded ? { network: e.network, excluded: true } : e)));
      assert.deepEqual(apply(recordSet(a), diffZones(a, b)), recordSet(b));
    }), { numRuns: 200 });
  });
});

describe('ZoneJournal', () => {
  const z1 = zoneOf(10, [{ network: '192.0.2.1' }]);
  const z2 = zoneOf(11, [{ network: '192.0.2.1' }, { network: '192.0.2.2' }]);
  const z3 = zoneOf(12, [{ network: '192.0.2.2' }]);

  it('gives the chain from a known serial, [] when current, null when unknown, too old or broken', () => {
    const j = new ZoneJournal();
    j.record(z1, z2);
    j.record(z2, z3);
    assert.equal(j.since(10, 12)!.length, 2);
    assert.equal(j.since(11, 12)!.length, 1);
    assert.deepEqual(j.since(12, 12), []);
    assert.equal(j.since(9, 12), null, 'never served');
    assert.equal(j.since(10, 13), null, 'the chain does not reach the current serial');
    assert.equal(j.record(z3, z3), null, 'same serial: nothing recorded');
    // A gap (the zone moved while nobody recorded): the older entries are useless.
    j.record(zoneOf(20, []), zoneOf(21, [{ network: '192.0.2.3' }]));
    assert.equal(j.entries.length, 1);
    assert.equal(j.since(10, 21), null);
    assert.equal(j.since(20, 21)!.length, 1);
  });

  it('keeps at most maxEntries and maxBytes; a change bigger than maxBytes empties it', () => {
    const j = new ZoneJournal(null, { maxEntries: 2 });
    j.record(z1, z2);
    j.record(z2, z3);
    j.record(z3, zoneOf(13, []));
    assert.deepEqual(j.entries.map((d) => d.from.serial), [11, 12]);
    assert.equal(j.since(10, 13), null, 'fell out: the whole zone instead');
    const small = new ZoneJournal(null, { maxBytes: 10 });
    small.record(z1, z2);
    assert.equal(small.entries.length, 0);
  });

  it('survives a restart in the listing store, trimmed as in memory', () => {
    const store = ListingStore.open(':memory:');
    try {
      const j = new ZoneJournal(store, { maxEntries: 2 });
      j.record(z1, z2);
      j.record(z2, z3);
      j.record(z3, zoneOf(13, []));
      const again = new ZoneJournal(store, { maxEntries: 2 });
      assert.deepEqual(again.entries.map((d) => [d.from.serial, d.to.serial]), [[11, 12], [12, 13]]);
      assert.deepEqual(again.since(11, 13)!.map((d) => d.added.length + d.removed.length), j.since(11, 13)!.map((d) => d.added.length + d.removed.length));
    } finally {
      store.close();
    }
  });

  it('serial wrap-around (RFC 1982): a chain through 2^32-1 -> 0 -> 1 still answers', () => {
    const j = new ZoneJournal();
    const za = zoneOf(4294967294, []);
    const zb = zoneOf(4294967295, [{ network: '192.0.2.1' }]);
    const zc = zoneOf(0, [{ network: '192.0.2.1' }, { network: '192.0.2.2' }]);
    const zd = zoneOf(1, [{ network: '192.0.2.2' }]);
    j.record(za, zb);
    j.record(zb, zc);
    j.record(zc, zd);
    assert.deepEqual(j.since(4294967295, 1)!.map((d) => [d.from.serial, d.to.serial]), [[4294967295, 0], [0, 1]]);
    assert.equal(j.since(4294967294, 1)!.length, 3);
  });
});

describe('ixfrMessages (RFC 1995 section 4)', () => {
  it('current SOA, then per change: old SOA, deletions, new SOA, additions; then the current SOA', () => {
    const j = new ZoneJournal();
    const z1 = zoneOf(10, [{ network: '192.0.2.1', txt: 'one $' }]);
    const z2 = zoneOf(11, [{ network: '192.0.2.2', txt: 'two $' }]);
    j.record(z1, z2);
    const q = dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'IXFR', name: 'relays.test', class: 'IN' }],
      authorities: [{ type: 'SOA', name: 'relays.test', ttl: 0, data: { mname: 'x', rname: 'y', serial: 10, refresh: 1, retry: 1, expire: 1, minimum: 1 } }] });
    const p = parseQuery(q);
    assert.ok(p.kind === 'query');
    const msgs = [...ixfrMessages(q, p.query, z2, j.since(10, 11)!)];
    const answers = msgs.flatMap((m) => (dnsPacket.decode(m) as { answers?: { type: string; name: string; data: unknown }[] }).answers ?? []);
    const shape = answers.map((a) => (a.type === 'SOA' ? `SOA ${(a.data as { serial: number }).serial}` : `${a.type} ${a.name}`));
    assert.deepEqual(shape, [
      'SOA 11',
      'SOA 10', 'A 1.2.0.192.relays.test', 'TXT 1.2.0.192.relays.test',
      'SOA 11', 'A 2.2.0.192.relays.test', 'TXT 2.2.0.192.relays.test',
      'SOA 11',
    ]);
    // Current already: one SOA.
    const cur = [...ixfrMessages(q, p.query, z2, [])].flatMap((m) => (dnsPacket.decode(m) as { answers?: unknown[] }).answers ?? []);
    assert.equal(cur.length, 1);
  });
});
