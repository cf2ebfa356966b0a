/**
 * The ORDB zone as an immutable in-memory index (pure: no I/O). Built once from the listings, swapped whole on
 * change; the DNS server and the exporters only read it.
 *
 * Semantics (RFC 5782):
 * - IPv4 names are four reversed decimal octets (strict: 0-255, no leading zeros), IPv6 names 32 reversed hex
 *   nibbles (either case), both directly below the apex.
 * - A listed address has an A record (its category's code) and, when its entry has a template, a TXT record in
 *   which "$" is replaced by the queried address ("$$" is a literal dollar sign; rbldnsd's syntax).
 * - Overlapping entries: an excluded network wins over any listing it covers, whatever the prefix lengths; among
 *   listings, the most specific network wins. (rbldnsd's ip4set/ip6trie use longest prefix for exclusions too;
 *   the exporter drops listings that an exclusion covers, so both servers give the same answers.)
 * - Test points (RFC 5782 section 5): 127.0.0.2 and ::ffff:7f00:2 are always listed, 127.0.0.1 and ::ffff:7f00:1
 *   never, whatever the entries say.
 * - A name that is a proper prefix of a listed name (e.g. "0.0.127.zone") is an empty non-terminal: NOERROR with
 *   no data (RFC 8020 / RFC 7816 QNAME minimisation); every other name below the apex is NXDOMAIN.
 *
 * Index: the entries are flattened into sorted, disjoint intervals, each pointing at a deduplicated value
 * (A code + TXT template). IPv4 uses one Uint32Array of (start, end, value) triples (12 bytes per interval) and
 * a 256 KiB directory by /16, so a lookup is a binary search among the intervals of one /16 (a cache line or
 * two); IPv6 two Uint32Arrays of four words each plus a value array (36 bytes per interval), binary search.
 * Adjacent intervals with the same value are merged, so a /24 listed as 256 single addresses costs one interval.
 * The arrays live on SharedArrayBuffers: worker threads answer from them without a copy (toShared/fromShared).
 * ZoneBuilder keeps IPv4 entries in typed arrays too (8 bytes each) and frees its temporaries as it goes.
 */
import {
  formatIpv6Words,
  isNetworkError,
  numberToIpv4,
  parseAddress,
  parseNetwork,
  bigintToIpv6,
} from './network.ts';

export interface ZoneEntry {
  /** Address or CIDR network, any form parseNetwork accepts. */
  readonly network: string;
  /** An exclusion: nothing inside it is listed. */
  readonly excluded?: boolean | undefined;
  /** The A record value, default "127.0.0.2". Must be in 127.0.0.0/8. */
  readonly code?: string | undefined;
  /** TXT template ("$" = queried address, "$$" = "$"), or null for no TXT record. */
  readonly txt?: string | null | undefined;
}

export interface SoaFields {
  readonly mname: string;
  readonly rname: string;
  readonly serial: number;
  readonly refresh: number;
  readonly retry: number;
  readonly expire: number;
  readonly minimum: number;
}

export interface ZoneHost {
  /** Absolute name inside the zone (e.g. "ns.relays.example.org") or relative to the apex ("ns"). */
  readonly name: string;
  readonly addresses: readonly string[];
}

export interface ZoneOptions {
  /** The zone apex, e.g. "relays.example.org". */
  readonly apex: string;
  readonly soa?: Partial<SoaFields> | undefined;
  /** Name servers of the zone (absolute names). Default: [soa.mname]. */
  readonly ns?: readonly string[] | undefined;
  /** Address records for names inside the zone (glue for in-zone name servers). */
  readonly hosts?: readonly ZoneHost[] | undefined;
  /** TTL of listing answers (A, TXT), seconds. Default 2100 (rbldnsd's 35 minutes). */
  readonly ttl?: number | undefined;
  /** TTL of SOA, NS and host records. Default 3600. */
  readonly apexTtl?: number | undefined;
  /** TXT template of the RFC 5782 test points. */
  readonly testPointTxt?: string | undefined;
}

export type LookupResult =
  | { readonly kind: 'apex' }
  | {
      readonly kind: 'listed';
      /** The queried address in canonical text form. */
      readonly address: string;
      /** A value as text ("127.0.0.2") and as a 32-bit number. */
      readonly code: string;
      readonly a: number;
      /** TXT text after substitution, or null when the entry has no TXT. */
      readonly txt: string | null;
    }
  | { readonly kind: 'host'; readonly a: readonly number[]; readonly aaaa: readonly Uint8Array[] }
  | { readonly kind: 'nodata' }
  | { readonly kind: 'nxdomain' }
  | { readonly kind: 'refused' };

export type ZoneRecord =
  | { readonly name: string; readonly type: 'SOA'; readonly ttl: number; readonly data: SoaFields }
  | { readonly name: string; readonly type: 'NS' | 'A' | 'AAAA' | 'TXT'; readonly ttl: number; readonly data: string };

export interface ZoneStats {
  readonly v4Intervals: number;
  readonly v6Intervals: number;
  readonly values: number;
  /** Bytes held by the typed arrays of the index. */
  readonly indexBytes: number;
}

/** Zone.toShared(): what a worker thread needs to rebuild the zone (Zone.fromShared) without copying the index. */
export interface SharedZone {
  readonly options: ZoneOptions;
  /** IPv4 intervals: start, end, value index, interleaved. */
  readonly v4: Uint32Array;
  readonly v6s: Uint32Array;
  readonly v6e: Uint32Array;
  readonly v6v: Uint32Array;
  readonly v4dir: Uint32Array;
  readonly values: readonly ZoneValue[];
}

export class ZoneError extends Error {
  readonly code = 'ERR_DNSBL_ZONE';
  constructor(message: string) {
    super(message);
    this.name = 'ZoneError';
  }
}

const APEX: LookupResult = Object.freeze({ kind: 'apex' });
const NODATA: LookupResult = Object.freeze({ kind: 'nodata' });
const NXDOMAIN: LookupResult = Object.freeze({ kind: 'nxdomain' });
const REFUSED: LookupResult = Object.freeze({ kind: 'refused' });

