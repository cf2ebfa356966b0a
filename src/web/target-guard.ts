/**
 * The web tester's SSRF guard: a run started from the dashboard or the API may test only global unicast addresses,
 * so the form cannot be turned against the operator's own network. Refused unless inside web.tester.allowTargets:
 * loopback, private (RFC 1918), unique-local, link-local, CGNAT (100.64/10), multicast, broadcast, unspecified, and
 * every reserved or special-purpose range ipaddr.js knows (documentation, benchmarking, 6to4, Teredo, NAT64, ...).
 * An IPv4-mapped IPv6 address is judged as the IPv4 address it carries. The caller checks every address a name
 * resolved to (and then tests exactly those: the run replays the answers it checked, no second lookup).
 */
import ipaddr from 'ipaddr.js';
import { NetworkList } from '../policy/networks.ts';

export const ERR_TESTER_TARGET_FORBIDDEN = 'ERR_TESTER_TARGET_FORBIDDEN';

/** Words for the refusal message. */
const RANGE_TEXT: Readonly<Record<string, string>> = {
  loopback: 'a loopback address', private: 'a private address (RFC 1918)', uniqueLocal: 'a unique-local address', linkLocal: 'a link-local address',
  carrierGradeNat: 'a carrier-grade NAT address (RFC 6598)', multicast: 'a multicast address', broadcast: 'the broadcast address',
  unspecified: 'the unspecified address', reserved: 'a reserved address', deprecatedSiteLocal: 'a site-local address',
};

export class TargetGuard {
  readonly #allow: NetworkList;

  constructor(allowTargets: readonly string[]) {
    this.#allow = new NetworkList(allowTargets);
  }

  /** Null when `address` may be tested; else why not ("127.0.0.1 is a loopback address"). */
  refusal(address: string): string | null {
    let parsed: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      parsed = ipaddr.process(address);
    } catch {
      return `${address} is not an IP address`;
    }
    const range = parsed.range();
    if (range === 'unicast') return null;
    if (this.#allow.contains(parsed.toString())) return null;
    return `${parsed.toString()} is ${RANGE_TEXT[range] ?? `a special-purpose address (${range})`}`;
  }
}
