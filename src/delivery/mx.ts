/**
 * Next hops for a domain (RFC 5321 section 5.1) through an injected resolver (a `dns.promises.Resolver`
 * satisfies MxResolver; `dns.lookup()` would ignore its servers, so it is never used).
 *
 * - MX records in preference order, equal preferences shuffled; at most `maxHosts` hosts, `maxAddresses`
 *   addresses in all (Postfix smtp_mx_address_limit).
 * - No MX records (ENODATA): implicit MX, the domain's own A/AAAA (OB-10).
 * - Null MX, `MX 0 .` (RFC 7505): bounce 5.1.10 without connecting (OB-11).
 * - NXDOMAIN (ENOTFOUND): bounce 5.4.4 "Host or domain name not found" (OB-09).
 * - SERVFAIL, timeout, REFUSED and anything else: defer 4.4.3 (OB-08, OB-12: a broken local resolver must not
 *   bounce mail).
 * - Loops (RL-28, OB-15): an address that is one of our own listeners (`self`: address and port; an unspecified
 *   listener address 0.0.0.0 / :: matches every loopback address) truncates the MX list at that host's
 *   preference, like Postfix; nothing left → bounce 5.4.6 "mail for X loops back to myself". Loopback and
 *   unspecified addresses count as ourselves unless `allowLoopback` (tests on 127.0.0.1 set it and rely on the
 *   port to tell the test peer from our own listener); private, link-local and other non-global addresses are
 *   refused (5.4.6) unless `allowPrivate`.
 * Port: MX records carry none; every hop gets `port` (25 in production, the fake peer's port in tests).
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { bounced, deferred, type LocalFailure } from './outcome.ts';

export interface MxResolver {
  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

export interface NextHop {
  /** The MX host name (or the domain for an implicit MX, or "[192.0.2.1]" for a literal). */
  readonly host: string;
  readonly address: string;
  readonly port: number;
  readonly preference: number;
}

export type MxResult =
  | { readonly ok: true; readonly hops: readonly NextHop[]; readonly implicit: boolean; readonly notes: readonly string[] }
  | { readonly ok: false; readonly failure: LocalFailure };

export interface SelfEndpoint {
  readonly address: string;
  readonly port: number;
}

export interface MxOptions {
  readonly resolver: MxResolver;
  /** Destination port for every hop. Default 25. A function picks it per host (tests with several peers). */
  readonly port?: number | ((host: string, address: string) => number);
  /** Address families and order. Default 'any' (IPv4 addresses of a host first, then IPv6). */
  readonly families?: 'ipv4' | 'ipv6' | 'any';
  /** Our own listening endpoints (MX listeners): mail resolving to one of them is a loop. */
  readonly self?: readonly SelfEndpoint[];
  /** Treat loopback / unspecified addresses as ordinary next hops (tests). Default false. */
  readonly allowLoopback?: boolean;
  /** Allow RFC 1918 / ULA / link-local next hops. Default false. */
  readonly allowPrivate?: boolean;
  /** Most MX hosts tried. Default 5. */
  readonly maxHosts?: number;
  /** Most addresses in all. Default 5. */
  readonly maxAddresses?: number;
  /** [0,1) for shuffling equal preferences. Default Math.random. */
  readonly random?: () => number;
  readonly signal?: AbortSignal;
}

const PERMANENT_CODES = new Set(['ENOTFOUND']);
const NODATA = 'ENODATA';

function codeOf(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'EUNKNOWN';
}

function describe(code: string): string {
  switch (code) {
    case 'ENOTFOUND': return 'Host not found';
    case 'ENODATA': return 'No data record of requested type';
    case 'ESERVFAIL': return 'Server failure (SERVFAIL)';
    case 'ETIMEOUT': return 'Timed out';
    case 'EREFUSED': return 'Query refused (REFUSED)';
    default: return `Lookup failed (${code})`;
  }
}

