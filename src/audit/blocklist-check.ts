/**
 * Check 3, blocklists: every address this server receives on or sends from, against a set of DNSBL zones. Each
 * zone is first health-checked with the RFC 5782 section 5 test points (DnsblClient.checkZone: 127.0.0.2 listed,
 * 127.0.0.1 not; a zone whose policy is 'unlisted-only' is only asked for 127.0.0.1), so:
 *   - a zone that does not answer is 'unreachable' (blocklist.zone-unreachable), never "clean" or "listed";
 *   - a zone that lists 127.0.0.1 (lists the world) or answers garbage is 'broken' (blocklist.zone-broken) and its
 *     answers about our addresses are not asked for at all;
 *   - a healthy zone's answer: 'blocklist.listed' (critical, with the zone's TXT reason and its delisting link),
 *     'blocklist.clean' (ok), or per-address 'unreachable' when the lookup itself fails.
 * Addresses: audit.addresses when configured, else the listeners' bound addresses (interfaces of a wildcard bind),
 * without loopback, private and reserved addresses (public lists do not list them).
 *
 * Trust: DNS queries only, to the configured servers of each zone or the system resolver.
 */
import { networkInterfaces } from 'node:os';
import { promises as dnsPromises } from 'node:dns';
import ipaddr from 'ipaddr.js';
import { DnsblClient, type DnsblResolver } from '../dnsbl/index.ts';
import type { Finding } from './finding.ts';
import type { AuditCheck } from './run.ts';

export type TestPointPolicy = 'rfc5782' | 'unlisted-only';

export interface BlocklistZone {
  readonly zone: string;
  /** DNS servers ("ip" or "ip:port") for this zone; empty: the check's default. */
  readonly servers: readonly string[];
  /** Delisting page; "$" is replaced by the address. Null: the link found in the TXT reason, if any. */
  readonly delistUrl: string | null;
  readonly testPoints: TestPointPolicy;
}

/** Loopback, private, link-local, documentation and other reserved addresses: not on public lists. */
export function isPublicAddress(ip: string): boolean {
  try {
    return ipaddr.process(ip).range() === 'unicast';
  } catch {
    return false;
  }
}

/**
 * The addresses to check: `configured` when not empty (kept as given, loopback included), else the listeners'
 * bind addresses (a wildcard bind: this host's interface addresses of that family), public ones only, unique.
 */
export function auditAddresses(
  configured: readonly string[],
  listeners: readonly { address: string }[],
  interfaces: () => string[] = interfaceAddresses,
): string[] {
  if (configured.length > 0) return [...new Set(configured)];
  const out = new Set<string>();
  for (const l of listeners) {
    const candidates = l.address === '0.0.0.0' ? interfaces().filter((a) => !a.includes(':'))
      : l.address === '::' ? interfaces()
        : [l.address];
    for (const a of candidates) if (isPublicAddress(a)) out.add(a);
  }
  return [...out];
}

function interfaceAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.replace(/%.*$/, '')));
}

/** The first http(s) link in a TXT reason. */
export function linkIn(txt: string | null): string | null {
  const m = txt === null ? null : /https?:\/\/[^\s"'<>]+/i.exec(txt);
  return m ? m[0].replace(/[).,;]+$/, '') : null;
}

export interface BlocklistCheckOptions {
  readonly zones: readonly BlocklistZone[];
  /** The addresses, asked at each run. */
  readonly addresses: () => readonly string[];
  /** Servers for zones that name none; empty: the system resolver. */
  readonly servers: readonly string[];
  /** One DNS answer, ms. Default 5000. */
  readonly dnsTimeoutMs?: number;
  /** Builds the resolver of a zone (tests); default node:dns with setServers. */
  readonly resolver?: (servers: readonly string[], timeoutMs: number) => DnsblResolver;
  readonly timeoutMs?: number;
}

function systemResolver(servers: readonly string[], timeoutMs: number): DnsblResolver {
  const r = new dnsPromises.Resolver({ timeout: timeoutMs, tries: 1 });
  if (servers.length > 0) r.setServers([...servers]);
  return r;
}

