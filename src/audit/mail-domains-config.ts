/**
 * Builds the input of check 4 (checkMailDomains) from the relay's configuration: local domains, the hostname as
 * HELO name, the SMTP listeners (a wildcard listener address is probed on loopback), the DKIM signing keys and the
 * delivery DNS servers. What the configuration does not know is passed in: the public sending addresses, and the
 * DKIM private keys' PEM text (the caller reads the key files; this module does no I/O).
 */
import type { Config } from '../config/schema.ts';
import type { AuditResolver } from './dns.ts';
import type { HttpsFetch } from './https-fetch.ts';
import type { MailDomainsInput } from './mail-domains.ts';

export interface MailDomainsConfigOptions {
  /** Public addresses this server sends from (configured, or found from outbound bind addresses). */
  readonly sendingAddresses: readonly string[];
  /** PEM text of each configured DKIM key, by "domain/selector". A key missing here is left out of the check. */
  readonly dkimPrivateKeys: ReadonlyMap<string, string>;
  /** Addresses the MX records must point at; default sendingAddresses plus the mx listeners' addresses. */
  readonly serverAddresses?: readonly string[];
  /** Default config.delivery.dnsServers (empty: the system resolver). */
  readonly resolver?: { readonly servers: readonly string[] } | AuditResolver;
  readonly httpsFetch?: HttpsFetch;
  readonly ca?: readonly string[];
  /** Default 5000. */
  readonly timeoutMs?: number;
}

function probeAddress(address: string): string {
  if (address === '0.0.0.0' || address === '') return '127.0.0.1';
  if (address === '::' || address === '[::]') return '::1';
  return address;
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::' || address === '[::]' || address === '';
}

export function mailDomainsInputFromConfig(config: Config, options: MailDomainsConfigOptions): MailDomainsInput {
  const mxAddresses = config.listeners.filter((l) => l.role === 'mx' && !isWildcard(l.address)).map((l) => l.address);
  return {
    domains: [...config.localDomains],
    sendingAddresses: [...options.sendingAddresses],
    heloName: config.hostname,
    serverAddresses: options.serverAddresses ?? [...new Set([...options.sendingAddresses, ...mxAddresses])],
    listeners: config.listeners.map((l) => ({
      name: l.name, role: l.role, address: probeAddress(l.address), port: l.port, tls: l.tls,
      ...(l.role === 'mx' ? { publicPort: 25 } : {}),
    })),
    dkimKeys: config.delivery.dkim.flatMap((k) => {
      const pem = options.dkimPrivateKeys.get(`${k.domain}/${k.selector}`);
      return pem === undefined ? [] : [{ domain: k.domain, selector: k.selector, privateKeyPem: pem }];
    }),
    resolver: options.resolver ?? { servers: [...config.delivery.dnsServers] },
    ...(options.httpsFetch ? { httpsFetch: options.httpsFetch } : {}),
    ...(options.ca ? { ca: options.ca } : {}),
    timeoutMs: options.timeoutMs ?? 5000,
  };
}
