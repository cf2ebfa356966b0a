/**
 * RFC 5321 / RFC 6531 address grammar and the canonical form that relay decisions and delivery share.
 * Parsing is a hand-written linear scanner (no regex runs on attacker input beyond bounded, already-scanned text).
 */
import { Buffer } from 'node:buffer';
import { domainToASCII } from 'node:url';
import type { Reply } from './reply.ts';
import { canonicalIpv6, canonicalMailDomain, isRoutedLocalPart, isStrictIPv4 } from './canonical.ts';

export interface Mailbox {
  /** The local part exactly as sent, with its quotes if it was a quoted string. */
  readonly localPart: string;
  /** The domain exactly as sent: "Example.ORG.", "[127.0.0.1]", "[IPv6:::1]", or "" for an unqualified mailbox. */
  readonly domain: string;
}

export interface Path {
  /** True for the null reverse-path <>. */
  readonly isNull: boolean;
  /** The source route (A-d-l) as sent, without "@" and ":"; it is parsed and then ignored (RFC 5321 section 3.6.1). */
  readonly sourceRoute: readonly string[];
  /** The mailbox, absent only for the null path. */
  readonly mailbox: Mailbox | null;
}

export type AddressErrorCode = 'syntax' | 'too-long' | 'need-smtputf8' | 'bad-literal';

export interface AddressError {
  readonly code: AddressErrorCode;
  readonly message: string;
}