/** Waits for p, or throws signal.reason once the signal aborts (the DNS query itself is left to time out). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e: unknown) => { signal.removeEventListener('abort', onAbort); reject(e as Error); },
    );
  });
}

type AddressClass = 'ok' | 'self' | 'loopback' | 'private';

function classify(address: string, port: number, options: MxOptions): AddressClass {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.process(address);
  } catch {
    return 'private';
  }
  const norm = parsed.toString();
  const range = parsed.range();
  const isLoop = range === 'loopback' || range === 'unspecified';
  for (const s of options.self ?? []) {
    if (s.port !== port) continue;
    let sa: string;
    try {
      const p = ipaddr.process(s.address);
      if (p.range() === 'unspecified') {
        if (isLoop) return 'self';
        continue;
      }
      sa = p.toString();
    } catch {
      continue;
    }
    if (sa === norm) return 'self';
  }
  if (isLoop) return options.allowLoopback ? 'ok' : 'loopback';
  if (range === 'unicast') return 'ok';
  return options.allowPrivate ? 'ok' : 'private';
}

function shuffleEqual<T extends { priority: number }>(records: T[], random: () => number): T[] {
  const copy = records.map((r) => ({ r, k: random() }));
  copy.sort((a, b) => a.r.priority - b.r.priority || a.k - b.k);
  return copy.map((x) => x.r);
}

interface HostAddresses {
  readonly addresses: string[];
  /** The lookup failed temporarily for at least one family and found nothing. */
  readonly temporary: string | null;
  /** Why there is no address, for diagnostics. */
  readonly why: string | null;
}

async function addressesOf(host: string, options: MxOptions): Promise<HostAddresses> {
  const families = options.families ?? 'any';
  const lookups: Promise<string[]>[] = [];
  const names: string[] = [];
  if (families !== 'ipv6') { lookups.push(options.resolver.resolve4(host)); names.push('A'); }
  if (families !== 'ipv4') { lookups.push(options.resolver.resolve6(host)); names.push('AAAA'); }
  const settled = await abortable(Promise.allSettled(lookups), options.signal);
  const addresses: string[] = [];
  let temporary: string | null = null;
  let why: string | null = null;
  settled.forEach((s, i) => {
    if (s.status === 'fulfilled') {
      for (const a of s.value) if (isIP(a) !== 0 && !addresses.includes(a)) addresses.push(a);
    } else {
      const code = codeOf(s.reason);
      const text = `Name service error for name=${host} type=${names[i]}: ${describe(code)}`;
      if (code !== NODATA && !PERMANENT_CODES.has(code)) temporary ??= text;
      why ??= text;
    }
  });
  if (addresses.length > 0) return { addresses, temporary: null, why: null };
  return { addresses, temporary, why: why ?? `Name service error for name=${host}: no address records` };
}

