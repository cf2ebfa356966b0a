/**
 * The relayguard side of bench/dnsbl.ts, run as its own process so its memory is its own:
 *
 *   node bench/dnsbl-server.ts SEED ENTRIES [THREADS]
 *
 * builds the bench zone from the seeded generator (streamed into ZoneBuilder, no SQLite), starts a DnsblServer
 * on 127.0.0.1 with an ephemeral port (THREADS > 1: that many UDP threads sharing the port and the zone) and
 * prints one JSON line {port, buildMs, zone, mem}. Then every line "mem" on stdin prints {mem} again;
 * stdin closing stops the server.
 */
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { ZoneBuilder } from '../src/dnsbl/zone.ts';
import { DnsblServer } from '../src/dnsbl/server.ts';
import { benchEntries, ZONE_OPTIONS } from './dnsbl-data.ts';

export interface ServerMem {
  rssKb: number;
  hwmKb: number;
  /** VmRSS split: anonymous memory (heaps, the zone) and file pages (mostly Node's own binary, shared). */
  rssAnonKb: number;
  rssFileKb: number;
  /** Committed bytes of V8's young generation (main thread). */
  newSpace: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** UDP queries answered so far by each thread (main thread first). */
  udpByThread: number[];
}

function statusKb(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync('/proc/self/status', 'latin1'));
  return m ? Number(m[1]) : 0;
}

function mem(): ServerMem {
  const m = process.memoryUsage();
  return {
    rssKb: statusKb('VmRSS'), hwmKb: statusKb('VmHWM'), rssAnonKb: statusKb('RssAnon'), rssFileKb: statusKb('RssFile'),
    newSpace: getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')?.physical_space_size ?? 0,
    heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers,
    udpByThread: server?.stats.udpQueriesByThread ?? [],
  };
}

const [seedArg, entriesArg, threadsArg] = process.argv.slice(2);
const seed = Number(seedArg ?? 1);
const entries = Number(entriesArg ?? 1_000_000);
const threads = Number(threadsArg ?? 1);

const t0 = performance.now();
const builder = new ZoneBuilder(ZONE_OPTIONS);
for (const e of benchEntries(seed, entries)) builder.add(e);
const zone = builder.build();
const buildMs = performance.now() - t0;

let server: DnsblServer | null = null;
server = new DnsblServer({ zone, port: 0, udpThreads: threads });
await server.start();
process.stdout.write(`${JSON.stringify({ pid: process.pid, port: server.port, buildMs, threads, zone: zone.stats, mem: mem() })}\n`);

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'mem') process.stdout.write(`${JSON.stringify({ mem: mem() })}\n`);
});
rl.on('close', () => {
  void server!.stop().then(() => process.exit(0));
});
