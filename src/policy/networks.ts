/**
 * CIDR lists (trusted networks, trusted proxies, relay-rule networks) and fast membership tests.
 *
 * An IPv4-mapped IPv6 address (::ffff:1.2.3.4, as a dual-stack socket reports an IPv4 client) is treated exactly
 * as the IPv4 address: it matches 1.2.3.0/24, and it does not match IPv6 ranges such as ::/0. A CIDR written in
 * mapped form (::ffff:10.0.0.0/104) is converted to its IPv4 form (10.0.0.0/8).
 * Addresses are parsed strictly: IPv4 only as four decimal octets without leading zeros ("127.1", "0x7f.0.0.1"
 * and "010.0.0.1" are not addresses here), so no lenient spelling can slip into a trusted range.
 */
import ipaddr from 'ipaddr.js';
import { canonicalIp } from '../core/canonical.ts';
import { RelayguardError } from '../core/errors.ts';

export interface Cidr {
  readonly family: 4 | 6;
  /** The network address in canonical text form (host bits cleared). */
  readonly address: string;
  readonly prefix: number;
  /** "address/prefix" in canonical form, e.g. "10.0.0.0/8", "2001:db8::/32". */
  readonly cidr: string;
}

/** A parsed IP address: IPv4 as one unsigned 32-bit number, IPv6 as four. IPv4-mapped IPv6 comes back as IPv4. */
export type ParsedIp =
  | { readonly family: 4; readonly value: number }
  | { readonly family: 6; readonly words: readonly [number, number, number, number] };

/** Strict dotted-quad parse; returns the address as an unsigned 32-bit number, or -1. */
function parseIpv4(s: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // virtual trailing "."
    if (c >= 48 && c <= 57) {
      if (digits === 1 && octet === 0) return -1; // leading zero
      octet = octet * 10 + (c - 48);
      digits++;
      if (digits > 3 || octet > 255) return -1;
    } else if (c === 46) {
      if (digits === 0) return -1;
      value = value * 256 + octet;
      parts++;
      octet = 0;
      digits = 0;
    } else {
      return -1;
    }
  }
  return parts === 4 ? value >>> 0 : -1;
}

function bytesToWords(b: readonly number[]): [number, number, number, number] {
  const w = (i: number): number => ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
  return [w(0), w(4), w(8), w(12)];
}

/**
 * Parses an IP address strictly. IPv6 zone ids ("fe80::1%eth0") are ignored. Returns null for anything that is
 * not an address.
 */
export function parseIp(input: string): ParsedIp | null {
  if (typeof input !== 'string' || input.length === 0 || input.length > 64) return null;
  const v4 = parseIpv4(input);
  if (v4 >= 0) return { family: 4, value: v4 };
  if (!input.includes(':')) return null;
  let s = input;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (s.startsWith('[') || s.length === 0) return null;
  if (s.includes('.')) {
    // An embedded IPv4 tail must itself be strict (ipaddr.js would accept hex and octal octets there).
    if (parseIpv4(s.slice(s.lastIndexOf(':') + 1)) < 0) return null;
  }
  if (!ipaddr.IPv6.isValid(s)) return null;
  const addr = ipaddr.IPv6.parse(s);
  if (addr.isIPv4MappedAddress()) {
    const b = addr.toIPv4Address().toByteArray();
    return { family: 4, value: ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0 };
  }
  return { family: 6, words: bytesToWords(addr.toByteArray()) };
}

/** The canonical text form of an address ("::ffff:1.2.3.4" -> "1.2.3.4", "2001:DB8::1" -> "2001:db8::1"), or null. */
export function normalizeIp(input: string): string | null {
  return canonicalIp(input);
}

