/**
 * Certificate facts for the self-audit: expiry (critical when expired or not yet valid, warning under 21 days), host
 * names (RFC 6125 DNS-ID matching, as node:crypto's checkHost does), and DANE TLSA matching (RFC 6698, RFC 7672:
 * usage 3 DANE-EE against the leaf, usage 2 DANE-TA against the rest of the chain; usages 0 and 1 are not for SMTP).
 *
 * Trust: certificates come from the network; parsing failures are reported, never thrown.
 */
import { createHash, X509Certificate } from 'node:crypto';
import type { TlsaRecord } from './dns.ts';

export const EXPIRY_WARNING_DAYS = 21;
const DAY = 86_400_000;

export interface CertExpiry {
  readonly severity: 'ok' | 'warning' | 'critical';
  readonly summary: string;
  readonly daysLeft: number;
}

export function expiryOf(validFrom: Date, validTo: Date, now: number, warnDays = EXPIRY_WARNING_DAYS): CertExpiry {
  const daysLeft = Math.floor((validTo.getTime() - now) / DAY);
  if (validTo.getTime() <= now) return { severity: 'critical', summary: `certificate expired on ${validTo.toISOString()}`, daysLeft };
  if (validFrom.getTime() > now) return { severity: 'critical', summary: `certificate is not valid before ${validFrom.toISOString()}`, daysLeft };
  if (daysLeft < warnDays) return { severity: 'warning', summary: `certificate expires in ${daysLeft} days (${validTo.toISOString()})`, daysLeft };
  return { severity: 'ok', summary: `certificate valid until ${validTo.toISOString()} (${daysLeft} days)`, daysLeft };
}

/** True when the certificate (DER) is valid for the host name (DNS-ID, wildcard only as the whole left label). */
export function certCoversHost(der: Buffer, host: string): boolean {
  try {
    return new X509Certificate(der).checkHost(host.replace(/\.$/, ''), { subject: 'never', wildcards: true, partialWildcards: false, multiLabelWildcards: false }) !== undefined;
  } catch {
    return false;
  }
}

/** The DNS names of a certificate's subjectAltName. */
export function certDnsNames(der: Buffer): string[] {
  try {
    const san = new X509Certificate(der).subjectAltName ?? '';
    return san.split(/,\s*/).filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4).toLowerCase());
  } catch {
    return [];
  }
}

function selectAndHash(der: Buffer, selector: number, match: number): Buffer | null {
  let selected: Buffer;
  if (selector === 0) selected = der;
  else if (selector === 1) selected = Buffer.from(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' }));
  else return null;
  if (match === 0) return selected;
  if (match === 1) return createHash('sha256').update(selected).digest();
  if (match === 2) return createHash('sha512').update(selected).digest();
  return null;
}

export interface TlsaVerdict {
  /** Records usable for SMTP (usage 2/3, selector 0/1, matching 0/1/2). */
  readonly usable: number;
  /** Index of the matching record, or -1. */
  readonly matchedIndex: number;
  readonly unusable: readonly string[];
  /** The record a server operator would publish for this leaf: "3 1 1 <sha256 of the SPKI>". */
  readonly suggested: string;
}

export function tlsaVerdict(records: readonly TlsaRecord[], chain: readonly Buffer[]): TlsaVerdict {
  const leaf = chain[0]!;
  const unusable: string[] = [];
  let usable = 0;
  let matchedIndex = -1;
  records.forEach((r, i) => {
    const label = `${r.certUsage} ${r.selector} ${r.match}`;
    if (r.certUsage !== 2 && r.certUsage !== 3) { unusable.push(`${label}: usage ${r.certUsage} (PKIX-${r.certUsage === 0 ? 'TA' : 'EE'}) is not usable for SMTP (RFC 7672 section 3.1.3)`); return; }
    if (r.selector > 1 || r.match > 2) { unusable.push(`${label}: unknown selector or matching type`); return; }
    usable++;
    const candidates = r.certUsage === 3 ? [leaf] : chain.slice(1);
    const want = Buffer.from(r.data);
    for (const der of candidates) {
      try {
        if (matchedIndex < 0 && selectAndHash(der, r.selector, r.match)?.equals(want)) matchedIndex = i;
      } catch {
        // unparsable certificate: no match
      }
    }
  });
  const spki = Buffer.from(new X509Certificate(leaf).publicKey.export({ type: 'spki', format: 'der' }));
  return { usable, matchedIndex, unusable, suggested: `3 1 1 ${createHash('sha256').update(spki).digest('hex')}` };
}
