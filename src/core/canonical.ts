/**
 * The one canonical form of the names relayguard compares: IP addresses, domains, address-literal domains and
 * local parts. Config, the user store, the relay policy, routing, delivery, the DNSBL consumer and the tester all
 * fold their input through these functions, so two parts can never disagree about whether a name is ours.
 *
 *   canonicalIp("::FFFF:127.0.0.1")     -> "127.0.0.1"     strict text forms only (no "127.1", "0x7f.0.0.1",
 *   canonicalIp("2001:DB8:0::1")        -> "2001:db8::1"    leading zeros or zone ids); IPv4-mapped IPv6 folded
 *   canonicalDomain("Bücher.Example.")  -> "xn--bcher-kva.example"   NFC, IDNA A-labels, lower case, no trailing dot
 *   canonicalMailDomain("[IPv6:::1]")   -> { domain: "[IPv6:::1]", ip: "::1" }
 *   canonicalMailDomain("[IPv6:::ffff:127.0.0.1]") -> { domain: "[127.0.0.1]", ip: "127.0.0.1" }
 *   foldLocalPart("Alice")              -> "alice"          NFC then lower case
 *   isRoutedLocalPart("a\uFF05b")       -> true             "%" after NFKC: a look-alike is routing too
 *
 * Trust: every input may come from a client; nothing here throws on bad input, bad input gives null.
 * Standards: RFC 5321 section 4.1.3 (address literals), RFC 5952 (IPv6 text), RFC 5890-5891 (IDNA), UAX #15.
 */
import { isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Strict dotted quad: four decimal octets, no leading zeros (inet_aton would read them as octal). */
export function isStrictIPv4(text: string): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (const p of parts) {
    if (p.length < 1 || p.length > 3) return false;
    for (let k = 0; k < p.length; k++) if (!isDigit(p.charCodeAt(k))) return false;
    if (p.length > 1 && p.charCodeAt(0) === 0x30) return false;
    if (Number(p) > 255) return false;
  }
  return true;
}

/** RFC 5952 text of an IPv6 address (lower case, longest zero run compressed), without folding; null if invalid. */
function rfc5952(text: string): string | null {
  if (text.length === 0 || text.length > 45) return null;
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k);
    const ok = isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) || c === 0x3a || c === 0x2e;
    if (!ok) return null; // no zone ids ("%eth0"), no brackets, no spaces
  }
  if (!isIPv6(text)) return null;
  const dot = text.lastIndexOf('.');
  if (dot >= 0 && !isStrictIPv4(text.slice(text.lastIndexOf(':') + 1))) return null; // strict embedded IPv4 tail
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
}

const MAPPED = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * The canonical text of an IP address: strict dotted-quad IPv4 as is, IPv6 in RFC 5952 form, and IPv4-mapped IPv6
 * ("::ffff:1.2.3.4", the form a dual-stack socket reports) folded to IPv4. Null when the text is not an address in
 * one of those strict forms.
 */