export const TEST_POINT_V4_LISTED = 0x7f000002;
export const TEST_POINT_V4_UNLISTED = 0x7f000001;
export const TEST_POINT_V6_LISTED = 0xffff7f000002n;
export const TEST_POINT_V6_UNLISTED = 0xffff7f000001n;
const DEFAULT_TEST_POINT_TXT = 'RFC 5782 test point: $ is always listed';
export const DEFAULT_CODE = '127.0.0.2';
export const MAX_TXT_TEMPLATE = 2048;

// ---------------------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------------------

/** Lower-case host name without trailing dot; throws on anything that is not a plausible DNS name. */
export function normalizeZoneName(name: string, what = 'name'): string {
  let n = String(name).trim().toLowerCase();
  if (n.endsWith('.')) n = n.slice(0, -1);
  if (n.length === 0 || n.length > 253) throw new ZoneError(`bad ${what} "${name}"`);
  for (const label of n.split('.')) {
    if (!/^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label)) throw new ZoneError(`bad ${what} "${name}"`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// TXT templates
// ---------------------------------------------------------------------------------------------------------------

/**
 * Checks a TXT template and returns it trimmed (leading and trailing blanks are dropped, as rbldnsd does).
 * Refused: control characters, "$" followed by a digit or "=" (rbldnsd variables), and over-long templates.
 */
export function normalizeTxtTemplate(template: string): string {
  const t = String(template).trim();
  if (t.length > MAX_TXT_TEMPLATE) throw new ZoneError(`TXT template longer than ${MAX_TXT_TEMPLATE} characters`);
  if (/[\x00-\x1f\x7f]/.test(t)) throw new ZoneError('TXT template contains a control character');
  for (let i = 0; i < t.length; i++) {
    if (t[i] !== '$') continue;
    if (t[i + 1] === '$') { i++; continue; }
    const next = t[i + 1];
    if (next !== undefined && (/[0-9]/.test(next) || next === '=')) {
      throw new ZoneError(`TXT template has "$${next}" (write "$$" for a dollar sign, or put a space after "$")`);
    }
  }
  return t;
}

/** Splits a template at its "$" placeholders: parts.join(address) is the text. */
function templateParts(t: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < t.length; i++) {
    const c = t[i]!;
    if (c !== '$') { cur += c; continue; }
    if (t[i + 1] === '$') { cur += '$'; i++; continue; }
    parts.push(cur);
    cur = '';
  }
  parts.push(cur);
  return parts;
}

/** Escapes plain text for use inside a template ("$" -> "$$"). */
export function escapeTxt(text: string): string {
  return text.replace(/\$/g, '$$$$');
}

export function expandTxt(template: string, address: string): string {
  return templateParts(template).join(address);
}

// ---------------------------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------------------------

/** A deduplicated listing value: the A record and the TXT template of one or more intervals. */
export interface ZoneValue {
  readonly code: string;
  readonly a: number;
  /** Normalized template, or null. */
  readonly template: string | null;
  /** The template split at its "$" placeholders (parts.join(address) is the text), or null. */
  readonly parts: readonly string[] | null;
}

// IPv6: entries are few (and 128-bit), so they are flattened with bigints in plain arrays. IPv4 (up to millions
// of entries) uses the typed-array version below, which follows the same three steps.

interface Arith<T> {
  inc(x: T): T;
  dec(x: T): T;
}
const BIG: Arith<bigint> = { inc: (x) => x + 1n, dec: (x) => x - 1n };

interface Ranges<T> {
  s: T[];
  e: T[];
  v: number[];
}

interface RawEntries<T> {
  first: T[];
  last: T[];
  prefix: number[];
  value: number[];
  excluded: boolean[];
}

/** Flattens prefix entries into sorted disjoint intervals: exclusions win, then the most specific listing. */
function flatten<T extends number | bigint>(raw: RawEntries<T>, ar: Arith<T>): Ranges<T> {
  const listed: number[] = [];
  const excl: number[] = [];
  for (let i = 0; i < raw.first.length; i++) (raw.excluded[i] ? excl : listed).push(i);
  const byStart = (a: number, b: number): number => {
    const fa = raw.first[a]!;
    const fb = raw.first[b]!;
    if (fa < fb) return -1;
    if (fa > fb) return 1;
    return raw.prefix[a]! - raw.prefix[b]! || a - b;
  };
  listed.sort(byStart);
  excl.sort(byStart);

  // 1. Listings: a stack of open (nested) networks; the innermost one owns each address.
  const out: Ranges<T> = { s: [], e: [], v: [] };
  const stackIdx: number[] = [];
  const stackVal: number[] = [];
  let cursor: T | null = null;
  const emit = (a: T, b: T, v: number): void => {
    out.s.push(a);
    out.e.push(b);
    out.v.push(v);
  };
  const popUntil = (limit: T | null): void => {
    while (stackIdx.length > 0) {
      const top = stackIdx[stackIdx.length - 1]!;
      const last = raw.last[top]!;
      if (limit !== null && !(last < limit)) break;
      if (cursor !== null && cursor <= last) emit(cursor, last, stackVal[stackVal.length - 1]!);
      cursor = ar.inc(last);
      stackIdx.pop();
      stackVal.pop();
    }
  };
  for (const i of listed) {
    const f = raw.first[i]!;
    popUntil(f);
    if (stackIdx.length > 0) {
      const top = stackIdx[stackIdx.length - 1]!;
      if (raw.first[top] === f && raw.prefix[top] === raw.prefix[i]) {
        stackVal[stackVal.length - 1] = raw.value[i]!; // the same network twice: the later entry wins
        continue;
      }
      if (cursor !== null && cursor < f) emit(cursor, ar.dec(f), stackVal[stackVal.length - 1]!);
    }
    cursor = f;
    stackIdx.push(i);
    stackVal.push(raw.value[i]!);
  }
  popUntil(null);

  if (excl.length === 0) return out;

  // 2. Union of the exclusions.
  const xs: T[] = [];
  const xe: T[] = [];
  for (const i of excl) {
    const f = raw.first[i]!;
    const l = raw.last[i]!;
    const n = xe.length;
    if (n > 0 && !(xe[n - 1]! < f)) {
      if (xe[n - 1]! < l) xe[n - 1] = l;
    } else {
      xs.push(f);
      xe.push(l);
    }
  }

  // 3. Listings minus exclusions.
  const res: Ranges<T> = { s: [], e: [], v: [] };
  let j = 0;
  for (let i = 0; i < out.s.length; i++) {
    const a = out.s[i]!;
    const b = out.e[i]!;
    const v = out.v[i]!;
    while (j < xs.length && xe[j]! < a) j++;
    let cur = a;
    let done = false;
    for (let k = j; k < xs.length && !(b < xs[k]!); k++) {
      if (cur < xs[k]!) {
        res.s.push(cur);
        res.e.push(ar.dec(xs[k]!));
        res.v.push(v);
      }
      if (!(xe[k]! < b)) { done = true; break; }
      cur = ar.inc(xe[k]!);
    }
    if (!done && !(b < cur)) {
      res.s.push(cur);
      res.e.push(b);
      res.v.push(v);
    }
  }
  return res;
}

/** Forces one address to a value (>= 0) or to "not listed" (-1). */
function overlay<T extends number | bigint>(r: Ranges<T>, p: T, value: number, ar: Arith<T>): void {
  // Last interval with s <= p.
  let lo = 0;
  let hi = r.s.length - 1;
  let idx = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (!(p < r.s[mid]!)) { idx = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const ins: Ranges<T> = { s: [], e: [], v: [] };
  let removeAt = idx + 1;
  let removeCount = 0;
  if (idx >= 0 && !(r.e[idx]! < p)) {
    const s = r.s[idx]!;
    const e = r.e[idx]!;
    const v = r.v[idx]!;
    removeAt = idx;
    removeCount = 1;
    if (s < p) { ins.s.push(s); ins.e.push(ar.dec(p)); ins.v.push(v); }
    if (value >= 0) { ins.s.push(p); ins.e.push(p); ins.v.push(value); }
    if (p < e) { ins.s.push(ar.inc(p)); ins.e.push(e); ins.v.push(v); }
  } else if (value >= 0) {
    ins.s.push(p); ins.e.push(p); ins.v.push(value);
  }
  r.s.splice(removeAt, removeCount, ...ins.s);
  r.e.splice(removeAt, removeCount, ...ins.e);
  r.v.splice(removeAt, removeCount, ...ins.v);
}

function mergeAdjacent<T extends number | bigint>(r: Ranges<T>, ar: Arith<T>): Ranges<T> {
  const out: Ranges<T> = { s: [], e: [], v: [] };
  for (let i = 0; i < r.s.length; i++) {
    const n = out.s.length;
    if (n > 0 && out.v[n - 1] === r.v[i] && ar.inc(out.e[n - 1]!) === r.s[i]) {
      out.e[n - 1] = r.e[i]!;
    } else {
      out.s.push(r.s[i]!);
      out.e.push(r.e[i]!);
      out.v.push(r.v[i]!);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// IPv4 on typed arrays: 8 bytes per raw entry (first address; prefix + value), an 8-byte sort key per entry
// while sorting, 12 bytes per interval. No per-entry JS objects, so building a million entries stays in tens of
// megabytes outside the V8 heap instead of growing the heap (which V8 is slow to hand back).
// ---------------------------------------------------------------------------------------------------------------

/** A growable Uint32Array. */
class U32Vec {
  a: Uint32Array<ArrayBuffer>;
  n = 0;
  constructor(capacity = 1024) {
    this.a = new Uint32Array(Math.max(16, capacity));
  }
  push(x: number): void {
    if (this.n === this.a.length) this.#grow(this.n + 1);
    this.a[this.n++] = x;
  }
  #grow(min: number): void {
    let cap = Math.max(16, this.a.length * 2);
    while (cap < min) cap *= 2;
    // transfer() moves the contents and frees the old memory now, not at some later major GC.
    this.a = new Uint32Array(this.a.buffer.transfer(cap * 4));
  }
  /** Frees the memory now (the vector is empty afterwards). */
  release(): void {
    this.a.buffer.transfer(0);
    this.a = new Uint32Array(0);
    this.n = 0;
  }
  /** Replaces `remove` elements at `at` by `ins`. */
  splice(at: number, remove: number, ins: readonly number[]): void {
    const delta = ins.length - remove;
    if (this.n + delta > this.a.length) this.#grow(this.n + delta);
    this.a.copyWithin(at + ins.length, at + remove, this.n);
    for (let k = 0; k < ins.length; k++) this.a[at + k] = ins[k]!;
    this.n += delta;
  }
}

interface V4Ranges {
  readonly s: U32Vec;
  readonly e: U32Vec;
  readonly v: U32Vec;
}

/** Raw IPv4 entries: meta = prefix + 64 * (value + 1), value -1 for an exclusion. */
const V4_META_PREFIX = 64;
/** Entries per family and values are limited by the sort key's 26-bit entry number. */
const MAX_V4_ENTRIES = 2 ** 26;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** flatten() for IPv4 on typed arrays: the same rules, the same output. */
function flattenV4(first: U32Vec, meta: U32Vec): V4Ranges {
  const n = first.n;
  const fa = first.a;
  const ma = meta.a;
  // Sort key: first address (high word), then prefix length, then entry number (low word), sorted natively.
  const keys = new BigUint64Array(n);
  const kw = new Uint32Array(keys.buffer);
  const hiW = LITTLE_ENDIAN ? 1 : 0;
  const loW = 1 - hiW;
  let exclusions = 0;
  for (let i = 0; i < n; i++) {
    const m = ma[i]!;
    kw[2 * i + hiW] = fa[i]!;
    kw[2 * i + loW] = (m % V4_META_PREFIX) * MAX_V4_ENTRIES + i;
    if (m < V4_META_PREFIX) exclusions++;
  }
  keys.sort();
  try {
    return flattenSorted(n, kw, hiW, ma, exclusions);
  } finally {
    keys.buffer.transfer(0);
  }
}

function flattenSorted(n: number, kw: Uint32Array, hiW: number, ma: Uint32Array, exclusions: number): V4Ranges {
  const loW = 1 - hiW;

  // 1. Listings: a stack of open (nested) networks; the innermost one owns each address.
  const out: V4Ranges = { s: new U32Vec(n + 16), e: new U32Vec(n + 16), v: new U32Vec(n + 16) };
  const emit = (a: number, b: number, v: number): void => {
    out.s.push(a);
    out.e.push(b);
    out.v.push(v);
  };
  const stF: number[] = [];
  const stL: number[] = [];
  const stP: number[] = [];
  const stV: number[] = [];
  let cursor = -1; // -1: none yet
  const popUntil = (all: boolean, limit: number): void => {
    while (stL.length > 0) {
      const top = stL.length - 1;
      const last = stL[top]!;
      if (!all && !(last < limit)) break;
      if (cursor >= 0 && cursor <= last) emit(cursor, last, stV[top]!);
      cursor = last + 1;
      stF.pop();
      stL.pop();
      stP.pop();
      stV.pop();
    }
  };
  for (let k = 0; k < n; k++) {
    const lo = kw[2 * k + loW]!;
    const i = lo % MAX_V4_ENTRIES;
    const m = ma[i]!;
    if (m < V4_META_PREFIX) continue; // an exclusion
    const f = kw[2 * k + hiW]!;
    const prefix = (lo - i) / MAX_V4_ENTRIES;
    const value = Math.floor(m / V4_META_PREFIX) - 1;
    popUntil(false, f);
    const top = stL.length - 1;
    if (top >= 0) {
      if (stF[top] === f && stP[top] === prefix) {
        stV[top] = value; // the same network twice: the later entry wins
        continue;
      }
      if (cursor >= 0 && cursor < f) emit(cursor, f - 1, stV[top]!);
    }
    cursor = f;
    stF.push(f);
    stL.push(f + 2 ** (32 - prefix) - 1);
    stP.push(prefix);
    stV.push(value);
  }
  popUntil(true, 0);
  if (exclusions === 0) return out;

  // 2. Union of the exclusions.
  const xs = new U32Vec(exclusions);
  const xe = new U32Vec(exclusions);
  for (let k = 0; k < n; k++) {
    const lo = kw[2 * k + loW]!;
    const i = lo % MAX_V4_ENTRIES;
    if (ma[i]! >= V4_META_PREFIX) continue;
    const f = kw[2 * k + hiW]!;
    const l = f + 2 ** (32 - (lo - i) / MAX_V4_ENTRIES) - 1;
    const x = xe.n;
    if (x > 0 && !(xe.a[x - 1]! < f)) {
      if (xe.a[x - 1]! < l) xe.a[x - 1] = l;
    } else {
      xs.push(f);
      xe.push(l);
    }
  }

  // 3. Listings minus exclusions.
  const res: V4Ranges = { s: new U32Vec(out.s.n + exclusions + 16), e: new U32Vec(out.s.n + exclusions + 16), v: new U32Vec(out.s.n + exclusions + 16) };
  const xsa = xs.a;
  const xea = xe.a;
  const xn = xs.n;
  let j = 0;
  for (let i = 0; i < out.s.n; i++) {
    const a = out.s.a[i]!;
    const b = out.e.a[i]!;
    const v = out.v.a[i]!;
    while (j < xn && xea[j]! < a) j++;
    let cur = a;
    let done = false;
    for (let k = j; k < xn && !(b < xsa[k]!); k++) {
      if (cur < xsa[k]!) {
        res.s.push(cur);
        res.e.push(xsa[k]! - 1);
        res.v.push(v);
      }
      if (!(xea[k]! < b)) { done = true; break; }
      cur = xea[k]! + 1;
    }
    if (!done && !(b < cur)) {
      res.s.push(cur);
      res.e.push(b);
      res.v.push(v);
    }
  }
  for (const x of [xs, xe, out.s, out.e, out.v]) x.release();
  return res;
}

/** overlay() for IPv4: forces one address to a value (>= 0) or to "not listed" (-1). */
function overlayV4(r: V4Ranges, p: number, value: number): void {
  const s = r.s.a;
  let lo = 0;
  let hi = r.s.n - 1;
  let idx = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (!(p < s[mid]!)) { idx = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const is: number[] = [];
  const ie: number[] = [];
  const iv: number[] = [];
  let removeAt = idx + 1;
  let removeCount = 0;
  if (idx >= 0 && !(r.e.a[idx]! < p)) {
    const a = s[idx]!;
    const b = r.e.a[idx]!;
    const v = r.v.a[idx]!;
    removeAt = idx;
    removeCount = 1;
    if (a < p) { is.push(a); ie.push(p - 1); iv.push(v); }
    if (value >= 0) { is.push(p); ie.push(p); iv.push(value); }
    if (p < b) { is.push(p + 1); ie.push(b); iv.push(v); }
  } else if (value >= 0) {
    is.push(p); ie.push(p); iv.push(value);
  }
  r.s.splice(removeAt, removeCount, is);
  r.e.splice(removeAt, removeCount, ie);
  r.v.splice(removeAt, removeCount, iv);
}

/** mergeAdjacent() for IPv4, in place. */
function mergeAdjacentV4(r: V4Ranges): void {
  const s = r.s.a;
  const e = r.e.a;
  const v = r.v.a;
  let w = 0;
  for (let i = 0; i < r.s.n; i++) {
    if (w > 0 && v[w - 1] === v[i] && e[w - 1]! + 1 === s[i]) {
      e[w - 1] = e[i]!;
    } else {
      s[w] = s[i]!;
      e[w] = e[i]!;
      v[w] = v[i]!;
      w++;
    }
  }
  r.s.n = w;
  r.e.n = w;
  r.v.n = w;
}

function parseCode(code: string): number {
  const host = parseAddress(code);
  if (host === null || host.family !== 4) throw new ZoneError(`bad A value "${code}"`);
  const n = host.first as number;
  if (n >>> 24 !== 127) throw new ZoneError(`A value "${code}" is not in 127.0.0.0/8`);
  return n;
}

/** Values looked up by their raw (code, txt) input, so that a million entries don't re-check a few templates. */
const VALUE_CACHE_LIMIT = 4096;

/**
 * Incremental builder: feed entries (possibly millions, streamed from the store), then build(). IPv4 entries
 * cost 8 bytes each until build(); build() needs about 40 bytes per IPv4 entry more while it runs.
 */
export class ZoneBuilder {
  readonly #options: ZoneOptions;
  readonly #values: ZoneValue[] = [];
  readonly #valueIds = new Map<string, number>();
  readonly #byTxt = new Map<string, Map<string, number>>();
  readonly #byCodeNoTxt = new Map<string, number>();
  #cached = 0;
  readonly #v4First = new U32Vec();
  readonly #v4Meta = new U32Vec();
  #built = false;
  readonly #v6: RawEntries<bigint> = { first: [], last: [], prefix: [], value: [], excluded: [] };

  constructor(options: ZoneOptions) {
    this.#options = options;
    const tp = options.testPointTxt === undefined ? DEFAULT_TEST_POINT_TXT : options.testPointTxt;
    this.#value(DEFAULT_CODE, tp); // value 0: the test points
  }

  #value(code: string, txt: string | null | undefined): number {
    const byCode = txt === null || txt === undefined ? this.#byCodeNoTxt : this.#byTxt.get(txt);
    const hit = byCode?.get(code);
    if (hit !== undefined) return hit;
    const template = txt === null || txt === undefined ? null : normalizeTxtTemplate(txt);
    const key = `${code}\n${template ?? '\u0000'}`;
    let id = this.#valueIds.get(key);
    if (id === undefined) {
      const a = parseCode(code);
      id = this.#values.length;
      if (id >= MAX_V4_ENTRIES - 2) throw new ZoneError('too many distinct A values and TXT templates');
      this.#values.push({ code: numberToIpv4(a), a, template, parts: template === null ? null : templateParts(template) });
      this.#valueIds.set(key, id);
    }
    if (this.#cached < VALUE_CACHE_LIMIT) {
      this.#cached++;
      if (txt === null || txt === undefined) this.#byCodeNoTxt.set(code, id);
      else {
        let m = this.#byTxt.get(txt);
        if (!m) this.#byTxt.set(txt, m = new Map());
        m.set(code, id);
      }
    }
    return id;
  }

  add(entry: ZoneEntry): this {
    if (this.#built) throw new ZoneError('ZoneBuilder.add() after build()');
    const net = parseNetwork(entry.network);
    if (isNetworkError(net)) throw new ZoneError(net.error);
    const excluded = entry.excluded === true;
    const value = excluded ? -1 : this.#value(entry.code ?? DEFAULT_CODE, entry.txt);
    if (net.family === 4) {
      if (this.#v4First.n >= MAX_V4_ENTRIES) throw new ZoneError(`more than ${MAX_V4_ENTRIES} IPv4 entries`);
      this.#v4First.push(net.first as number);
      this.#v4Meta.push(net.prefix + V4_META_PREFIX * (value + 1));
    } else {
      const raw = this.#v6;
      raw.first.push(net.first as bigint);
      raw.last.push(net.last as bigint);
      raw.prefix.push(net.prefix);
      raw.value.push(value);
      raw.excluded.push(excluded);
    }
    return this;
  }

  /** Builds the zone, once: the builder frees its entries as it goes. */
  build(): Zone {
    if (this.#built) throw new ZoneError('ZoneBuilder.build() called twice');
    this.#built = true;
    const r4 = flattenV4(this.#v4First, this.#v4Meta);
    this.#v4First.release();
    this.#v4Meta.release();
    overlayV4(r4, TEST_POINT_V4_LISTED, 0);
    overlayV4(r4, TEST_POINT_V4_UNLISTED, -1);
    mergeAdjacentV4(r4);
    let r6 = flatten(this.#v6, BIG);
    overlay(r6, TEST_POINT_V6_LISTED, 0, BIG);
    overlay(r6, TEST_POINT_V6_UNLISTED, -1, BIG);
    r6 = mergeAdjacent(r6, BIG);

    const n6 = r6.s.length;
    const v6s = new Uint32Array(new SharedArrayBuffer(n6 * 16));
    const v6e = new Uint32Array(new SharedArrayBuffer(n6 * 16));
    const v6v = new Uint32Array(new SharedArrayBuffer(n6 * 4));
    for (let i = 0; i < n6; i++) {
      for (let k = 0; k < 4; k++) {
        const shift = BigInt(96 - 32 * k);
        v6s[i * 4 + k] = Number((r6.s[i]! >> shift) & 0xffffffffn);
        v6e[i * 4 + k] = Number((r6.e[i]! >> shift) & 0xffffffffn);
      }
      v6v[i] = r6.v[i]!;
    }
    // One array, start/end/value side by side: a lookup touches one or two cache lines, not three.
    const n4 = r4.s.n;
    const v4 = new Uint32Array(new SharedArrayBuffer(n4 * 12));
    for (let i = 0; i < n4; i++) {
      v4[3 * i] = r4.s.a[i]!;
      v4[3 * i + 1] = r4.e.a[i]!;
      v4[3 * i + 2] = r4.v.a[i]!;
    }
    for (const x of [r4.s, r4.e, r4.v]) x.release();
    return new Zone(this.#options, v4, v6s, v6e, v6v, [...this.#values]);
  }
}

export function buildZone(entries: Iterable<ZoneEntry>, options: ZoneOptions): Zone {
  const b = new ZoneBuilder(options);
  for (const e of entries) b.add(e);
  return b.build();
}

// ---------------------------------------------------------------------------------------------------------------
// The zone
// ---------------------------------------------------------------------------------------------------------------

function decimalLabel(l: string): number {
  const n = l.length;
  if (n === 0 || n > 3) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = l.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  if (n > 1 && l.charCodeAt(0) === 48) return -1; // leading zero
  return v > 255 ? -1 : v;
}

function nibbleLabel(l: string): number {
  if (l.length !== 1) return -1;
  const c = l.charCodeAt(0);
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

const SCRATCH_LO = new Uint32Array(4);
const SCRATCH_HI = new Uint32Array(4);

export class Zone {
  readonly apex: string;
  readonly apexLabels: readonly string[];
  readonly soa: SoaFields;
  readonly ns: readonly string[];
  readonly ttl: number;
  readonly apexTtl: number;
  /** TTL of negative answers and of the SOA they carry: min(SOA TTL, SOA minimum) (RFC 2308 section 5). */
  readonly negativeTtl: number;
  /** IPv4 intervals as (start, end, value index) triples, sorted, disjoint. */
  readonly #v4: Uint32Array;
  readonly #n4: number;
  readonly #v6s: Uint32Array;
  readonly #v6e: Uint32Array;
  readonly #v6v: Uint32Array;
  /** #v4dir[h]: how many IPv4 intervals start below h * 65536 (h = 0..65536), so a lookup searches one /16. */
  readonly #v4dir: Uint32Array;
  readonly #values: readonly ZoneValue[];
  readonly #options: ZoneOptions;
  /** Relative lower-case name -> host records. */
  readonly #hosts = new Map<string, { a: number[]; aaaa: Uint8Array[]; aText: string[]; aaaaText: string[] }>();
  /** Relative names that are empty non-terminals because of host names. */
  readonly #hostEnts = new Set<string>();

  constructor(
    options: ZoneOptions,
    v4: Uint32Array,
    v6s: Uint32Array,
    v6e: Uint32Array,
    v6v: Uint32Array,
    values: readonly ZoneValue[],
    v4dir: Uint32Array = v4Directory(v4),
  ) {
    this.apex = normalizeZoneName(options.apex, 'zone apex');
    this.apexLabels = this.apex.split('.');
    const mname = normalizeZoneName(options.soa?.mname ?? options.ns?.[0] ?? 'localhost', 'SOA mname');
    const soa: SoaFields = {
      mname,
      rname: normalizeZoneName(options.soa?.rname ?? `hostmaster.${this.apex}`, 'SOA rname'),
      serial: options.soa?.serial ?? 1,
      refresh: options.soa?.refresh ?? 3600,
      retry: options.soa?.retry ?? 600,
      expire: options.soa?.expire ?? 259200,
      minimum: options.soa?.minimum ?? 300,
    };
    for (const [k, v] of Object.entries(soa)) {
      if (typeof v === 'number' && (!Number.isInteger(v) || v < 0 || v > 0xffffffff)) throw new ZoneError(`bad SOA ${k} ${v}`);
    }
    this.soa = soa;
    this.ns = (options.ns && options.ns.length > 0 ? options.ns : [mname]).map((n) => normalizeZoneName(n, 'NS name'));
    this.ttl = options.ttl ?? 2100;
    this.apexTtl = options.apexTtl ?? 3600;
    for (const t of [this.ttl, this.apexTtl]) {
      if (!Number.isInteger(t) || t < 0 || t > 0x7fffffff) throw new ZoneError(`bad TTL ${t}`);
    }
    this.negativeTtl = Math.min(this.apexTtl, soa.minimum);
    if (v4.length % 3 !== 0) throw new ZoneError('bad IPv4 index');
    this.#v4 = v4;
    this.#n4 = v4.length / 3;
    this.#v6s = v6s;
    this.#v6e = v6e;
    this.#v6v = v6v;
    if (v4dir.length !== 65537) throw new ZoneError('bad IPv4 directory');
    this.#v4dir = v4dir;
    this.#values = values;
    this.#options = options;
    for (const h of options.hosts ?? []) {
      let name = normalizeZoneName(h.name, 'host name');
      if (name === this.apex) throw new ZoneError('host records at the apex are not supported');
      if (name.endsWith(`.${this.apex}`)) name = name.slice(0, -this.apex.length - 1);
      const labels = name.split('.');
      if (this.#classify(labels) !== 'other') throw new ZoneError(`host name "${h.name}" would hide a DNSBL name`);
      const rec = this.#hosts.get(name) ?? { a: [], aaaa: [], aText: [], aaaaText: [] };
      for (const addr of h.addresses) {
        const n = parseAddress(addr);
        if (n === null) throw new ZoneError(`bad address "${addr}" for host ${h.name}`);
        if (n.family === 4) {
          rec.a.push(n.first as number);
          rec.aText.push(n.text);
        } else {
          const b = new Uint8Array(16);
          let v = n.first as bigint;
          for (let i = 15; i >= 0; i--) { b[i] = Number(v & 0xffn); v >>= 8n; }
          rec.aaaa.push(b);
          rec.aaaaText.push(n.text);
        }
      }
      this.#hosts.set(name, rec);
      for (let i = 1; i < labels.length; i++) this.#hostEnts.add(labels.slice(i).join('.'));
    }
  }

  get serial(): number {
    return this.soa.serial;
  }

  /**
   * The zone as structured-clonable data for worker threads: the index arrays are views of SharedArrayBuffers
   * (ZoneBuilder allocates them so), so posting it to a worker copies only the options and the values.
   */
  toShared(): SharedZone {
    return {
      options: this.#options,
      v4: this.#v4,
      v6s: this.#v6s, v6e: this.#v6e, v6v: this.#v6v,
      v4dir: this.#v4dir,
      values: this.#values,
    };
  }

  static fromShared(z: SharedZone): Zone {
    return new Zone(z.options, z.v4, z.v6s, z.v6e, z.v6v, z.values, z.v4dir);
  }

  /** True when the zone has host records (then names below the apex are not only addresses). */
  get hasHosts(): boolean {
    return this.#hosts.size > 0;
  }

  /** The value index of the interval that holds this IPv4 address (a 32-bit number), or -1: the raw index lookup. */
  v4Value(ip: number): number {
    return this.#findV4(ip);
  }

  /**
   * The value index of the interval that holds this IPv6 address (four 32-bit words, most significant first), or
   * -1: the raw index lookup.
   */
  v6Value(w0: number, w1: number, w2: number, w3: number): number {
    return this.#findV6(w0 >>> 0, w1 >>> 0, w2 >>> 0, w3 >>> 0);
  }

  /** The value with this index (see v4Value). */
  value(index: number): ZoneValue {
    const v = this.#values[index];
    if (v === undefined) throw new RangeError(`no zone value ${index}`);
    return v;
  }

  /** Number of distinct values (value indexes are 0 .. valueCount - 1). */
  get valueCount(): number {
    return this.#values.length;
  }

  get stats(): ZoneStats {
    return {
      v4Intervals: this.#n4,
      v6Intervals: this.#v6v.length,
      values: this.#values.length,
      indexBytes:
        this.#v4.byteLength +
        this.#v6s.byteLength + this.#v6e.byteLength + this.#v6v.byteLength + this.#v4dir.byteLength,
    };
  }

  #classify(labels: readonly string[]): 'v4' | 'v6' | 'other' {
    if (labels.length === 4 && labels.every((l) => decimalLabel(l) >= 0)) return 'v4';
    if (labels.length === 32 && labels.every((l) => nibbleLabel(l) >= 0)) return 'v6';
    if (labels.length < 4 && labels.every((l) => decimalLabel(l) >= 0)) return 'v4';
    if (labels.length < 32 && labels.every((l) => nibbleLabel(l) >= 0)) return 'v6';
    return 'other';
  }

  /** Looks up a full query name (any case, trailing dot optional). Names outside the zone are "refused". */
  lookupName(qname: string, withTxt = true): LookupResult {
    let n = qname.toLowerCase();
    if (n.endsWith('.')) n = n.slice(0, -1);
    if (n === this.apex) return APEX;
    if (!n.endsWith(`.${this.apex}`)) return REFUSED;
    const rel = n.slice(0, -this.apex.length - 1);
    return this.lookupLabels(rel.split('.'), withTxt);
  }

  /**
   * Looks up the labels below the apex, most specific first (["2","0","0","127"] for 127.0.0.2). Labels are
   * compared case-insensitively; the caller has already matched the apex.
   */
  lookupLabels(labels: readonly string[], withTxt = true): LookupResult {
    if (labels.length === 0) return APEX;
    const r = this.#lookupAddressLabels(labels, withTxt);
    if (r !== NXDOMAIN || this.#hosts.size === 0) return r;
    // Host names never look like addresses (checked when the zone is built), so they are looked up last.
    const rel = labels.join('.').toLowerCase();
    const h = this.#hosts.get(rel);
    if (h) return { kind: 'host', a: h.a, aaaa: h.aaaa };
    return this.#hostEnts.has(rel) ? NODATA : NXDOMAIN;
  }

  #lookupAddressLabels(labels: readonly string[], withTxt: boolean): LookupResult {
    const n = labels.length;
    if (n <= 4) {
      // IPv4 (or a prefix of it).
      let ok = true;
      let ip = 0;
      for (let i = n - 1; i >= 0; i--) {
        const o = decimalLabel(labels[i]!);
        if (o < 0) { ok = false; break; }
        ip = ip * 256 + o;
      }
      if (ok) {
        if (n === 4) {
          const vi = this.#findV4(ip);
          if (vi >= 0) return this.#listed(vi, `${labels[3]}.${labels[2]}.${labels[1]}.${labels[0]}`, withTxt);
        } else {
          const size = 256 ** (4 - n);
          if (this.#anyV4(ip * size, ip * size + size - 1)) return NODATA;
        }
      }
    }
    if (n <= 32) {
      const lo = SCRATCH_LO;
      const hi = SCRATCH_HI;
      lo.fill(0);
      hi.fill(0);
      for (let k = 0; k < 32; k++) {
        // nibble k (most significant first) is label 31 - k, counted from the right end of the labels given.
        let nib: number;
        let nibHi: number;
        if (k < n) {
          nib = nibbleLabel(labels[n - 1 - k]!);
          if (nib < 0) return NXDOMAIN;
          nibHi = nib;
        } else {
          nib = 0;
          nibHi = 15;
        }
        const w = k >> 3;
        lo[w] = ((lo[w]! << 4) | nib) >>> 0;
        hi[w] = ((hi[w]! << 4) | nibHi) >>> 0;
      }
      if (n === 32) {
        const vi = this.#findV6(lo[0]!, lo[1]!, lo[2]!, lo[3]!);
        if (vi >= 0) return this.#listed(vi, formatIpv6Words(lo[0]!, lo[1]!, lo[2]!, lo[3]!), withTxt);
        return NXDOMAIN;
      }
      if (this.#anyV6(lo, hi)) return NODATA;
    }
    return NXDOMAIN;
  }

  /** Is this address listed? (Convenience for tests, the CLI and the consumer self-check.) */
  lookupAddress(address: string): LookupResult {
    const n = parseAddress(address);
    if (n === null) return REFUSED;
    if (n.family === 4) {
      const ip = n.first as number;
      const vi = this.#findV4(ip);
      return vi >= 0 ? this.#listed(vi, n.text, true) : NXDOMAIN;
    }
    const v = n.first as bigint;
    const w = [0, 1, 2, 3].map((k) => Number((v >> BigInt(96 - 32 * k)) & 0xffffffffn)) as [number, number, number, number];
    const vi = this.#findV6(...w);
    return vi >= 0 ? this.#listed(vi, n.text, true) : NXDOMAIN;
  }

  #listed(valueIndex: number, address: string, withTxt: boolean): LookupResult {
    const v = this.#values[valueIndex]!;
    const txt = withTxt && v.parts !== null ? (v.parts.length === 1 ? v.parts[0]! : v.parts.join(address)) : null;
    return { kind: 'listed', address, code: v.code, a: v.a, txt };
  }

  #findV4(ip: number): number {
    // The last interval starting at or below ip is among those starting in ip's /16, or the one just before.
    const t = this.#v4;
    const h = ip >>> 16;
    let lo = this.#v4dir[h]!;
    if (lo > 0) lo--;
    let hi = this.#v4dir[h + 1]! - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (t[3 * mid]! <= ip) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0 || t[3 * hi + 1]! < ip) return -1;
    return t[3 * hi + 2]!;
  }

  #anyV4(lo: number, hi: number): boolean {
    const t = this.#v4;
    let a = 0;
    let b = this.#n4 - 1;
    while (a <= b) {
      const mid = (a + b) >>> 1;
      if (t[3 * mid]! <= hi) a = mid + 1;
      else b = mid - 1;
    }
    return b >= 0 && t[3 * b + 1]! >= lo;
  }

  /** Index of the last IPv6 interval whose start <= the address, or -1. */
  #lastStartLe(w0: number, w1: number, w2: number, w3: number): number {
    const s = this.#v6s;
    let lo = 0;
    let hi = this.#v6v.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const o = mid * 4;
      const c = cmp4(s[o]!, s[o + 1]!, s[o + 2]!, s[o + 3]!, w0, w1, w2, w3);
      if (c <= 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi;
  }

  #findV6(w0: number, w1: number, w2: number, w3: number): number {
    const i = this.#lastStartLe(w0, w1, w2, w3);
    if (i < 0) return -1;
    const e = this.#v6e;
    const o = i * 4;
    if (cmp4(e[o]!, e[o + 1]!, e[o + 2]!, e[o + 3]!, w0, w1, w2, w3) < 0) return -1;
    return this.#v6v[i]!;
  }

  #anyV6(lo: Uint32Array, hi: Uint32Array): boolean {
    const i = this.#lastStartLe(hi[0]!, hi[1]!, hi[2]!, hi[3]!);
    if (i < 0) return false;
    const e = this.#v6e;
    const o = i * 4;
    return cmp4(e[o]!, e[o + 1]!, e[o + 2]!, e[o + 3]!, lo[0]!, lo[1]!, lo[2]!, lo[3]!) >= 0;
  }

  /**
   * Every record of the zone as a standard DNS server would hold it (AXFR, BIND export): SOA, NS, host
   * records, then one name per listed address or one wildcard per octet- or nibble-aligned block ("*.2.0.192"
   * for 192.0.2.0/24). A wildcard's TXT can't name the queried address, so "$" becomes the block ("192.0.2.0/24").
   * Names are relative to the apex ("" is the apex).
   */
  *records(): Generator<ZoneRecord> {
    yield { name: '', type: 'SOA', ttl: this.apexTtl, data: this.soa };
    for (const g of this.recordGroups()) yield* g.records;
  }

  /**
   * The records of records() but the SOA, in groups that share a key: one group per apex record ("0" + the
   * record), then one per listed name (A and its TXT) keyed "4" + 8 or "6" + 32 hex digits of the first address of
   * its block. Listing groups come in ascending key order (so two zones diff in one merge pass: journal.ts); apex
   * groups come first, in no particular order.
   */
  *recordGroups(): Generator<{ readonly key: string; readonly records: readonly ZoneRecord[] }> {
    for (const ns of this.ns) {
      const r: ZoneRecord = { name: '', type: 'NS', ttl: this.apexTtl, data: ns };
      yield { key: `0NS ${ns}`, records: [r] };
    }
    for (const [name, h] of this.#hosts) {
      for (const a of h.aText) yield { key: `0A ${name} ${a}`, records: [{ name, type: 'A', ttl: this.apexTtl, data: a }] };
      for (const a of h.aaaaText) yield { key: `0AAAA ${name} ${a}`, records: [{ name, type: 'AAAA', ttl: this.apexTtl, data: a }] };
    }
    for (let i = 0; i < this.#n4; i++) {
      const v = this.#values[this.#v4[3 * i + 2]!]!;
      let s = this.#v4[3 * i]!;
      const e = this.#v4[3 * i + 1]!;
      while (s <= e) {
        let k = 24;
        while (k > 0 && (s % 2 ** k !== 0 || s + 2 ** k - 1 > e)) k -= 8;
        const size = 2 ** k;
        const octets = [s >>> 24, (s >>> 16) & 255, (s >>> 8) & 255, s & 255].slice(0, 4 - k / 8).reverse();
        const name = k === 0 ? octets.join('.') : `*.${octets.join('.')}`;
        const subst = k === 0 ? numberToIpv4(s) : `${numberToIpv4(s)}/${32 - k}`;
        const a: ZoneRecord = { name, type: 'A', ttl: this.ttl, data: v.code };
        yield { key: `4${s.toString(16).padStart(8, '0')}`, records: v.parts !== null ? [a, { name, type: 'TXT', ttl: this.ttl, data: v.parts.join(subst) }] : [a] };
        s += size;
      }
    }
    for (let i = 0; i < this.#v6v.length; i++) {
      const v = this.#values[this.#v6v[i]!]!;
      let s = 0n;
      let e = 0n;
      for (let k = 0; k < 4; k++) {
        s = (s << 32n) | BigInt(this.#v6s[i * 4 + k]!);
        e = (e << 32n) | BigInt(this.#v6e[i * 4 + k]!);
      }
      while (s <= e) {
        let k = 124;
        while (k > 0 && ((s & ((1n << BigInt(k)) - 1n)) !== 0n || s + (1n << BigInt(k)) - 1n > e)) k -= 4;
        const hex = s.toString(16).padStart(32, '0');
        const nibbles = [...hex.slice(0, 32 - k / 4)].reverse().join('.');
        const name = k === 0 ? nibbles : `*.${nibbles}`;
        const subst = k === 0 ? bigintToIpv6(s) : `${bigintToIpv6(s)}/${128 - k}`;
        const a: ZoneRecord = { name, type: 'A', ttl: this.ttl, data: v.code };
        yield { key: `6${hex}`, records: v.parts !== null ? [a, { name, type: 'TXT', ttl: this.ttl, data: v.parts.join(subst) }] : [a] };
        s += 1n << BigInt(k);
      }
    }
  }

  /**
   * The effective entries of the zone, for the rbldnsd exporter: disjoint intervals with their A value and
   * template (exclusions and overlaps already applied).
   */
  *intervals(): Generator<{ family: 4 | 6; first: number | bigint; last: number | bigint; code: string; template: string | null }> {
    for (let i = 0; i < this.#n4; i++) {
      const v = this.#values[this.#v4[3 * i + 2]!]!;
      yield { family: 4, first: this.#v4[3 * i]!, last: this.#v4[3 * i + 1]!, code: v.code, template: v.template };
    }
    for (let i = 0; i < this.#v6v.length; i++) {
      const v = this.#values[this.#v6v[i]!]!;
      let s = 0n;
      let e = 0n;
      for (let k = 0; k < 4; k++) {
        s = (s << 32n) | BigInt(this.#v6s[i * 4 + k]!);
        e = (e << 32n) | BigInt(this.#v6e[i * 4 + k]!);
      }
      yield { family: 6, first: s, last: e, code: v.code, template: v.template };
    }
  }
}

/** The /16 directory of sorted IPv4 interval starts (see Zone.#v4dir), on a SharedArrayBuffer. */
function v4Directory(v4: Uint32Array): Uint32Array {
  const dir = new Uint32Array(new SharedArrayBuffer(65537 * 4));
  const n = v4.length / 3;
  let i = 0;
  for (let h = 0; h <= 65536; h++) {
    const bound = h * 65536;
    while (i < n && v4[3 * i]! < bound) i++;
    dir[h] = i;
  }
  return dir;
}

function cmp4(a0: number, a1: number, a2: number, a3: number, b0: number, b1: number, b2: number, b3: number): number {
  if (a0 !== b0) return a0 < b0 ? -1 : 1;
  if (a1 !== b1) return a1 < b1 ? -1 : 1;
  if (a2 !== b2) return a2 < b2 ? -1 : 1;
  if (a3 !== b3) return a3 < b3 ? -1 : 1;
  return 0;
}
