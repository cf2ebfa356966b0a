/**
 * Addresses and networks as the ORDB stores and serves them: strict parsing of user input into one canonical
 * text form ("192.0.2.1", "192.0.2.0/24", "2001:db8::/32"), and the numeric forms the zone index uses
 * (IPv4 as an unsigned 32-bit number, IPv6 as a bigint or four 32-bit words).
 */
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

export interface Network {
  readonly family: Family;
  /** Canonical text: the address alone for a host (/32, /128), else "address/prefix" (RFC 5952 for IPv6). */
  readonly text: string;
  readonly prefix: number;
  /** First address: a number for IPv4 (0..2^32-1), a bigint for IPv6. */
  readonly first: number | bigint;
  /** Last address, same type as `first`. */
  readonly last: number | bigint;
}

export interface NetworkError {
  readonly error: string;
}

const MAX_INPUT = 64;

/** IPv4 dotted quad (strict: four decimal parts 0-255, no leading zeros) to a number, or -1. */
export function ipv4ToNumber(s: string): number {
  const len = s.length;
  if (len < 7 || len > 15) return -1;
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i <= len; i++) {
    const c = i < len ? s.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || part > 255) return -1;
      n = n * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  return dots === 4 ? n : -1;
}

export function numberToIpv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function ipv6ToBigint(a: ipaddr.IPv6): bigint {
  let v = 0n;
  for (const part of a.parts) v = (v << 16n) | BigInt(part);
  return v;
}

/** IPv6 words (most significant first) as RFC 5952 text: lower case, longest run of two or more zero groups as "::" (first on a tie). */
export function formatIpv6Words(w0: number, w1: number, w2: number, w3: number): string {
  const g = [w0 >>> 16, w0 & 0xffff, w1 >>> 16, w1 & 0xffff, w2 >>> 16, w2 & 0xffff, w3 >>> 16, w3 & 0xffff];
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  if (bestStart < 0) return g.map((x) => x!.toString(16)).join(':');
  const head = g.slice(0, bestStart).map((x) => x.toString(16)).join(':');
  const tail = g.slice(bestStart + bestLen).map((x) => x.toString(16)).join(':');
  return `${head}::${tail}`;
}

export function bigintToIpv6(v: bigint): string {
  const w = (k: number): number => Number((v >> BigInt(96 - 32 * k)) & 0xffffffffn);
  return formatIpv6Words(w(0), w(1), w(2), w(3));
}

const MASK128 = (1n << 128n) - 1n;

/**
 * Parses "a.b.c.d", "a.b.c.d/n", an IPv6 address or "ipv6/n". Host bits must be zero (like rbldnsd without -e):
 * "192.0.2.1/24" is refused as a probable typo rather than silently widened.
 */
export function parseNetwork(input: string): Network | NetworkError {
  if (typeof input !== 'string' || input.length === 0 || input.length > MAX_INPUT) return { error: 'not an address or network' };
  const s = input.trim();
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  let prefix: number | null = null;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return { error: `bad prefix length in "${s}"` };
    prefix = Number(p);
  }
  if (addr.includes('.') && !addr.includes(':')) {
    const n = ipv4ToNumber(addr);
    if (n < 0) return { error: `bad IPv4 address "${addr}"` };
    const len = prefix ?? 32;
    if (len > 32) return { error: `prefix /${len} too long for IPv4` };
    const size = 2 ** (32 - len);
    if (n % size !== 0) return { error: `"${s}" has host bits set (network is ${numberToIpv4(n - (n % size))}/${len})` };
    return { family: 4, prefix: len, first: n, last: n + size - 1, text: len === 32 ? addr : `${addr}/${len}` };
  }
  if (addr.includes(':') && !addr.includes('%') && ipaddr.IPv6.isValid(addr)) {
    const a = ipaddr.IPv6.parse(addr);
    const v = ipv6ToBigint(a);
    const len = prefix ?? 128;
    if (len > 128) return { error: `prefix /${len} too long for IPv6` };
    const hostMask = (1n << BigInt(128 - len)) - 1n;
    if ((v & hostMask) !== 0n) return { error: `"${s}" has host bits set (network is ${bigintToIpv6(v & ~hostMask & MASK128)}/${len})` };
    const text = bigintToIpv6(v);
    return { family: 6, prefix: len, first: v, last: v | hostMask, text: len === 128 ? text : `${text}/${len}` };
  }
  return { error: `not an address or network: "${s}"` };
}

export function isNetworkError(x: Network | NetworkError): x is NetworkError {
  return (x as NetworkError).error !== undefined;
}

/** Parses a single address (no prefix) into its canonical host network, or null. */
export function parseAddress(input: string): Network | null {
  if (typeof input !== 'string' || input.includes('/')) return null;
  const n = parseNetwork(input);
  return isNetworkError(n) ? null : n;
}

/** Every network (canonical text) that contains the address, from /0 to the host itself. */
export function coveringNetworks(address: Network): string[] {
  const out: string[] = [];
  if (address.family === 4) {
    const ip = address.first as number;
    for (let len = 0; len <= 32; len++) {
      const size = 2 ** (32 - len);
      const net = ip - (ip % size);
      out.push(len === 32 ? numberToIpv4(net) : `${numberToIpv4(net)}/${len}`);
    }
  } else {
    const ip = address.first as bigint;
    for (let len = 0; len <= 128; len++) {
      const hostMask = (1n << BigInt(128 - len)) - 1n;
      const net = bigintToIpv6(ip & ~hostMask & MASK128);
      out.push(len === 128 ? net : `${net}/${len}`);
    }
  }
  return out;
}

/** The reversed-octet or nibble name of an address below `zone` (RFC 5782 sections 2.1 and 2.4). */
export function dnsblName(address: string, zone: string): string | null {
  const n = parseAddress(address);
  if (n === null) return null;
  const z = zone.endsWith('.') ? zone.slice(0, -1) : zone;
  if (n.family === 4) {
    const ip = n.first as number;
    return `${ip & 255}.${(ip >>> 8) & 255}.${(ip >>> 16) & 255}.${ip >>> 24}.${z}`;
  }
  const hex = (n.first as bigint).toString(16).padStart(32, '0');
  return `${[...hex].reverse().join('.')}.${z}`;
}
