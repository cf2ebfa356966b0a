/**
 * Is a domain ours? The one answer the receive path (relay policy, recipient tables) and the deliver path (routing)
 * both use, so that an address accepted as local is delivered locally and an address delivered outward was
 * relayed on purpose. Field report 1, F1: `x@[127.0.0.1]` was local at RCPT and remote at delivery, and the
 * delivery loop became a bounce that carried an attacker's message to a forged sender.
 *
 * Ours are: the local domains (config plus database), and address literals naming this host, that is one of its
 * interface or listener addresses, any loopback address, or the unspecified address, in every textual form
 * ("[IPv6:::ffff:127.0.0.1]" is "[127.0.0.1]"), like Postfix's treatment of [own ip] as $mydestination.
 * Domains given here are compared in canonical form (core/canonical.ts).
 */
import { canonicalIp, canonicalMailDomain, isLoopbackOrUnspecified } from './canonical.ts';

export interface Locality {
  /** True when mail for this domain (canonical or not: it is folded here) is ours to deliver. */
  isLocal(domain: string): boolean;
  /** True when the domain is an address literal naming this host. */
  isOwnLiteral(domain: string): boolean;
}

export interface LocalityOptions {
  /** Canonical local domains; read at each call, so domains added while running apply at once. */
  readonly domains: () => ReadonlySet<string>;
  /** This host's addresses (any textual form); read at each call. */
  readonly ownAddresses: () => Iterable<string>;
}

export function createLocality(options: LocalityOptions): Locality {
  let cachedFrom: Iterable<string> | null = null;
  let cached = new Set<string>();
  const own = (): ReadonlySet<string> => {
    const src = options.ownAddresses();
    if (src !== cachedFrom) {
      const next = new Set<string>();
      for (const a of src) {
        const c = canonicalIp(a.startsWith('[') && a.endsWith(']') ? a.slice(1, -1) : a);
        if (c !== null) next.add(c);
      }
      cached = next;
      cachedFrom = src;
    }
    return cached;
  };
  const isOwnLiteral = (domain: string): boolean => {
    const { ip } = canonicalMailDomain(domain);
    if (ip === null) return false;
    return isLoopbackOrUnspecified(ip) || own().has(ip);
  };
  return {
    isOwnLiteral,
    isLocal(domain) {
      const c = canonicalMailDomain(domain);
      if (c.ip !== null) return isOwnLiteral(c.domain);
      return c.domain !== '' && options.domains().has(c.domain);
    },
  };
}
