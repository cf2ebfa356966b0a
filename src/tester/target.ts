/**
 * Targets and ports: what the user typed → the addresses and (port, role, transports) units the runner tests.
 * A target is an IP address (v4 or v6, brackets and an "IPv6:" prefix allowed), a host name (every A and AAAA,
 * each tested separately) or a mail domain (every MX host, then every A and AAAA of each). A name with MX records
 * is a domain unless `mx: false`; one without is a host. DNS goes through an injected resolver, so tests never
 * leave the machine.
 */
import { isIP } from 'node:net';
import { promises as dns } from 'node:dns';
import { normalizeIp } from '../core/address.ts';
import { RelayguardError } from '../core/errors.ts';

export type PortRole = 'mx' | 'submission' | 'submissions';
export type Transport = 'plain' | 'starttls' | 'implicit';

export interface PortSpec {
  readonly port: number;
  /** mx: relay must be refused, local domains accepted. submission(s): AUTH before MAIL. */
  readonly role: PortRole;
}

export const DEFAULT_PORTS: readonly PortSpec[] = Object.freeze([
  { port: 25, role: 'mx' }, { port: 587, role: 'submission' }, { port: 465, role: 'submissions' },
]);

const WELL_KNOWN: Readonly<Record<number, PortRole>> = { 25: 'mx', 587: 'submission', 465: 'submissions' };

/** "25", "587", "465", "2525:mx", "2587:submission", "2465:submissions" (implicit TLS). Throws RangeError. */
export function parsePortSpec(text: string): PortSpec {
  const m = /^(\d{1,5})(?::(mx|submission|submissions))?$/i.exec(text.trim());
  const port = Number(m?.[1]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`Bad port "${text}": give PORT or PORT:ROLE with ROLE mx, submission or submissions (implicit TLS)`);
  }
  const role = (m[2]?.toLowerCase() as PortRole | undefined) ?? WELL_KNOWN[port] ?? 'mx';
  return { port, role };
}

/** The transports tested on a port: plain then after STARTTLS, or implicit TLS for 'submissions'. */
export function transportsFor(role: PortRole, options: { tlsOnly?: boolean; noStartTls?: boolean } = {}): Transport[] {
  if (role === 'submissions') return ['implicit'];
  if (options.tlsOnly) return ['starttls'];
  if (options.noStartTls) return ['plain'];
  return ['plain', 'starttls'];
}

export interface ResolvedTarget {
  /** What the user typed. */
  readonly input: string;
  /** The IP address tested (normalized; IPv6 in RFC 5952 form). */
  readonly address: string;
  readonly family: 4 | 6;
  /** Host name, when known (the MX host or the name given). */
  readonly hostName: string | null;
  /** Mail domain, when the target was a domain (or one was given). */
  readonly domain: string | null;
  /** The MX record this address came from. */
  readonly mx: { readonly exchange: string; readonly priority: number } | null;
}

export interface TargetResolver {
  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]>;
  /** A and AAAA of a name (getaddrinfo: /etc/hosts too). */
  lookup(name: string): Promise<{ address: string; family: number }[]>;
}

/** The system resolver (node:dns). */
export const SYSTEM_RESOLVER: TargetResolver = {
  resolveMx: (name) => dns.resolveMx(name),
  lookup: (name) => dns.lookup(name, { all: true, verbatim: true }),
};

const HOST_NAME = /^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** The bare, normalized IP of an IP target ("[IPv6:::1]", "[::1]", "::1", "127.0.0.1"), or null. */
export function parseIpTarget(text: string): string | null {
  let t = text.trim();
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  if (/^ipv6:/i.test(t)) t = t.slice(5);
  if (isIP(t) === 0) return null;
  return normalizeIp(t);
}

/** True for a syntactically valid host or domain name. */
export function isHostName(text: string): boolean {
  return HOST_NAME.test(text) && !/^[0-9.]+$/.test(text);
}

const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND', 'ESERVFAIL', 'NODATA', 'NOTFOUND']);

export interface ResolveOptions {
  readonly resolver?: TargetResolver;
  /** Look up MX records (domain mode). Default true. */
  readonly mx?: boolean;
  /** Only this address family. */
  readonly family?: 4 | 6;
  /** Mail domain to use for IP and host targets (D). */
  readonly domain?: string;
}

/**
 * Resolves one target to the addresses to test. Throws RangeError for a malformed target and a RelayguardError
 * ERR_TESTER_RESOLVE when a name has no address.
 */
export async function resolveTarget(input: string, options: ResolveOptions = {}): Promise<ResolvedTarget[]> {
  const resolver = options.resolver ?? SYSTEM_RESOLVER;
  const ip = parseIpTarget(input);
  const givenDomain = options.domain?.toLowerCase() ?? null;
  const wanted = (family: number): boolean => options.family === undefined || options.family === family;
  if (ip !== null) {
    const family = isIP(ip) as 4 | 6;
    if (!wanted(family)) return [];
    return [{ input, address: ip, family, hostName: null, domain: givenDomain, mx: null }];
  }
  const name = input.trim().replace(/\.$/, '').toLowerCase();
  if (!isHostName(name)) throw new RangeError(`Bad target "${input}": give an IP address, a host name or a mail domain`);
  let mxs: { exchange: string; priority: number }[] = [];
  if (options.mx !== false) {
    try {
      mxs = await resolver.resolveMx(name);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !NO_RECORDS.has(code)) throw resolveError(`Cannot look up the MX records of ${name}: ${String(code ?? err)}`, err);
    }
  }
  // RFC 7505 null MX ("." / "") means: no mail accepted for this domain.
  mxs = mxs.filter((m) => m.exchange !== '' && m.exchange !== '.').sort((a, b) => a.priority - b.priority);
  const hosts = mxs.length > 0
    ? mxs.map((m) => ({ host: m.exchange.toLowerCase().replace(/\.$/, ''), mx: { exchange: m.exchange, priority: m.priority } }))
    : [{ host: name, mx: null }];
  const domain = mxs.length > 0 ? name : givenDomain;
  const out: ResolvedTarget[] = [];
  const seen = new Set<string>();
  for (const h of hosts) {
    let addrs: { address: string; family: number }[];
    try {
      addrs = await resolver.lookup(h.host);
    } catch (err) {
      if (mxs.length > 0) continue; // another MX may resolve
      throw resolveError(`Cannot resolve ${h.host}: ${String((err as { code?: unknown }).code ?? err)}`, err);
    }
    for (const a of addrs) {
      const address = normalizeIp(a.address);
      if (address === null || !wanted(a.family) || seen.has(address)) continue;
      seen.add(address);
      out.push({ input, address, family: a.family === 6 ? 6 : 4, hostName: h.host, domain, mx: h.mx });
    }
  }
  if (out.length === 0) throw resolveError(`${name} has no ${options.family ? `IPv${options.family} ` : ''}address to test`);
  return out;
}

function resolveError(message: string, cause?: unknown): RelayguardError {
  return new RelayguardError('ERR_TESTER_RESOLVE', message, cause === undefined ? undefined : { cause });
}