export interface CanonicalAddress {
  /** The local part with quoting removed, case kept. */
  readonly localPart: string;
  /** Lower-case ASCII domain (IDNA A-labels), trailing dot removed; "[1.2.3.4]" / "[IPv6:...]" normalized for literals; "" if unqualified. */
  readonly domain: string;
  /** The IP address of an address-literal domain, else null. */
  readonly literal: string | null;
  /** True when the local part still carries routing ("@", "%" or "!") after canonicalization. */
  readonly routed: boolean;
  /** The address delivery will use: local part (re-quoted if needed) "@" domain. */
  readonly address: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------------

export interface ParsePathOptions {
  /** The client declared SMTPUTF8 (RFC 6531): UTF-8 is allowed in the local part and as U-labels in the domain. */
  readonly smtputf8: boolean;
  /** Accept the null path "<>" (MAIL FROM only). */
  readonly allowNull: boolean;
  /** Maximum path length in UTF-8 octets, "<" and ">" included. Default 256 (RFC 5321 section 4.5.3.1.3). */
  readonly maxLength?: number;
  /** Accept the unqualified "<postmaster>" (any case, unquoted, no source route): RCPT TO only. Default false. */
  readonly allowUnqualifiedPostmaster?: boolean;
}

export type ParsePathResult =
  | { readonly ok: true; readonly path: Path; readonly rest: string }
  | { readonly ok: false; readonly error: AddressError };

/** RFC 5321 section 4.5.3.1: octet limits. */
export const MAX_LOCAL_PART_OCTETS = 64;
export const MAX_DOMAIN_OCTETS = 255;
export const MAX_LABEL_OCTETS = 63;
export const MAX_PATH_OCTETS = 256;

class Fail {
  readonly error: AddressError;
  constructor(code: AddressErrorCode, message: string) {
    this.error = { code, message };
  }
}

function fail(code: AddressErrorCode, message: string): Fail {
  return new Fail(code, message);
}

const LT = 0x3c;
const GT = 0x3e;
const AT = 0x40;
const DOT = 0x2e;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const HYPHEN = 0x2d;

/** RFC 5322 atext, ASCII part. */
const ATEXT = new Uint8Array(128);
for (const ch of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~") {
  ATEXT[ch.charCodeAt(0)] = 1;
}

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function isLetDig(c: number): boolean {
  return isAlpha(c) || isDigit(c);
}

/** qtextSMTP (RFC 5321 section 4.1.2), ASCII part: %d32-33 / %d35-91 / %d93-126. */
function isQtext(c: number): boolean {
  return c >= 0x20 && c <= 0x7e && c !== DQUOTE && c !== BACKSLASH;
}

function utf8Octets(cp: number): number {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/**
 * Reads the non-ASCII code point at i and checks it may appear in an address. Returns its length in UTF-16 code
 * units, or a Fail. Without SMTPUTF8 every non-ASCII character fails with 'need-smtputf8'. With it, C1 controls,
 * lone surrogates and U+FFFD (the mark of invalid UTF-8 decoded leniently) are syntax errors.
 */
function readNonAscii(s: string, i: number, smtputf8: boolean): { units: number; octets: number } | Fail {
  if (!smtputf8) return fail('need-smtputf8', 'Must declare SMTPUTF8 to send a non-ASCII address');
  const cp = s.codePointAt(i)!;
  if (cp <= 0x9f || (cp >= 0xd800 && cp <= 0xdfff) || cp === 0xfffd || cp === 0x2028 || cp === 0x2029) {
    return fail('syntax', 'Invalid character in address');
  }
  return { units: cp > 0xffff ? 2 : 1, octets: utf8Octets(cp) };
}

interface Scan {
  readonly pos: number;
}

/** Dot-string or Quoted-string. Stops at the first character after it (not consumed). */
function scanLocalPart(s: string, start: number, smtputf8: boolean): (Scan & { text: string }) | Fail {
  const n = s.length;
  let i = start;
  let octets = 0;
  if (s.charCodeAt(i) === DQUOTE) {
    i++;
    octets++;
    for (;;) {
      if (octets > MAX_LOCAL_PART_OCTETS) return fail('too-long', 'Local part too long');
      if (i >= n) return fail('syntax', 'Unterminated quoted string');
      const c = s.charCodeAt(i);
      if (c === DQUOTE) {
        i++;
        octets++;
        break;
      }
      if (c === BACKSLASH) {
        const d = s.charCodeAt(i + 1); // NaN at end of input
        if (d >= 0x80) {
          const r = readNonAscii(s, i + 1, smtputf8);
          if (r instanceof Fail) return r;
          return fail('syntax', 'Invalid quoted pair in local part');
        }
        if (!(d >= 0x20 && d <= 0x7e)) return fail('syntax', 'Invalid quoted pair in local part');
        i += 2;
        octets += 2;
        continue;
      }
      if (c >= 0x80) {
        const r = readNonAscii(s, i, smtputf8);
        if (r instanceof Fail) return r;
        i += r.units;
        octets += r.octets;
        continue;
      }
      if (!isQtext(c)) return fail('syntax', 'Invalid character in quoted local part');
      i++;
      octets++;
    }
    if (octets > MAX_LOCAL_PART_OCTETS) return fail('too-long', 'Local part too long');
    if (octets === 2) return fail('syntax', 'Empty local part');
  } else {
    let atomLength = 0;
    for (;;) {
      if (octets > MAX_LOCAL_PART_OCTETS) return fail('too-long', 'Local part too long');
      if (i >= n) break;
      const c = s.charCodeAt(i);
      if (c === DOT) {
        if (atomLength === 0) return fail('syntax', 'Empty atom in local part');
        atomLength = 0;
        i++;
        octets++;
        continue;
      }
      if (c >= 0x80) {
        const r = readNonAscii(s, i, smtputf8);
        if (r instanceof Fail) return r;
        i += r.units;
        octets += r.octets;
        atomLength++;
        continue;
      }
      if (ATEXT[c] !== 1) break;
      i++;
      octets++;
      atomLength++;
    }
    if (i === start) return fail('syntax', 'Empty local part');
    if (atomLength === 0) return fail('syntax', 'Local part ends with a dot');
  }
  return { pos: i, text: s.slice(start, i) };
}

/** True for a label WHATWG URL parsing would read as a number (all digits, or 0x-hex): never a valid TLD. */
function isNumericLabel(label: string): boolean {
  if (label.length === 0) return false;
  if (/^[0-9]+$/.test(label)) return true;
  return /^0x[0-9a-f]*$/i.test(label);
}

/** Checks an all-ASCII domain without trailing dot: LDH labels of 1-63 octets, at most 255, TLD not numeric. */
function checkAsciiDomain(domain: string): Fail | null {
  if (domain.length > MAX_DOMAIN_OCTETS) return fail('too-long', 'Domain too long');
  const labels = domain.split('.');
  for (const label of labels) {
    if (label.length === 0) return fail('syntax', 'Empty label in domain');
    if (label.length > MAX_LABEL_OCTETS) return fail('too-long', 'Domain label too long');
    if (!isLetDig(label.charCodeAt(0)) || !isLetDig(label.charCodeAt(label.length - 1))) {
      return fail('syntax', 'Invalid domain label');
    }
    for (let k = 1; k < label.length - 1; k++) {
      const c = label.charCodeAt(k);
      if (!isLetDig(c) && c !== HYPHEN) return fail('syntax', 'Invalid domain label');
    }
  }
  if (isNumericLabel(labels[labels.length - 1]!)) {
    return fail('syntax', 'Numeric domain: use an address literal');
  }
  return null;
}

/**
 * An IP address in strict text form: dotted-quad IPv4 as is, IPv6 in RFC 5952 form (IPv4-mapped IPv6 kept as
 * IPv6: the tester must reach the family it was given). Null otherwise. Comparisons use canonicalIp.
 */
export function normalizeIp(ip: string): string | null {
  return isStrictIPv4(ip) ? ip : canonicalIpv6(ip);
}

/** The address of a literal body (between the brackets), or a Fail. */
function checkLiteral(body: string): Fail | null {
  if (body.length >= 5 && body.slice(0, 5).toLowerCase() === 'ipv6:') {
    return canonicalIpv6(body.slice(5)) === null ? fail('bad-literal', 'Invalid IPv6 address literal') : null;
  }
  if (body.includes(':')) return fail('bad-literal', 'Unsupported address literal');
  return isStrictIPv4(body) ? null : fail('bad-literal', 'Invalid IPv4 address literal');
}

/**
 * Domain or address-literal. `trailingDot` allows one trailing dot before the terminator. Stops at the first
 * character that cannot continue the domain (not consumed); the caller checks it is the expected terminator.
 */
function scanDomain(s: string, start: number, smtputf8: boolean, trailingDot: boolean): (Scan & { text: string }) | Fail {
  const n = s.length;
  let i = start;
  if (s.charCodeAt(i) === LBRACKET) {
    i++;
    for (;;) {
      if (i - start > MAX_DOMAIN_OCTETS) return fail('too-long', 'Domain too long');
      if (i >= n) return fail('syntax', 'Unterminated address literal');
      const c = s.charCodeAt(i);
      if (c === RBRACKET) break;
      if (c >= 0x80) {
        const r = readNonAscii(s, i, smtputf8);
        if (r instanceof Fail) return r;
        return fail('bad-literal', 'Invalid address literal');
      }
      // dcontent = %d33-90 / %d94-126
      if (c < 33 || c > 126 || c === LBRACKET || c === BACKSLASH) return fail('bad-literal', 'Invalid address literal');
      i++;
    }
    const body = s.slice(start + 1, i);
    i++;
    const bad = checkLiteral(body);
    if (bad) return bad;
    return { pos: i, text: s.slice(start, i) };
  }

  let octets = 0;
  let labelLength = 0;
  let nonAscii = false;
  for (;;) {
    if (octets > MAX_DOMAIN_OCTETS) return fail('too-long', 'Domain too long');
    if (i >= n) break;
    const c = s.charCodeAt(i);
    if (c === DOT) {
      if (labelLength === 0) return fail('syntax', 'Empty label in domain');
      labelLength = 0;
      i++;
      octets++;
      continue;
    }
    if (c >= 0x80) {
      const r = readNonAscii(s, i, smtputf8);
      if (r instanceof Fail) return r;
      nonAscii = true;
      i += r.units;
      octets += r.octets;
      labelLength++;
      continue;
    }
    if (!isLetDig(c) && c !== HYPHEN) break;
    i++;
    octets++;
    labelLength++;
  }
  if (i === start) return fail('syntax', 'Missing domain');
  let text = s.slice(start, i);
  if (labelLength === 0 && !trailingDot) return fail('syntax', 'Domain ends with a dot');
  const bare = labelLength === 0 ? text.slice(0, -1) : text;
  if (bare.length === 0) return fail('syntax', 'Missing domain');
  if (!nonAscii) {
    const bad = checkAsciiDomain(bare);
    if (bad) return bad;
  } else {
    const ascii = domainToASCII(bare);
    if (ascii === '') return fail('syntax', 'Invalid internationalized domain');
    for (let k = 0; k < ascii.length; k++) {
      if (ascii.charCodeAt(k) >= 0x80) return fail('syntax', 'Invalid internationalized domain');
    }
    const bad = checkAsciiDomain(ascii);
    if (bad) return bad;
  }
  return { pos: i, text };
}

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Parses one RFC 5321 Path: `<[A-d-l:]Mailbox>` or the null path `<>`, after optional spaces. `rest` is the text
 * after ">" (the ESMTP parameters): the caller checks that it is empty or begins with a space. Runs in time linear
 * in the input and stops at the first over-limit element, so a 100 KB address costs next to nothing.
 *
 * Syntax errors (code 'syntax') include: no angle brackets, double "@", empty or dotted-out labels, "..", control
 * characters anywhere (quoted pairs of controls too), an empty local part, and an unqualified mailbox other than
 * `<postmaster>` when `allowUnqualifiedPostmaster` is set. An unqualified MAIL FROM such as `<spamtest>` is
 * refused rather than completed with our own domain (Postfix appends $myorigin; we never invent an address).
 */
export function parsePath(input: string, options: ParsePathOptions): ParsePathResult {
  const r = parsePathInner(input, options);
  if (r instanceof Fail) return { ok: false, error: r.error };
  return r;
}

function parsePathInner(s: string, options: ParsePathOptions): { ok: true; path: Path; rest: string } | Fail {
  const maxPath = options.maxLength ?? MAX_PATH_OCTETS;
  const smtputf8 = options.smtputf8;
  const n = s.length;
  let i = 0;
  while (i < n && s.charCodeAt(i) === 0x20) i++;
  if (i >= n || s.charCodeAt(i) !== LT) return fail('syntax', 'Address must be enclosed in angle brackets');
  const start = i;
  i++;
  if (s.charCodeAt(i) === GT) {
    if (!options.allowNull) return fail('syntax', 'Null address not allowed here');
    return { ok: true, path: { isNull: true, sourceRoute: [], mailbox: null }, rest: s.slice(i + 1) };
  }

  const sourceRoute: string[] = [];
  if (s.charCodeAt(i) === AT) {
    for (;;) {
      if (i - start > maxPath) return fail('too-long', 'Path too long');
      if (s.charCodeAt(i) !== AT) return fail('syntax', 'Invalid source route');
      const d = scanDomain(s, i + 1, smtputf8, false);
      if (d instanceof Fail) return d;
      sourceRoute.push(d.text);
      i = d.pos;
      const c = s.charCodeAt(i);
      i++;
      if (c === COLON) break;
      if (c !== COMMA) return fail('syntax', 'Invalid source route');
    }
    if (i - start > maxPath) return fail('too-long', 'Path too long');
  }

  const local = scanLocalPart(s, i, smtputf8);
  if (local instanceof Fail) return local;
  i = local.pos;
  let domain = '';
  const c = s.charCodeAt(i);
  if (c === AT) {
    const d = scanDomain(s, i + 1, smtputf8, true);
    if (d instanceof Fail) return d;
    domain = d.text;
    i = d.pos;
  } else if (c === GT) {
    const postmaster =
      options.allowUnqualifiedPostmaster === true &&
      sourceRoute.length === 0 &&
      local.text.toLowerCase() === 'postmaster';
    if (!postmaster) return fail('syntax', 'Address must be fully qualified');
  } else if (i >= n) {
    return fail('syntax', 'Missing ">"');
  } else {
    return fail('syntax', 'Invalid character in address');
  }
  if (s.charCodeAt(i) !== GT) {
    if (i >= n) return fail('syntax', 'Missing ">"');
    return fail('syntax', 'Invalid character in address');
  }
  if (byteLength(s.slice(start, i + 1)) > maxPath) return fail('too-long', 'Path too long');
  return {
    ok: true,
    path: { isNull: false, sourceRoute, mailbox: { localPart: local.text, domain } },
    rest: s.slice(i + 1),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Canonical form and formatting
// ---------------------------------------------------------------------------------------------------------------

/** True when `local` can be written unquoted: RFC 5321 Dot-string (UTF-8 atext allowed, RFC 6531). */
export function isDotString(local: string): boolean {
  if (local.length === 0) return false;
  let atom = 0;
  for (let k = 0; k < local.length; k++) {
    const c = local.charCodeAt(k);
    if (c === DOT) {
      if (atom === 0) return false;
      atom = 0;
    } else if (c >= 0x80 ? c > 0x9f : ATEXT[c] === 1) {
      atom++;
    } else {
      return false;
    }
  }
  return atom > 0;
}

function dequote(local: string): string {
  if (local.length < 2 || local.charCodeAt(0) !== DQUOTE || local.charCodeAt(local.length - 1) !== DQUOTE) return local;
  let out = '';
  for (let k = 1; k < local.length - 1; k++) {
    const ch = local[k]!;
    if (ch === '\\' && k + 1 < local.length - 1) {
      k++;
      out += local[k]!;
    } else {
      out += ch;
    }
  }
  return out;
}

/** Writes a dequoted local part back in wire form: as is when it is a Dot-string, else as a Quoted-string. */
export function quoteLocalPart(local: string): string {
  if (isDotString(local)) return local;
  return `"${local.replace(/[\\"]/g, '\\$&')}"`;
}

/**
 * The canonical form relay decisions and delivery share: local part dequoted (case kept), domain lower-case
 * A-labels without its one trailing dot, literals normalized. `routed` flags "@", "%" or "!" left in the local
 * part. Expects a mailbox produced by parsePath.
 */
export function canonicalize(mailbox: Mailbox): CanonicalAddress {
  const localPart = dequote(mailbox.localPart);
  const { domain, ip: literal } = canonicalMailDomain(mailbox.domain);
  const routed = isRoutedLocalPart(localPart);
  const quoted = quoteLocalPart(localPart);
  return { localPart, domain, literal, routed, address: domain === '' ? quoted : `${quoted}@${domain}` };
}

/** The mailbox as sent: local part "@" domain, or the bare local part when unqualified. */
export function formatMailbox(mailbox: Mailbox): string {
  return mailbox.domain === '' ? mailbox.localPart : `${mailbox.localPart}@${mailbox.domain}`;
}

/** The path as it is written back out: "<>" or "<mailbox>", source route dropped (RFC 5321 section 3.6.1). */
export function formatPath(path: Path): string {
  return path.isNull || path.mailbox === null ? '<>' : `<${formatMailbox(path.mailbox)}>`;
}

/**
 * True for the RFC 5321 special recipient `<postmaster>` with no domain (any case). `postmaster@some.domain` is
 * an ordinary address and is NOT matched: whether its domain is ours is the relay policy's decision.
 */
export function isPostmaster(c: CanonicalAddress): boolean {
  return c.domain === '' && c.localPart.toLowerCase() === 'postmaster';
}

/**
 * The reply for a path parsePath refused. `kind` picks the wording and the RFC 3463 code (5.1.7 sender, 5.1.3
 * recipient). The text never echoes the input.
 */
export function addressErrorReply(error: AddressError, kind: 'mail' | 'rcpt'): Reply {
  const detail = kind === 'mail' ? '5.1.7' : '5.1.3';
  const who = kind === 'mail' ? 'sender' : 'recipient';
  switch (error.code) {
    case 'need-smtputf8':
      return { code: 553, enhanced: '5.6.7', text: 'Must declare SMTPUTF8 to send unicode address' };
    case 'too-long':
      return { code: 501, enhanced: detail, text: `Bad ${who} address syntax: address too long` };
    case 'bad-literal':
      return { code: 501, enhanced: detail, text: `Bad ${who} address syntax: invalid address literal` };
    case 'syntax':
      return { code: 501, enhanced: detail, text: `Bad ${who} address syntax` };
  }
}
