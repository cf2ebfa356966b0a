/**
 * `npm run bench:transfer` (node bench/transfer.ts): a one-address change of a big ORDB zone reaching real
 * secondaries, by IXFR (the journal) versus by AXFR (the whole zone), on BIND 9, NSD and Knot from Debian, each
 * started on loopback with its own configuration (src/testing/dns-secondary.ts).
 *
 * For each secondary: the primary (DnsblServer with a ZoneJournal over a ListingStore of N listings) serves the zone;
 * the secondary loads it by AXFR (time to load measured); then one address is added, the primary NOTIFYs, and the
 * clock runs until the secondary answers for it (time to converge); the bytes each transfer put on the wire are
 * summed from the same encoder the server streams with (axfrMessages / ixfrMessages, plus the 2-byte TCP length
 * of each message). The same change is then measured as the secondary would get it without a journal (AXFR).
 *
 * Listings are every other address of 10.0.0.0/8 (no two merge into a wildcard block), so the zone holds N names.
 * Options: --entries=N (1,000,000; --quick: 100,000), env BENCH_ENTRIES, BENCH_QUICK=1; --only=bind,nsd,knot.
 * Everything runs on 127.0.0.1.
 */
import dnsPacket from 'dns-packet';
import { MemoryLogger } from '../src/core/log.ts';
import { DnsblServer, ListingStore, ZoneJournal, zoneFromStore, type Zone } from '../src/dnsbl/index.ts';
import { axfrMessages, ixfrMessages, parseQuery } from '../src/dnsbl/wire.ts';
import { freePort } from '../src/testing/ports.ts';
import { startSecondary, type SecondaryKind } from '../src/testing/dns-secondary.ts';

const ZONE = 'relays.bench';

function option(name: string, dflt: string): string {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  return arg ? arg.slice(name.length + 3) : process.env[`BENCH_${name.toUpperCase()}`] ?? dflt;
}

const quick = process.argv.includes('--quick') || process.env['BENCH_QUICK'] === '1';
const entries = Number(option('entries', quick ? '100000' : '1000000'));
const only = option('only', 'bind,nsd,knot').split(',') as SecondaryKind[];

function query(type: 'AXFR' | 'IXFR', serial?: number): Buffer {
  return dnsPacket.encode({
    type: 'query', id: 1, questions: [{ type, name: ZONE, class: 'IN' }],
    ...(serial !== undefined ? { authorities: [{ type: 'SOA', name: ZONE, ttl: 0, data: { mname: 'a', rname: 'b', serial, refresh: 1, retry: 1, expire: 1, minimum: 1 } }] } : {}),
  });
}

/** Bytes on the wire of a transfer as the server streams it (messages + their TCP length prefixes). */
function wireBytes(messages: Iterable<Buffer>): { bytes: number; messages: number } {
  let bytes = 0;
  let n = 0;
  for (const m of messages) { bytes += m.length + 2; n++; }
  return { bytes, messages: n };
}

async function waitFor(what: string, fn: () => Promise<boolean>, ms: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await fn()) return performance.now() - t0;
    if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const mb = (b: number): string => `${(b / 1048576).toFixed(2)} MiB`;

async function main(): Promise<void> {
  console.log(`bench:transfer: ${entries.toLocaleString('en')} listings, one address added; secondaries: ${only.join(', ')}`);
  const t0 = performance.now();
  const store = ListingStore.open(':memory:');
  const batch: { network: string; reason: string }[] = [];
  for (let i = 0; i < entries; i++) {
    // Every other address: neighbours with the same answer would merge into wildcard blocks and shrink the zone.
    const a = 2 * i;
    batch.push({ network: `10.${(a >> 16) & 255}.${(a >> 8) & 255}.${a & 255}`, reason: 'open relay' });
    if (batch.length === 50_000) { store.addMany(batch); batch.length = 0; }
  }
  if (batch.length > 0) store.addMany(batch);
  const opts = { apex: ZONE, ttl: 2100, evidenceUrl: 'http://ordb.bench/lookup?ip=$', ns: ['ns.relays.bench'], hosts: [{ name: 'ns', addresses: ['127.0.0.1'] }] };
  let zone: Zone = zoneFromStore(store, opts);
  console.log(`  store + zone built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const rows: string[] = [];
  let n = 0;
  for (const kind of only) {
    const journal = new ZoneJournal(null);
    const secPort = await freePort();
    const server = new DnsblServer({ zone, port: 0, axfrAllow: ['127.0.0.1'], journal, logger: new MemoryLogger(), notify: [{ address: '127.0.0.1', port: secPort }], notifyTimeoutMs: 1000 });
    await server.start();
    const sec = await startSecondary({ kind, zone: ZONE, primary: { address: '127.0.0.1', port: server.port }, port: secPort });
    try {
      const load = await waitFor(`${kind} to load the zone`, async () => (await sec.serial()) === zone.serial, 600_000);
      const from = zone.serial;
      const ip = `192.0.2.${++n}`;
      store.add({ network: ip, reason: 'open relay' });
      const rebuildStart = performance.now();
      const next = zoneFromStore(store, opts);
      journal.record(zone, next);
      const rebuildMs = performance.now() - rebuildStart;
      const name = `${ip.split('.').reverse().join('.')}.${ZONE}`;
      const changeAt = performance.now();
      server.setZone(next);
      zone = next;
      await waitFor(`${kind} to serve ${ip}`, async () => (await sec.dig(name, 'A'))[0] === '127.0.0.2', 600_000);
      const converge = performance.now() - changeAt;
      const q = query('IXFR', from);
      const p = parseQuery(q);
      if (p.kind !== 'query') throw new Error('bad query');
      const ixfr = wireBytes(ixfrMessages(q, p.query, next, journal.since(from, next.serial)!));
      const a = query('AXFR');
      const pa = parseQuery(a);
      if (pa.kind !== 'query') throw new Error('bad query');
      const axfr = wireBytes(axfrMessages(a, pa.query, next));
      const kinds = (server as unknown as { stats: { transfers: number } }).stats.transfers;
      rows.push(`| ${kind} | ${(load / 1000).toFixed(1)} s | ${converge.toFixed(0)} ms | ${ixfr.bytes.toLocaleString('en')} B (${ixfr.messages} msg) | ${mb(axfr.bytes)} (${axfr.messages} msg) | ${Math.round(axfr.bytes / ixfr.bytes).toLocaleString('en')}x | ${rebuildMs.toFixed(0)} ms | ${kinds} |`);
    } finally {
      await sec.stop();
      await server.stop();
    }
  }
  store.close();
  console.log('');
  console.log('| secondary | initial AXFR load | converge after 1 change (NOTIFY -> answers) | IXFR bytes | AXFR bytes of the same zone | AXFR/IXFR | primary rebuild + diff | transfers served |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