function v4ToString(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function wordsToV6String(w: readonly number[]): string {
  const bytes: number[] = [];
  for (const x of w) bytes.push(x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255);
  return ipaddr.fromByteArray(bytes).toString();
}

function maskWord(prefix: number, word: number): number {
  const bits = Math.max(0, Math.min(32, prefix - word * 32));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * Parses "address/prefix" or a bare address (a host route, /32 or /128).
 * With `strict` (the default) a CIDR whose host bits are set ("10.0.0.1/8") is refused, since it is ambiguous;
 * otherwise the host bits are cleared. Throws RelayguardError ERR_NETWORK_INVALID.
 */
export function parseCidr(input: string, options: { strict?: boolean } = {}): Cidr {
  const strict = options.strict ?? true;
  const bad = (why: string): never => {
    throw new RelayguardError('ERR_NETWORK_INVALID', `Invalid network "${String(input)}": ${why}`);
  };
  if (typeof input !== 'string') return bad('expected a string');
  const slash = input.indexOf('/');
  const addrText = slash < 0 ? input : input.slice(0, slash);
  if (addrText.includes('%')) return bad('zone ids are not allowed in networks');
  const ip = parseIp(addrText);
  if (ip === null) return bad('not an IP address');
  const mappedIn = ip.family === 4 && addrText.includes(':');
  const maxPrefix = ip.family === 4 ? 32 : 128;
  let prefix: number;
  if (slash < 0) {
    prefix = maxPrefix;
  } else {
    const p = input.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p)) return bad('the prefix length must be a decimal number');
    prefix = Number(p);
    if (mappedIn) {
      if (prefix < 96 || prefix > 128) return bad('an IPv4-mapped network needs a prefix length from 96 to 128');
      prefix -= 96;
    }
    if (prefix > maxPrefix) return bad(`the prefix length must be at most ${maxPrefix}`);
  }
  if (ip.family === 4) {
    const mask = maskWord(prefix, 0);
    const net = (ip.value & mask) >>> 0;
    if (strict && net !== ip.value) {
      return bad(`host bits are set; did you mean ${v4ToString(net)}/${prefix} or ${v4ToString(ip.value)}/32?`);
    }
    const address = v4ToString(net);
    return { family: 4, address, prefix, cidr: `${address}/${prefix}` };
  }
  const words = ip.words.map((w, i) => (w & maskWord(prefix, i)) >>> 0);
  if (strict && words.some((w, i) => w !== ip.words[i])) {
    const net = wordsToV6String(words);
    return bad(`host bits are set; did you mean ${net}/${prefix} or ${wordsToV6String(ip.words)}/128?`);
  }
  const address = wordsToV6String(words);
  return { family: 6, address, prefix, cidr: `${address}/${prefix}` };
}

/** True when `input` is a valid network or address for parseCidr. */
export function isValidCidr(input: string, options: { strict?: boolean } = {}): boolean {
  try {
    parseCidr(input, options);
    return true;
  } catch {
    return false;
  }
}

/**
 * An immutable set of networks with a fast `contains`. Built from CIDR strings or bare addresses; host bits in
 * a CIDR are cleared (the config loader is the place that refuses them). Throws ERR_NETWORK_INVALID on bad input.
 */
export class NetworkList {
  /** The networks in canonical form, duplicates removed, in the order given. */
  readonly cidrs: readonly string[];
  readonly #v4net: Uint32Array;
  readonly #v4mask: Uint32Array;
  /** 8 words per range: 4 network words, then 4 mask words. */
  readonly #v6: Uint32Array;
  readonly #matchAllV4: boolean;
  readonly #matchAllV6: boolean;

  constructor(cidrs: Iterable<string> = []) {
    const seen = new Set<string>();
    const v4: Cidr[] = [];
    const v6: Cidr[] = [];
    for (const s of cidrs) {
      const c = parseCidr(s, { strict: false });
      if (seen.has(c.cidr)) continue;
      seen.add(c.cidr);
      (c.family === 4 ? v4 : v6).push(c);
    }
    this.cidrs = Object.freeze([...seen]);
    this.#v4net = new Uint32Array(v4.length);
    this.#v4mask = new Uint32Array(v4.length);
    v4.forEach((c, i) => {
      this.#v4net[i] = parseIpv4(c.address);
      this.#v4mask[i] = maskWord(c.prefix, 0);
    });
    this.#v6 = new Uint32Array(v6.length * 8);
    v6.forEach((c, i) => {
      const p = parseIp(c.address);
      if (p === null || p.family !== 6) throw new RelayguardError('ERR_NETWORK_INVALID', `Invalid network "${c.cidr}"`);
      for (let k = 0; k < 4; k++) {
        this.#v6[i * 8 + k] = p.words[k]!;
        this.#v6[i * 8 + 4 + k] = maskWord(c.prefix, k);
      }
    });
    this.#matchAllV4 = v4.some((c) => c.prefix === 0);
    this.#matchAllV6 = v6.some((c) => c.prefix === 0);
  }

  get size(): number {
    return this.cidrs.length;
  }

  /** True when `ip` (an address as a socket reports it) is inside one of the networks. False for non-addresses. */
  contains(ip: string): boolean {
    const p = parseIp(ip);
    return p !== null && this.containsParsed(p);
  }

  /** As `contains`, for an address parsed once with `parseIp` and tested against several lists. */
  containsParsed(p: ParsedIp): boolean {
    if (p.family === 4) {
      if (this.#matchAllV4) return true;
      const net = this.#v4net;
      const mask = this.#v4mask;
      const v = p.value;
      for (let i = 0; i < net.length; i++) {
        if (((v & mask[i]!) >>> 0) === net[i]) return true;
      }
      return false;
    }
    if (this.#matchAllV6) return true;
    const r = this.#v6;
    const [w0, w1, w2, w3] = p.words;
    for (let o = 0; o < r.length; o += 8) {
      if (
        ((w0 & r[o + 4]!) >>> 0) === r[o] &&
        ((w1 & r[o + 5]!) >>> 0) === r[o + 1] &&
        ((w2 & r[o + 6]!) >>> 0) === r[o + 2] &&
        ((w3 & r[o + 7]!) >>> 0) === r[o + 3]
      ) {
        return true;
      }
    }
    return false;
  }

  toJSON(): readonly string[] {
    return this.cidrs;
  }
}