export function blocklistCheck(options: BlocklistCheckOptions): AuditCheck {
  const timeoutMs = options.dnsTimeoutMs ?? 5000;
  const makeResolver = options.resolver ?? systemResolver;
  return {
    name: 'blocklist',
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    async run({ signal }) {
      const addresses = options.addresses();
      if (addresses.length === 0) {
        return [{
          check: 'blocklist.no-addresses', subject: 'addresses', severity: 'warning',
          summary: 'no public address to check (listeners bind loopback or private addresses only): list the addresses the server receives on and sends from in audit.addresses',
        }];
      }
      if (options.zones.length === 0) return [{ check: 'blocklist.no-zones', subject: 'audit.blocklists', severity: 'warning', summary: 'no blocklist zone configured (audit.blocklists is empty)' }];
      const perZone = await Promise.all(options.zones.map((z) => checkZone(z, addresses, makeResolver(z.servers.length > 0 ? z.servers : options.servers, timeoutMs), timeoutMs, signal)));
      return perZone.flat();
    },
  };
}

async function checkZone(z: BlocklistZone, addresses: readonly string[], resolver: DnsblResolver, timeoutMs: number, signal: AbortSignal): Promise<Finding[]> {
  // A fresh client per run: no cache between audits, no periodic health checks of its own.
  const client = new DnsblClient({ resolver, zones: [{ zone: z.zone, weight: 1 }], timeoutMs, negativeTtlMs: 0, minTtlMs: 0 });
  const health = z.testPoints === 'rfc5782' ? await client.checkZone(z.zone) : await unlistedOnly(client, z.zone);
  const zoneDetail = { zone: z.zone, health: health.status, healthDetail: health.detail, servers: z.servers, testPoints: z.testPoints };
  if (health.status === 'unreachable') {
    return [{ check: 'blocklist.zone-unreachable', subject: z.zone, severity: 'unreachable', summary: `${z.zone} did not answer its test points: ${health.detail}; listings unknown`, detail: zoneDetail }];
  }
  if (health.status !== 'healthy') {
    return [{
      check: 'blocklist.zone-broken', subject: z.zone, severity: 'broken', detail: zoneDetail,
      summary: `${z.zone} fails the RFC 5782 test points (${health.status}: ${health.detail}); its answers are ignored`,
    }];
  }
  const out: Finding[] = [];
  for (const ip of addresses) {
    if (signal.aborted) break;
    const r = await client.lookup(ip, z.zone);
    const subject = `${ip} in ${z.zone}`;
    const base = { zone: z.zone, address: ip, query: r.name };
    if (r.kind === 'listed') {
      const link = z.delistUrl !== null ? z.delistUrl.replaceAll('$', ip) : linkIn(r.txt);
      out.push({
        check: 'blocklist.listed', subject, severity: 'critical',
        summary: `${ip} is listed in ${z.zone} (${r.codes.join(', ')})${r.txt ? `: ${r.txt}` : ''}${link ? `; delisting: ${link}` : ''}`,
        detail: { ...base, codes: r.codes, reason: r.txt, delistUrl: link },
      });
    } else if (r.kind === 'not-listed') {
      out.push({ check: 'blocklist.clean', subject, severity: 'ok', summary: `${ip} is not listed in ${z.zone}`, detail: base });
    } else if (r.kind === 'broken') {
      out.push({ check: 'blocklist.answer-broken', subject, severity: 'broken', summary: `${z.zone} answered garbage for ${ip} (${r.broken}); ignored`, detail: { ...base, codes: r.codes } });
    } else {
      out.push({ check: 'blocklist.lookup-failed', subject, severity: 'unreachable', summary: `${z.zone} lookup of ${ip} failed (${r.error}: ${r.detail}); listing unknown`, detail: base });
    }
  }
  return out;
}

/** The health of a zone that does not list 127.0.0.2: only "127.0.0.1 is not listed" is asked. */
async function unlistedOnly(client: DnsblClient, zone: string): Promise<{ status: string; detail: string }> {
  const r = await client.lookup('127.0.0.1', zone);
  if (r.kind === 'not-listed') return { status: 'healthy', detail: '127.0.0.1 not listed' };
  if (r.kind === 'error') return { status: 'unreachable', detail: `test point lookup failed: ${r.error} (${r.detail})` };
  return { status: 'lists-the-world', detail: `127.0.0.1 is answered (${r.codes.join(', ')}): the zone lists everything` };
}
