/**
 * Routing: which way each recipient leaves (pure, no I/O). Per recipient domain, first match wins:
 *   1. a per-domain transport entry (`transports`), exact domain match;
 *   2. a local domain → the configured local transport (Maildir, LMTP or SMTP next hop);
 *   3. a smart host, when one is configured → every other recipient goes there;
 *   4. else MX (mx.ts) for the domain, an address literal ([192.0.2.1]) going to that address.
 * Recipients with the same route key form one destination: one connection and, up to the recipient limit,
 * one transaction.
 *
 * Domains are compared in canonical form (core/canonical.ts), and "is it ours" is the same Locality the relay
 * policy decided with (core/locality.ts): an address accepted as local at RCPT, own address literals included, is
 * delivered by the local transport, never routed outward.
 */
import { canonicalDomain, domainOfAddress } from '../core/canonical.ts';
import { createLocality, type Locality } from '../core/locality.ts';

export type TlsMode = 'none' | 'may' | 'required';

export interface SmtpAuthConfig {
  readonly username: string;
  readonly password: string;
  /** Default: PLAIN when offered, else LOGIN. */
  readonly mechanism?: 'PLAIN' | 'LOGIN';
}

export interface SmartHostConfig {
  readonly host: string;
  /** Default 25 (587 is usual with AUTH). */
  readonly port?: number;
  readonly auth?: SmtpAuthConfig;
  /** STARTTLS policy; 'implicit' connects with TLS (port 465). Default 'required' when auth is set, else 'may'. */
  readonly tls?: TlsMode | 'implicit';
  /** Verify the certificate chain and name (with `ca`, or the system CAs). Default true when tls is 'required' or 'implicit'. */
  readonly verifyCertificate?: boolean;
  /** Extra trusted CA certificates (PEM) for verification. */
  readonly ca?: string | readonly string[];
}

export type LocalTransportConfig =
  /** Maildir per recipient: ROOT/<domain>/<local part>/{tmp,new,cur}. */
  | { readonly kind: 'maildir'; readonly root: string }
  /** Accept and drop (Postfix discard(8)): for benchmarks and sink domains. Logged per recipient. */
  | { readonly kind: 'discard' }
  /** LMTP (RFC 2033) next hop. */
  | { readonly kind: 'lmtp'; readonly host: string; readonly port: number }
  /** A plain SMTP next hop (a mailbox server behind us). */
  | { readonly kind: 'smtp'; readonly host: string; readonly port: number; readonly tls?: TlsMode; readonly auth?: SmtpAuthConfig };

export type Route =
  | { readonly kind: 'local'; readonly key: string; readonly transport: LocalTransportConfig | null }
  | { readonly kind: 'smarthost'; readonly key: string; readonly host: string; readonly port: number; readonly auth: SmtpAuthConfig | null;
      readonly tls: TlsMode | 'implicit'; readonly verifyCertificate: boolean; readonly ca: readonly string[] }
  | { readonly kind: 'mx'; readonly key: string; readonly domain: string };

export interface RoutingConfig {
  /** Canonical local domains, or a function giving the current set (domains added while the relay runs). */
  readonly localDomains: readonly string[] | (() => ReadonlySet<string>);
  /** The receive path's locality (local domains and own address literals); built from localDomains when absent. */
  readonly locality?: Locality;
  /** Where mail for local domains goes; null: local mail is deferred (logged) until one is configured. */
  readonly localTransport?: LocalTransportConfig | null;
  readonly smartHost?: SmartHostConfig | null;
  /** Per-domain overrides: 'mx' forces MX routing (bypassing the smart host) or a local transport. */
  readonly transports?: Readonly<Record<string, LocalTransportConfig | 'mx'>>;
}

/** The canonical domain of an address: after the last "@", lower case, no trailing dot ('' if none). */
export function domainOf(address: string): string {
  return domainOfAddress(address);
}

function localKey(t: LocalTransportConfig | null): string {
  if (t === null) return 'local:none';
  switch (t.kind) {
    case 'maildir': return `local:maildir:${t.root}`;
    case 'discard': return 'local:discard';
    case 'lmtp': return `local:lmtp:${t.host}:${t.port}`;
    case 'smtp': return `local:smtp:${t.host}:${t.port}`;
  }
}

export class Router {
  readonly #locality: Locality;
  readonly #config: RoutingConfig;
  readonly #smart: Route | null;

  constructor(config: RoutingConfig) {
    this.#config = config;
    const ld = config.localDomains;
    let domains: () => ReadonlySet<string>;
    if (typeof ld === 'function') {
      domains = ld;
    } else {
      const fixed = new Set(ld.map((d) => canonicalDomain(d) ?? d.toLowerCase()));
      domains = () => fixed;
    }
    this.#locality = config.locality ?? createLocality({ domains, ownAddresses: () => [] });
    const s = config.smartHost ?? null;
    if (s !== null) {
      const port = s.port ?? 25;
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`Bad smart host port ${port}`);
      if (s.host === '' || /[\s\r\n\0]/.test(s.host)) throw new TypeError('Bad smart host name');
      const tls = s.tls ?? (s.auth ? 'required' : 'may');
      this.#smart = {
        kind: 'smarthost', key: `smarthost:${s.host}:${port}`, host: s.host, port, auth: s.auth ?? null, tls,
        verifyCertificate: s.verifyCertificate ?? (tls === 'required' || tls === 'implicit'),
        ca: s.ca === undefined ? [] : typeof s.ca === 'string' ? [s.ca] : [...s.ca],
      };
    } else {
      this.#smart = null;
    }
  }

  /** The route of one recipient address. */
  route(address: string): Route {
    const domain = domainOf(address);
    const override = this.#config.transports?.[domain];
    if (override === 'mx') return { kind: 'mx', key: `mx:${domain}`, domain };
    if (override !== undefined) return { kind: 'local', key: localKey(override), transport: override };
    if (domain === '' || this.#locality.isLocal(domain)) {
      const t = this.#config.localTransport ?? null;
      return { kind: 'local', key: localKey(t), transport: t };
    }
    if (this.#smart !== null) return this.#smart;
    return { kind: 'mx', key: `mx:${domain}`, domain };
  }

  /** Groups addresses by route, keeping envelope order inside each group and the order groups first appear. */
  group<T extends { readonly address: string }>(recipients: readonly T[]): { route: Route; recipients: T[] }[] {
    const groups = new Map<string, { route: Route; recipients: T[] }>();
    for (const r of recipients) {
      const route = this.route(r.address);
      const g = groups.get(route.key);
      if (g) g.recipients.push(r);
      else groups.set(route.key, { route, recipients: [r] });
    }
    return [...groups.values()];
  }
}
