/**
 * Listing categories and their A record codes (RFC 5782 section 2.3: codes in 127.0.0.0/8 tell sub-lists apart).
 *
 *   127.0.0.2  open-relay   confirmed open SMTP relay (the ORDB list proper; also the RFC 5782 test point's code)
 *   127.0.0.3  open-proxy   open proxy relaying SMTP (AHBL used .3 for open proxies too)
 *   127.0.0.4  honeypot     source caught sending to a honeypot / spam trap
 *   127.0.0.5  open-nntp    open Usenet (NNTP) server: took a stranger's article without AUTHINFO and served it back
 *
 * These are stable: clients filter on them (Postfix `reject_rbl_client zone=127.0.0.2`).
 */
import { escapeTxt } from './zone.ts';

export const CATEGORIES = {
  'open-relay': { code: '127.0.0.2', reason: 'Open relay' },
  'open-proxy': { code: '127.0.0.3', reason: 'Open proxy' },
  honeypot: { code: '127.0.0.4', reason: 'Spam source caught by a honeypot' },
  'open-nntp': { code: '127.0.0.5', reason: 'Open Usenet (NNTP) server' },
} as const;

export type ListingCategory = keyof typeof CATEGORIES;

export function isCategory(x: unknown): x is ListingCategory {
  return typeof x === 'string' && Object.hasOwn(CATEGORIES, x);
}

export function categoryCode(category: ListingCategory): string {
  return CATEGORIES[category].code;
}

/**
 * Where the evidence of a listing is published; "$" is the listed address. This is the lookup page of the web
 * service on its default admin listener; `serve` and the CLI use dnsbl.evidenceUrl, whose default the configuration
 * derives from web.publicUrl / web.public / web.address (src/config/schema.ts defaultEvidenceUrl).
 */
export const DEFAULT_EVIDENCE_URL = 'http://127.0.0.1:8025/dnsbl/lookup?ip=$';

/**
 * The TXT template of a listing: its reason (or the category's) and the link to the evidence page,
 * e.g. "Open relay, see http://127.0.0.1:8025/dnsbl/lookup?ip=$".
 */
export function txtTemplate(category: ListingCategory, reason: string | null, evidenceUrl: string | null = DEFAULT_EVIDENCE_URL): string {
  const text = escapeTxt(reason ?? CATEGORIES[category].reason);
  return evidenceUrl ? `${text}, see ${evidenceUrl}` : text;
}