export function canonicalIp(text: string): string | null {
  if (typeof text !== 'string') return null;
  if (isStrictIPv4(text)) return text;
  const v6 = rfc5952(text);
  if (v6 === null) return null;
  const m = MAPPED.exec(v6);
  if (m) {
    const hi = Number.parseInt(m[1]!, 16);
    const lo = Number.parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return v6;
}

/** RFC 5952 IPv6 text without folding mapped addresses (for places that must keep the IPv6 family). */
export function canonicalIpv6(text: string): string | null {
  return rfc5952(text);
}

/** A socket's peer address in canonical form; an unparsable one (never expected) is returned as is. */
export function canonicalPeer(address: string): string {
  return canonicalIp(address) ?? address;
}

const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const LDH_US_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const CONTROL_OR_SPACE = /[\s\x00-\x1f\x7f-\x9f\u2028\u2029]/u;

export interface CanonicalDomainOptions {
  /** Accept "_" in labels (DNS owner names such as a DNSBL zone or "_dmarc"); mail domains never have it. */
  readonly allowUnderscore?: boolean;
}

/**
 * The canonical form of a host or mail domain: NFC, one trailing dot removed, IDNA to A-labels, lower case, labels
 * of 1-63 letters, digits and inner hyphens, at most 253 octets, and a top-level label that is not all digits (so
 * "127.0.0.1" is never a domain). Null when it is not a valid name.
 */
export function canonicalDomain(input: string, options: CanonicalDomainOptions = {}): string | null {
  if (typeof input !== 'string' || input.length === 0 || input.length > 1024) return null;
  if (options.allowUnderscore === true) return canonicalDomainOf(input, true);
  // The receive path folds the same few domains several times per message (recipient, sender, routing): a small
  // memo of the last results saves the NFC, IDNA and label checks. Bounded: cleared when full, short names only.
  const hit = RECENT_DOMAINS.get(input);
  if (hit !== undefined) return hit;
  const result = canonicalDomainOf(input, false);
  if (input.length <= 255) {
    if (RECENT_DOMAINS.size >= RECENT_DOMAINS_MAX) RECENT_DOMAINS.clear();
    RECENT_DOMAINS.set(input, result);
  }
  return result;
}

const RECENT_DOMAINS = new Map<string, string | null>();
const RECENT_DOMAINS_MAX = 1024;

function canonicalDomainOf(input: string, allowUnderscore: boolean): string | null {
  let d = input.normalize('NFC');
  if (d.endsWith('.')) d = d.slice(0, -1);
  if (d.length === 0 || CONTROL_OR_SPACE.test(d) || d.includes('..') || d.startsWith('[')) return null;
  const ascii = domainToASCII(d).toLowerCase();
  if (ascii === '' || ascii.length > 253) return null;
  const labels = ascii.split('.');
  const label = allowUnderscore ? LDH_US_LABEL : LDH_LABEL;
  if (!labels.every((l) => label.test(l))) return null;
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return null;
  return ascii;
}

/**
 * The IP address an address-literal domain names, canonical (mapped IPv6 folded to IPv4), or null when `domain` is
 * not a literal or not a valid one. Accepts "[1.2.3.4]" and "[IPv6:...]" (tag in any case).
 */
export function literalIp(domain: string): string | null {
  if (typeof domain !== 'string' || domain.length < 3 || domain[0] !== '[' || domain[domain.length - 1] !== ']') return null;
  const body = domain.slice(1, -1);
  if (body.slice(0, 5).toLowerCase() === 'ipv6:') {
    const v6 = rfc5952(body.slice(5));
    return v6 === null ? null : canonicalIp(v6);
  }
  return isStrictIPv4(body) ? body : null;
}

/** The literal domain text for an IP: "[1.2.3.4]" or "[IPv6:2001:db8::1]". */
export function formatLiteral(ip: string): string {
  return ip.includes(':') ? `[IPv6:${ip}]` : `[${ip}]`;
}

/**
 * The canonical form of the domain of a mail address as delivery uses it: a name folded by canonicalDomain, or a
 * literal rewritten to the canonical literal of its address (so "[IPv6:::FFFF:127.0.0.1]" and "[127.0.0.1]" are one
 * domain). Input the parser accepted never fails; anything else is kept lower-cased, so a comparison with a
 * canonical set simply does not match.
 */
export function canonicalMailDomain(domain: string): { readonly domain: string; readonly ip: string | null } {
  if (domain === '') return { domain: '', ip: null };
  if (domain[0] === '[') {
    const ip = literalIp(domain);
    if (ip !== null) return { domain: formatLiteral(ip), ip };
    return { domain: domain.toLowerCase(), ip: null };
  }
  const d = canonicalDomain(domain);
  if (d !== null) return { domain: d, ip: null };
  const bare = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  const ascii = domainToASCII(bare.normalize('NFC'));
  return { domain: (ascii === '' ? bare : ascii).toLowerCase(), ip: null };
}

/** The domain part of an address written "local@domain" (the text after the last "@"), canonical; "" if none. */
export function domainOfAddress(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : canonicalMailDomain(address.slice(at + 1)).domain;
}

/** The local part of an address written "local@domain" (everything before the last "@"). */
export function localPartOfAddress(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at);
}

/** The case-folded form of a local part (NFC, then lower case), as the recipient tables store it. */
export function foldLocalPart(local: string): string {
  return local.normalize('NFC').toLowerCase();
}

const ROUTING = /[@%!]/;

/**
 * True when a (dequoted) local part carries sender-specified routing: "@", "%" or "!" as such, or after Unicode
 * compatibility normalization (NFKC), which turns look-alikes such as U+FF05 FULLWIDTH PERCENT SIGN, U+FE6B SMALL
 * COMMERCIAL AT or U+FF01 into their ASCII forms. Something downstream that folds with NFKC would otherwise read a
 * route the relay decision did not see.
 */
export function isRoutedLocalPart(local: string): boolean {
  if (ROUTING.test(local)) return true;
  for (let i = 0; i < local.length; i++) {
    if (local.charCodeAt(i) >= 0x80) return ROUTING.test(local.normalize('NFKC'));
  }
  return false;
}

/** True for addresses of this host's own stack whatever the interface list says: loopback and unspecified. */
export function isLoopbackOrUnspecified(ip: string): boolean {
  if (ip === '::1' || ip === '::' || ip === '0.0.0.0') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(ip);
}
