/**
 * Data for bench/dnsbl.ts: a seeded, deterministic zone of N entries (streamed, never held as an array, so the
 * process that builds the zone pays only for the builder), the zone options both servers use, and the dnsperf
 * query file.
 *
 * Entries (N = 1,000,000 by default): 98.5 % random IPv4 singles over 1.0.0.0-223.255.255.255, 0.8 % IPv4
 * CIDRs /20../30, 0.2 % IPv4 exclusions /24../32, 0.5 % IPv6 (hosts and /48../64 networks); four A codes and
 * five TXT templates (one without "$", one null). Generating the same (seed, N) twice yields the same entries.
 */
import type { ZoneEntry, ZoneOptions } from '../src/dnsbl/index.ts';
import type { Zone } from '../src/dnsbl/index.ts';
import { bigintToIpv6, dnsblName, numberToIpv4 } from '../src/dnsbl/network.ts';

export const APEX = 'relays.bench';

export const ZONE_OPTIONS: ZoneOptions = {
  apex: APEX,
  ns: ['ns.relays.bench'],
  soa: { serial: 2026010101, rname: 'hostmaster.relays.bench', refresh: 3600, retry: 600, expire: 86400, minimum: 300 },
  ttl: 2100,
  apexTtl: 3600,
};

/** Deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CODES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.10'] as const;
const TEMPLATES = [
  'Open relay, see http://relays.bench/lookup?ip=$',
  'Open relay confirmed by tester run 42 ($)',
  'Open proxy $ (code 3)',
  'Listed; see http://relays.bench/faq',
  null,
] as const;

/** A random unicast IPv4 address outside 127/8 (1.0.0.0 .. 223.255.255.255). */
function randomV4(int: (n: number) => number): number {
  for (;;) {
    const a = (1 + int(223)) * 0x1000000 + int(0x1000000);
    if (a >>> 24 !== 127) return a;
  }
}

const V6_BASES = [0x2a010db8_00000000_00000000_00000000n, 0x2a020c7f_12340000_00000000_00000000n, 0x2001_0db8_0000_0000_0000_0000_0000_0000n];

/** The entries of the bench zone, streamed. */
export function* benchEntries(seed: number, count: number): Generator<ZoneEntry> {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const cidrs = Math.round(count * 0.008);
  const excl = Math.round(count * 0.002);
  const v6 = Math.round(count * 0.005);
  const singles = count - cidrs - excl - v6;
  const value = (): { code: string; txt: string | null } => ({ code: CODES[int(CODES.length)]!, txt: TEMPLATES[int(TEMPLATES.length)]! });
  for (let i = 0; i < singles; i++) yield { network: numberToIpv4(randomV4(int)), ...value() };
  for (let i = 0; i < cidrs; i++) {
    const p = 20 + int(11);
    const size = 2 ** (32 - p);
    const a = randomV4(int);
    yield { network: `${numberToIpv4(a - (a % size))}/${p}`, ...value() };
  }
  for (let i = 0; i < excl; i++) {
    const p = 24 + int(9);
    const size = 2 ** (32 - p);
    const a = randomV4(int);
    yield { network: p === 32 ? numberToIpv4(a) : `${numberToIpv4(a - (a % size))}/${p}`, excluded: true };
  }
  for (let i = 0; i < v6; i++) {
    const base = V6_BASES[int(V6_BASES.length)]! + (BigInt(int(1 << 16)) << 64n);
    if (int(4) === 0) {
      const p = [48, 56, 60, 64][int(4)]!;
      const host = (1n << BigInt(128 - p)) - 1n;
      yield { network: `${bigintToIpv6((base + (BigInt(int(1 << 30)) << 70n)) & ~host)}/${p}`, ...value() };
    } else {
      yield { network: bigintToIpv6(base + BigInt(int(1 << 30))), ...value() };
    }
  }
}

/**
 * dnsperf query lines ("NAME TYPE"), from the built zone so "listed" means listed after exclusions:
 * 30 % listed IPv4 singles, 15 % addresses inside listed IPv4 ranges, 5 % the test points 127.0.0.2 / .1,
 * 45 % random IPv4 addresses (almost all unlisted), 5 % IPv6 (half listed). A quarter TXT, the rest A.
 */
export function benchQueries(zone: Zone, seed: number, lines: number): string[] {
  const rnd = prng(seed ^ 0x5eed);
  const int = (n: number): number => Math.floor(rnd() * n);
  // Reservoir samples of the listed intervals by kind.
  const want = Math.max(1, Math.ceil(lines / 2));
  const singles: number[] = [];
  const ranges: Array<[number, number]> = [];
  const v6: bigint[] = [];
  let seenS = 0;
  let seenR = 0;
  let seen6 = 0;
  for (const iv of zone.intervals()) {
    if (iv.family === 4) {
      const f = iv.first as number;
      const l = iv.last as number;
      if (f === l) {
        if (singles.length < want) singles.push(f);
        else { const j = int(++seenS); if (j < want) singles[j] = f; }
        seenS++;
      } else {
        if (ranges.length < want) ranges.push([f, l]);
        else { const j = int(++seenR); if (j < want) ranges[j] = [f, l]; }
        seenR++;
      }
    } else if (((iv.first as bigint) >> 32n) !== 0xffffn) {
      const a = (iv.first as bigint) + BigInt(int(Number((iv.last as bigint) - (iv.first as bigint) > 1000n ? 1000n : (iv.last as bigint) - (iv.first as bigint) + 1n)));
      if (v6.length < want) v6.push(a);
      else { const j = int(++seen6); if (j < want) v6[j] = a; }
      seen6++;
    }
  }
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const r = rnd();
    let addr: string;
    if (r < 0.30 && singles.length > 0) addr = numberToIpv4(singles[int(singles.length)]!);
    else if (r < 0.45 && ranges.length > 0) {
      const [f, l] = ranges[int(ranges.length)]!;
      addr = numberToIpv4(f + int(l - f + 1));
    } else if (r < 0.50) addr = int(2) === 0 ? '127.0.0.2' : '127.0.0.1';
    else if (r < 0.95) addr = numberToIpv4(randomV4(int));
    else if (int(2) === 0 && v6.length > 0) addr = bigintToIpv6(v6[int(v6.length)]!);
    else addr = bigintToIpv6(V6_BASES[int(V6_BASES.length)]! + BigInt(int(2 ** 31)) * 7919n);
    out.push(`${dnsblName(addr, APEX)} ${int(4) === 0 ? 'TXT' : 'A'}`);
  }
  return out;
}
