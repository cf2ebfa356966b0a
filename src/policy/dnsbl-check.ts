/**
 * DNSBL scoring at the relay, postscreen-style (pure: no I/O). The lookups happen at connect (src/dnsbl/lookup.ts);
 * this decides, at RCPT, from their results:
 *
 *   score = sum of the weights of the zones that list the client; blocked when at least one zone lists it and
 *   score >= threshold (Postfix postscreen_dnsbl_sites / postscreen_dnsbl_threshold; threshold default 1).
 *
 * - Only a clean "listed" answer counts. A DNS failure (timeout, SERVFAIL, ...) never blocks: fail open, the zone
 *   simply adds nothing (hostile-inputs DB-05: never a 5xx because of a DNS failure). A broken answer (outside
 *   127.0.0.0/8, a 127.255.255.x error code) or a zone the health check disabled adds nothing either.
 * - Trusted networks and authenticated sessions are never blocked (Postfix: permit_mynetworks and
 *   permit_sasl_authenticated before reject_rbl_client). The lookup runs at connect, but the decision is taken at
 *   RCPT, when AUTH has happened: a user on a listed dynamic address can still submit after AUTH.
 * - The reply names the listing zone with the largest weight (first in configuration order on a tie) and its TXT:
 *   `554 5.7.1 Service unavailable; Client host [ip] blocked using ZONE; REASON` (Postfix default_rbl_reply;
 *   "; REASON" only when the zone gave a TXT). The TXT comes from a stranger's DNS: it is cut to printable ASCII
 *   and MAX_REASON characters.
 */
import type { Reply } from '../core/reply.ts';

export type DnsblZoneStatus = 'listed' | 'not-listed' | 'broken' | 'error' | 'disabled';

/** One zone's lookup result as the scorer needs it (src/dnsbl/lookup.ts results fit this shape). */
export interface DnsblZoneResult {
  readonly zone: string;
  readonly weight: number;
  readonly kind: DnsblZoneStatus;
  /** A record values, when listed. */
  readonly codes?: readonly string[] | undefined;
  /** TXT reason, when listed and published. */
  readonly txt?: string | null | undefined;
}

export interface DnsblCheckInput {
  /** The client address (as the relay saw it). */
  readonly ip: string;
  readonly results: readonly DnsblZoneResult[];
  /** Score at which the client is blocked; must be > 0 (default 1). */
  readonly threshold?: number | undefined;
  /** The client is in trustedNetworks. */
  readonly trusted?: boolean | undefined;
  /** The authenticated user, or null. */
  readonly user?: string | null | undefined;
}

interface DecisionBase {
  readonly score: number;
  /** Zones that list the client, in result order. */
  readonly listedIn: readonly string[];
  /** Zones whose lookup failed or whose answer was unusable (ignored). */
  readonly ignored: readonly string[];
}

export type DnsblDecision =
  | (DecisionBase & { readonly blocked: false; readonly exempt: 'trusted' | 'authenticated' | null })
  | (DecisionBase & { readonly blocked: true; readonly zone: string; readonly reason: string | null; readonly reply: Reply });

export const MAX_REASON = 200;
export const DEFAULT_DNSBL_THRESHOLD = 1;

/** A TXT reason fit for a reply line: printable ASCII, blanks collapsed, at most MAX_REASON characters. */
export function cleanReason(txt: string | null | undefined): string | null {
  if (txt === null || txt === undefined) return null;
  const s = txt.replace(/[^\x20-\x7e]+/g, ' ').replace(/\s+/g, ' ').trim();
  if (s === '') return null;
  return s.length > MAX_REASON ? `${s.slice(0, MAX_REASON - 3)}...` : s;
}

/** The reject reply: `554 5.7.1 Service unavailable; Client host [ip] blocked using ZONE; REASON`. */
export function dnsblReply(ip: string, zone: string, reason: string | null): Reply {
  const host = ip.replace(/[^0-9A-Fa-f.:]/g, '?');
  const z = zone.replace(/[^\x21-\x7e]/g, '?');
  return { code: 554, enhanced: '5.7.1', text: `Service unavailable; Client host [${host}] blocked using ${z}${reason ? `; ${reason}` : ''}` };
}

export function evaluateDnsbl(input: DnsblCheckInput): DnsblDecision {
  const threshold = input.threshold ?? DEFAULT_DNSBL_THRESHOLD;
  if (!(threshold > 0) || !Number.isFinite(threshold)) throw new RangeError(`DNSBL threshold must be a positive number, got ${threshold}`);
  let score = 0;
  let best: DnsblZoneResult | null = null;
  const listedIn: string[] = [];
  const ignored: string[] = [];
  for (const r of input.results) {
    if (r.kind === 'listed') {
      if (!Number.isFinite(r.weight)) continue;
      score += r.weight;
      listedIn.push(r.zone);
      if (best === null || r.weight > best.weight) best = r;
    } else if (r.kind !== 'not-listed') {
      ignored.push(r.zone);
    }
  }
  const base = { score, listedIn, ignored };
  if (input.trusted) return { ...base, blocked: false, exempt: 'trusted' };
  if (input.user !== null && input.user !== undefined) return { ...base, blocked: false, exempt: 'authenticated' };
  if (best === null || score < threshold) return { ...base, blocked: false, exempt: null };
  const reason = cleanReason(best.txt);
  return { ...base, blocked: true, zone: best.zone, reason, reply: dnsblReply(input.ip, best.zone, reason) };
}