/** Resolves the next hops of `domain` (canonical: lower case, no trailing dot; or an address literal). */
export async function resolveNextHops(domain: string, options: MxOptions): Promise<MxResult> {
  const portOption = options.port ?? 25;
  const portOf = (host: string, address: string): number => (typeof portOption === 'function' ? portOption(host, address) : portOption);
  const maxHosts = options.maxHosts ?? 5;
  const maxAddresses = options.maxAddresses ?? 5;
  const random = options.random ?? Math.random;

  // Address literal: no DNS at all.
  const lit = /^\[(?:IPv6:)?([^\]]+)\]$/i.exec(domain);
  if (lit) {
    const address = lit[1]!;
    if (isIP(address) === 0) return { ok: false, failure: bounced('5.1.2', `Bad address literal ${domain}`) };
    const port = portOf(domain, address);
    const cls = classify(address, port, options);
    if (cls !== 'ok') return { ok: false, failure: loopFailure(domain, cls) };
    return { ok: true, hops: [{ host: domain, address, port, preference: 0 }], implicit: true, notes: [] };
  }
  if (domain === '' || domain.length > 255) return { ok: false, failure: bounced('5.1.2', `Bad destination domain "${domain.slice(0, 64)}"`) };

  let hosts: { exchange: string; priority: number }[];
  let implicit = false;
  try {
    hosts = await abortable(options.resolver.resolveMx(domain), options.signal);
  } catch (err) {
    if (options.signal?.aborted) throw err;
    const code = codeOf(err);
    if (code === NODATA) {
      implicit = true;
      hosts = [{ exchange: domain, priority: 0 }];
    } else if (code === 'ENOTFOUND') {
      return { ok: false, failure: bounced('5.4.4', `Host or domain name not found. Name service error for name=${domain} type=MX: Host not found`) };
    } else {
      return { ok: false, failure: deferred('4.4.3', `Host or domain name lookup failed. Name service error for name=${domain} type=MX: ${describe(code)}`) };
    }
  }
  if (!implicit && hosts.length === 0) {
    implicit = true;
    hosts = [{ exchange: domain, priority: 0 }];
  }
  if (!implicit) {
    // RFC 7505: a null MX is the single record "0 ."; any record with an empty exchange is ignored otherwise.
    const real = hosts.filter((h) => typeof h.exchange === 'string' && h.exchange.replace(/\.$/, '') !== '');
    if (real.length === 0) {
      return { ok: false, failure: bounced('5.1.10', `Domain ${domain} does not accept mail (nullMX)`) };
    }
    hosts = shuffleEqual(real.map((h) => ({ exchange: h.exchange.toLowerCase().replace(/\.$/, ''), priority: h.priority })), random);
  }

  const candidates = hosts.slice(0, maxHosts);
  const resolved = await Promise.all(candidates.map(async (h) => {
    if (isIP(h.exchange) !== 0) return { h, a: { addresses: [h.exchange], temporary: null, why: null } satisfies HostAddresses };
    return { h, a: await addressesOf(h.exchange, options) };
  }));

  const hops: NextHop[] = [];
  const notes: string[] = [];
  let temporary: string | null = null;
  let permanent: string | null = null;
  let loop: AddressClass | null = null;
  let cutoff = Infinity;
  for (const { h, a } of resolved) {
    if (h.priority >= cutoff) break;
    if (a.addresses.length === 0) {
      if (a.temporary !== null) temporary ??= a.temporary;
      else permanent ??= a.why;
      notes.push(a.why ?? `${h.exchange}: no address`);
      continue;
    }
    const ok: string[] = [];
    let selfHere = false;
    for (const address of a.addresses) {
      const cls = classify(address, portOf(h.exchange, address), options);
      if (cls === 'ok') ok.push(address);
      else if (cls === 'self') selfHere = true;
      else { loop ??= cls; notes.push(`${h.exchange}[${address}]: refused (${cls} address)`); }
    }
    if (selfHere) {
      // We are this MX: only better-preference hosts may take the mail (RFC 5321 section 5.1).
      loop = 'self';
      cutoff = h.priority;
      while (hops.length > 0 && hops[hops.length - 1]!.preference >= cutoff) hops.pop();
      break;
    }
    for (const address of ok) hops.push({ host: h.exchange, address, port: portOf(h.exchange, address), preference: h.priority });
  }
  if (hops.length > 0) return { ok: true, hops: hops.slice(0, maxAddresses), implicit, notes };
  if (loop !== null) return { ok: false, failure: loopFailure(domain, loop) };
  if (temporary !== null) return { ok: false, failure: deferred('4.4.3', `Host or domain name lookup failed. ${temporary}`) };
  return { ok: false, failure: bounced('5.4.4', `Host or domain name not found. ${permanent ?? `No address for ${domain}`}`) };
}

function loopFailure(domain: string, cls: AddressClass): LocalFailure {
  if (cls === 'private') return bounced('5.4.6', `mail for ${domain} would go to a private or reserved address (refused)`);
  return bounced('5.4.6', `mail for ${domain} loops back to myself`);
}
