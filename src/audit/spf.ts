/**
 * SPF (RFC 7208) for the self-audit: a parser that names every syntax error, and check_host() evaluated over the
 * audit resolver with the processing limits of section 4.6.4 (10 DNS-querying terms, 2 void lookups, 10 MX or PTR
 * names per term), plus an exhaustive walk that counts the lookups of every branch (a record can pass for one
 * address and still exceed the limit for another).
 *
 * Grammar (section 12): record = "v=spf1" *(1*SP (directive / modifier)) *SP; directive = [qualifier] mechanism;
 * mechanisms all, include, a, mx, ptr, ip4, ip6, exists; modifiers redirect, exp and unknown (name "=" macro-string);
 * macros %{letter digits [r] delimiters}, %%, %_, %- (section 7).
 *
 * Trust: records are untrusted text; every string is bounded (a TXT record is at most 64 KiB), recursion is bounded
 * by the lookup limit and a depth cap, and macro expansion output is capped at 253 octets for domain names.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { AuditResolver, DnsAnswer } from './dns.ts';
import { normName } from './dns.ts';

export type SpfQualifier = '+' | '-' | '~' | '?';
export type SpfMechanismName = 'all' | 'include' | 'a' | 'mx' | 'ptr' | 'ip4' | 'ip6' | 'exists';

export interface SpfMechanism {
  readonly kind: 'mechanism';
  readonly qualifier: SpfQualifier;
  readonly name: SpfMechanismName;
  /** The domain-spec (macro-string) for include/a/mx/ptr/exists, or the address for ip4/ip6. */
  readonly value: string | null;
  /** ip4/a/mx: IPv4 prefix length; ip6/a/mx: IPv6 prefix length. */
  readonly cidr4: number | null;
  readonly cidr6: number | null;
  /** The term as written. */
  readonly text: string;
}

export interface SpfModifier {
  readonly kind: 'modifier';
  readonly name: string;
  readonly value: string;
  readonly text: string;
}

export type SpfTerm = SpfMechanism | SpfModifier;

export interface SpfRecord {
  readonly terms: readonly SpfTerm[];
  readonly redirect: string | null;
  readonly exp: string | null;
}

export type SpfParse = { readonly ok: true; readonly record: SpfRecord; readonly warnings: readonly string[] } | { readonly ok: false; readonly error: string };

const MECHANISMS = new Set<string>(['all', 'include', 'a', 'mx', 'ptr', 'ip4', 'ip6', 'exists']);
const MACRO_LETTERS = /^[slodiphcrtv]$/i;

/** True when the TXT string is an SPF version 1 record (section 4.5: "v=spf1" then space or end). */
export function isSpfRecord(txt: string): boolean {
  return /^v=spf1(?: |$)/i.test(txt);
}

/** Checks a macro-string (section 7.1); returns an error text or null. `exp` allows c, r, t. */
export function checkMacroString(s: string, options: { exp?: boolean } = {}): string | null {
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    const code = ch.charCodeAt(0);
    if (ch === '%') {
      const next = s[i + 1];
      if (next === '%' || next === '_' || next === '-') { i++; continue; }
      if (next !== '{') return `"%" at offset ${i} is not followed by "{", "%", "_" or "-"`;
      const end = s.indexOf('}', i + 2);
      if (end < 0) return `macro at offset ${i} has no closing "}"`;
      const body = s.slice(i + 2, end);
      const m = /^([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)$/i.exec(body);
      if (!m || !MACRO_LETTERS.test(m[1]!)) return `bad macro "%{${body}}"`;
      if (!options.exp && /^[crt]$/i.test(m[1]!)) return `macro letter "${m[1]}" is only allowed in an explanation (exp) string`;
      if (m[2] !== '' && (Number(m[2]) === 0 || m[2]!.length > 3)) return `bad macro digit transformer "%{${body}}"`;
      i = end;
      continue;
    }
    if (options.exp ? code < 0x20 || code > 0x7e : code < 0x21 || code > 0x7e) return `character ${JSON.stringify(ch)} at offset ${i} is not allowed`;
  }
  return null;
}

/** domain-spec = macro-string domain-end (section 7.1). */
function checkDomainSpec(s: string): string | null {
  if (s === '') return 'empty domain-spec';
  const macroErr = checkMacroString(s);
  if (macroErr !== null) return macroErr;
  if (/%\{[^}]*\}$/.test(s)) return null; // ends in a macro-expand
  const t = s.replace(/\.$/, '');
  const last = t.slice(t.lastIndexOf('.') + 1);
  if (!t.includes('.')) return `domain "${s}" is not fully qualified`;
  if (!/^(?=.*[a-zA-Z])[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$/.test(last)) return `domain "${s}" has a bad top label "${last}"`;
  if (/\.\./.test(t)) return `domain "${s}" has an empty label`;
  return null;
}

function parseCidr(text: string, allow4: boolean, allow6: boolean): { rest: string; cidr4: number | null; cidr6: number | null } | string {
  let rest = text;
  let cidr6: number | null = null;
  let cidr4: number | null = null;
  const m6 = /\/\/(\d+)$/.exec(rest);
  if (m6) {
    if (!allow6) return 'IPv6 prefix length not allowed here';
    if (!/^(0|[1-9]\d{0,2})$/.test(m6[1]!) || Number(m6[1]) > 128) return `bad IPv6 prefix length "${m6[1]}"`;
    cidr6 = Number(m6[1]);
    rest = rest.slice(0, m6.index);
  }
  const m4 = /(?<!\/)\/(\d+)$/.exec(rest);
  if (m4) {
    if (!allow4) return 'IPv4 prefix length not allowed here';
    if (!/^(0|[1-9]\d?)$/.test(m4[1]!) || Number(m4[1]) > 32) return `bad IPv4 prefix length "${m4[1]}"`;
    cidr4 = Number(m4[1]);
    rest = rest.slice(0, m4.index);
  }
  if (rest.endsWith('/')) return 'bad prefix length';
  return { rest, cidr4, cidr6 };
}

function parseTerm(term: string): SpfTerm | string {
  // modifier: name "=" macro-string
  const mod = /^([a-zA-Z][a-zA-Z0-9\-_.]*)=(.*)$/s.exec(term);
  if (mod && !MECHANISMS.has(mod[1]!.toLowerCase().replace(/^[+\-~?]/, ''))) {
    const name = mod[1]!.toLowerCase();
    const value = mod[2]!;
    if (name === 'redirect') {
      const e = checkDomainSpec(value);
      if (e !== null) return `redirect: ${e}`;
    } else if (name === 'exp') {
      const e = checkDomainSpec(value);
      if (e !== null) return `exp: ${e}`;
    } else {
      const e = checkMacroString(value);
      if (e !== null) return `modifier "${name}": ${e}`;
    }
    return { kind: 'modifier', name, value, text: term };
  }
  let rest = term;
  let qualifier: SpfQualifier = '+';
  if (/^[+\-~?]/.test(rest)) { qualifier = rest[0] as SpfQualifier; rest = rest.slice(1); }
  const m = /^([a-zA-Z0-9]+)(.*)$/s.exec(rest);
  if (!m) return `unknown term "${term}"`;
  const name = m[1]!.toLowerCase();
  const tail = m[2]!;
  if (!MECHANISMS.has(name)) return `unknown mechanism "${m[1]}"`;
  const mech = (value: string | null, cidr4: number | null = null, cidr6: number | null = null): SpfMechanism =>
    ({ kind: 'mechanism', qualifier, name: name as SpfMechanismName, value, cidr4, cidr6, text: term });
  switch (name) {
    case 'all':
      if (tail !== '') return `"all" takes no argument ("${term}")`;
      return mech(null);
    case 'include': case 'exists': {
      if (!tail.startsWith(':')) return `"${name}" needs ":domain" ("${term}")`;
      const e = checkDomainSpec(tail.slice(1));
      if (e !== null) return `${name}: ${e}`;
      return mech(tail.slice(1));
    }
    case 'ptr': {
      if (tail === '') return mech(null);
      if (!tail.startsWith(':')) return `bad "ptr" term "${term}"`;
      const e = checkDomainSpec(tail.slice(1));
      if (e !== null) return `ptr: ${e}`;
      return mech(tail.slice(1));
    }
    case 'a': case 'mx': {
      const c = parseCidr(tail, true, true);
      if (typeof c === 'string') return `${name}: ${c} ("${term}")`;
      if (c.rest === '') return mech(null, c.cidr4, c.cidr6);
      if (!c.rest.startsWith(':')) return `bad "${name}" term "${term}"`;
      const e = checkDomainSpec(c.rest.slice(1));
      if (e !== null) return `${name}: ${e}`;
      return mech(c.rest.slice(1), c.cidr4, c.cidr6);
    }
    case 'ip4': {
      if (!tail.startsWith(':')) return `"ip4" needs ":address" ("${term}")`;
      const c = parseCidr(tail.slice(1), true, false);
      if (typeof c === 'string') return `ip4: ${c} ("${term}")`;
      if (!/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(c.rest)) return `ip4: "${c.rest}" is not an IPv4 address`;
      return mech(c.rest, c.cidr4 ?? 32, null);
    }
    case 'ip6': {
      if (!tail.startsWith(':')) return `"ip6" needs ":address" ("${term}")`;
      const body = tail.slice(1);
      const slash = body.lastIndexOf('/');
      const addr = slash >= 0 ? body.slice(0, slash) : body;
      let len: number | null = 128;
      if (slash >= 0) {
        const p = body.slice(slash + 1);
        if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 128) return `ip6: bad prefix length "${p}" ("${term}")`;
        len = Number(p);
      }
      if (isIP(addr) !== 6) return `ip6: "${addr}" is not an IPv6 address`;
      return mech(addr, null, len);
    }
  }
  return `unknown term "${term}"`;
}

/** Parses one SPF record (the TXT strings joined). Errors name the term and the problem. */
export function parseSpf(text: string): SpfParse {
  if (!isSpfRecord(text)) return { ok: false, error: 'record does not start with "v=spf1"' };
  if (/[^\x20-\x7e]/.test(text)) {
    const bad = /[^\x20-\x7e]/.exec(text)!;
    return { ok: false, error: `character ${JSON.stringify(bad[0])} at offset ${bad.index} is not printable ASCII` };
  }
  const warnings: string[] = [];
  const parts = text.slice(6).split(' ').filter((p) => p !== '');
  const terms: SpfTerm[] = [];
  let redirect: string | null = null;
  let exp: string | null = null;
  let sawAll = false;
  for (const part of parts) {
    const t = parseTerm(part);
    if (typeof t === 'string') return { ok: false, error: t };
    if (t.kind === 'modifier') {
      if (t.name === 'redirect') {
        if (redirect !== null) return { ok: false, error: 'more than one "redirect" modifier' };
        redirect = t.value;
      } else if (t.name === 'exp') {
        if (exp !== null) return { ok: false, error: 'more than one "exp" modifier' };
        exp = t.value;
      } else {
        warnings.push(`unknown modifier "${t.name}" (ignored)`);
      }
    } else {
      if (sawAll) warnings.push(`term "${t.text}" after "all" is never reached`);
      if (t.name === 'all') sawAll = true;
      if (t.name === 'ptr') warnings.push('the "ptr" mechanism SHOULD NOT be used (RFC 7208 section 5.5): slow and unreliable');
      if (t.name === 'include' && terms.some((o) => o.kind === 'mechanism' && o.name === 'include' && o.value?.toLowerCase() === t.value?.toLowerCase())) warnings.push(`"${t.text}" is included twice (each costs a lookup)`);
    }
    terms.push(t);
  }
  if (sawAll && redirect !== null) warnings.push('"redirect" is ignored because the record has an "all" mechanism');
  return { ok: true, record: { terms, redirect, exp }, warnings };
}

// ---------------------------------------------------------------------------------------------------------
// Macro expansion (section 7)

export interface SpfContext {
  readonly ip: string;
  readonly sender: string;
  readonly helo: string;
  /** Receiving host name for %{r}; default "unknown". */
  readonly receiver?: string;
}

function reverseIpLabels(ip: string): string {
  const p = ipaddr.parse(ip);
  if (p.kind() === 'ipv4') return (p as ipaddr.IPv4).octets.join('.');
  return (p as ipaddr.IPv6).toNormalizedString().split(':').map((h) => h.padStart(4, '0')).join('').split('').join('.');
}

/** Expands a macro-string for `domain` (the current domain). %{p} expands to "unknown" (no validation lookups). */
export function expandMacros(spec: string, ctx: SpfContext, domain: string, options: { exp?: boolean; now?: number } = {}): string {
  const at = ctx.sender.lastIndexOf('@');
  const local = at >= 0 ? ctx.sender.slice(0, at) || 'postmaster' : 'postmaster';
  const senderDomain = at >= 0 ? ctx.sender.slice(at + 1) : ctx.sender;
  const ip4 = isIP(ctx.ip) === 4 || (isIP(ctx.ip) === 6 && ipaddr.parse(ctx.ip).kind() === 'ipv6' && (ipaddr.parse(ctx.ip) as ipaddr.IPv6).isIPv4MappedAddress());
  const letters: Record<string, () => string> = {
    s: () => `${local}@${senderDomain}`, l: () => local, o: () => senderDomain, d: () => domain,
    i: () => reverseIpLabels(ctx.ip), p: () => 'unknown', v: () => (ip4 ? 'in-addr' : 'ip6'), h: () => ctx.helo,
    c: () => ctx.ip, r: () => ctx.receiver ?? 'unknown', t: () => String(Math.floor((options.now ?? Date.now()) / 1000)),
  };
  let out = '';
  for (let i = 0; i < spec.length; i++) {
    const ch = spec[i]!;
    if (ch !== '%') { out += ch; continue; }
    const next = spec[i + 1];
    if (next === '%') { out += '%'; i++; continue; }
    if (next === '_') { out += ' '; i++; continue; }
    if (next === '-') { out += '%20'; i++; continue; }
    const end = spec.indexOf('}', i);
    const m = /^%\{([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)\}$/i.exec(spec.slice(i, end + 1))!;
    const letter = m[1]!;
    let value = (letters[letter.toLowerCase()] ?? (() => ''))();
    const delims = m[4] === '' ? '.' : m[4]!;
    let parts = value.split(new RegExp(`[${delims.split('').map((d) => `\\${d}`).join('')}]`));
    if (m[3]!.toLowerCase() === 'r') parts = parts.reverse();
    if (m[2] !== '') parts = parts.slice(Math.max(0, parts.length - Number(m[2])));
    value = parts.join('.');
    if (letter !== letter.toLowerCase()) value = encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
    out += value;
    i = end;
  }
  return out;
}

/** Section 7.3: a domain longer than 253 octets loses left labels until it fits. */
function truncateDomain(d: string): string {
  let t = d.replace(/\.$/, '');
  while (t.length > 253 && t.includes('.')) t = t.slice(t.indexOf('.') + 1);
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// check_host() (section 4)

export type SpfResult = 'none' | 'neutral' | 'pass' | 'fail' | 'softfail' | 'temperror' | 'permerror';

export interface SpfProblem {
  /** The domain whose record has the problem. */
  readonly domain: string;
  /** The record text, when there is one. */
  readonly record: string | null;
  readonly error: string;
  /** 'missing': an include/redirect target without a record; 'loop': an include/redirect chain that comes back. */
  readonly kind: 'syntax' | 'multiple' | 'limit' | 'void' | 'dns' | 'missing' | 'loop';
  /** For 'dns': unreachable (timeout) or broken (SERVFAIL, garbage). */
  readonly dns?: 'unreachable' | 'broken';
}

export interface SpfEvaluation {
  readonly result: SpfResult;
  /** The mechanism that matched ("ip4:192.0.2.0/24" in "_spf.example.com"), if any. */
  readonly matched: { readonly domain: string; readonly term: string } | null;
  /** DNS-querying terms used (include, a, mx, ptr, exists, redirect). */
  readonly lookups: number;
  readonly voidLookups: number;
  readonly problems: readonly SpfProblem[];
  readonly warnings: readonly string[];
  /** Every record read, by domain. */
  readonly records: Readonly<Record<string, string>>;
}

export interface SpfEvalOptions {
  /** Default 10 (section 4.6.4). */
  readonly maxLookups?: number;
  /** Default 2. */
  readonly maxVoidLookups?: number;
  /**
   * Walk every branch (do not stop at the first match) to count the lookups the record can need for any client;
   * the result is still the one of the first match. Limits are not enforced but counted.
   */
  readonly exhaustive?: boolean;
}

class Limit extends Error {}

interface State {
  lookups: number;
  voids: number;
  readonly problems: SpfProblem[];
  readonly warnings: string[];
  readonly records: Record<string, string>;
  readonly maxLookups: number;
  readonly maxVoids: number;
  readonly exhaustive: boolean;
  readonly dnsCache: Map<string, Promise<DnsAnswer<unknown>>>;
}

function ipMatches(ip: string, network: string, bits: number): boolean {
  try {
    let a = ipaddr.parse(ip);
    let b = ipaddr.parse(network);
    if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
    if (b.kind() === 'ipv6' && (b as ipaddr.IPv6).isIPv4MappedAddress()) b = (b as ipaddr.IPv6).toIPv4Address();
    if (a.kind() !== b.kind()) return false;
    return a.match(b, bits);
  } catch {
    return false;
  }
}

function familyOf(ip: string): 4 | 6 {
  const p = ipaddr.parse(ip);
  return p.kind() === 'ipv4' || (p as ipaddr.IPv6).isIPv4MappedAddress() ? 4 : 6;
}

function validDomain(d: string): boolean {
  const t = d.replace(/\.$/, '');
  if (t.length === 0 || t.length > 253 || !t.includes('.')) return false;
  return t.split('.').every((l) => l.length > 0 && l.length <= 63);
}

/** Evaluates check_host(ip, domain, sender) over the resolver. Never throws. */
export async function evaluateSpf(resolver: AuditResolver, domain: string, ctx: SpfContext, options: SpfEvalOptions = {}): Promise<SpfEvaluation> {
  const st: State = {
    lookups: 0, voids: 0, problems: [], warnings: [], records: {},
    maxLookups: options.maxLookups ?? 10, maxVoids: options.maxVoidLookups ?? 2, exhaustive: options.exhaustive ?? false,
    dnsCache: new Map(),
  };
  let out: { result: SpfResult; matched: { domain: string; term: string } | null };
  try {
    out = await checkHost(resolver, normName(domain), ctx, st, [], 'top');
  } catch (err) {
    if (!(err instanceof Limit)) throw err;
    out = { result: 'permerror', matched: null };
  }
  if (st.exhaustive) {
    if (st.lookups > st.maxLookups && !st.problems.some((p) => p.kind === 'limit')) {
      st.problems.push({ domain: normName(domain), record: st.records[normName(domain)] ?? null, kind: 'limit', error: `the record needs ${st.lookups} DNS lookups in all (limit ${st.maxLookups}, RFC 7208 section 4.6.4): receivers return permerror` });
    }
    if (st.voids > st.maxVoids && !st.problems.some((p) => p.kind === 'void')) {
      st.problems.push({ domain: normName(domain), record: st.records[normName(domain)] ?? null, kind: 'void', error: `${st.voids} void lookups (limit ${st.maxVoids}): receivers may return permerror` });
    }
  }
  return { ...out, lookups: st.lookups, voidLookups: st.voids, problems: st.problems, warnings: st.warnings, records: st.records };
}

async function cached<T>(st: State, key: string, fn: () => Promise<DnsAnswer<T>>): Promise<DnsAnswer<T>> {
  let p = st.dnsCache.get(key) as Promise<DnsAnswer<T>> | undefined;
  if (p === undefined) { p = fn(); st.dnsCache.set(key, p as Promise<DnsAnswer<unknown>>); }
  return p;
}

function countLookup(st: State, domain: string, term: string): void {
  st.lookups++;
  if (st.lookups > st.maxLookups && !st.exhaustive) {
    st.problems.push({ domain, record: st.records[domain] ?? null, kind: 'limit', error: `more than ${st.maxLookups} DNS lookups (at "${term}"; RFC 7208 section 4.6.4)` });
    throw new Limit();
  }
}

function countVoid(st: State, domain: string, term: string): void {
  st.voids++;
  if (st.voids > st.maxVoids && !st.exhaustive) {
    st.problems.push({ domain, record: st.records[domain] ?? null, kind: 'void', error: `more than ${st.maxVoids} void lookups (at "${term}"; RFC 7208 section 4.6.4)` });
    throw new Limit();
  }
}

type HostResult = { result: SpfResult; matched: { domain: string; term: string } | null };

async function checkHost(resolver: AuditResolver, domain: string, ctx: SpfContext, st: State, chain: readonly string[], via: 'top' | 'include' | 'redirect'): Promise<HostResult> {
  if (chain.includes(domain)) {
    const loop = [...chain.slice(chain.indexOf(domain)), domain].join(' -> ');
    if (!st.problems.some((p) => p.kind === 'loop' && p.error.endsWith(loop))) st.problems.push({ domain, record: st.records[domain] ?? null, kind: 'loop', error: `${via} loop: ${loop}` });
    return { result: 'permerror', matched: null };
  }
  if (chain.length > 20) return { result: 'permerror', matched: null };
  const next = [...chain, domain];
  if (!validDomain(domain)) return { result: 'none', matched: null };
  const ans = await cached(st, `txt:${domain}`, () => resolver.txt(domain));
  if (ans.kind === 'unreachable' || ans.kind === 'broken') {
    st.problems.push({ domain, record: null, kind: 'dns', dns: ans.kind, error: `TXT lookup of ${domain} failed: ${ans.code} (${ans.detail})` });
    return { result: 'temperror', matched: null };
  }
  const spf = ans.kind === 'ok' ? ans.records.filter(isSpfRecord) : [];
  if (spf.length === 0) {
    if (via !== 'top') {
      st.problems.push({ domain, record: null, kind: 'missing', error: `${via} target ${domain} has no SPF record (permerror)` });
      if (ans.kind === 'none') countVoid(st, domain, `${via}:${domain}`);
    }
    return { result: 'none', matched: null };
  }
  if (spf.length > 1) {
    st.problems.push({ domain, record: spf.join(' | '), kind: 'multiple', error: `${spf.length} SPF records at ${domain} (RFC 7208 section 4.5: permerror)` });
    return { result: 'permerror', matched: null };
  }
  const text = spf[0]!;
  st.records[domain] = text;
  const parsed = parseSpf(text);
  if (!parsed.ok) {
    st.problems.push({ domain, record: text, kind: 'syntax', error: parsed.error });
    return { result: 'permerror', matched: null };
  }
  for (const w of parsed.warnings) st.warnings.push(`${domain}: ${w}`);
  if (text.length > 450) st.warnings.push(`${domain}: the record is ${text.length} octets (over 450 risks UDP truncation, RFC 7208 section 3.4)`);

  let first: HostResult | null = null;
  let hasAll = false;
  for (const term of parsed.record.terms) {
    if (term.kind !== 'mechanism') continue;
    if (term.name === 'all') hasAll = true;
    const m = await matchMechanism(resolver, domain, term, ctx, st, next);
    if (m === 'temperror' || m === 'permerror') {
      first ??= { result: m, matched: { domain, term: term.text } };
      if (!st.exhaustive) return first;
      continue;
    }
    if (m && first === null) {
      const result: SpfResult = term.qualifier === '+' ? 'pass' : term.qualifier === '-' ? 'fail' : term.qualifier === '~' ? 'softfail' : 'neutral';
      first = { result, matched: { domain, term: term.text } };
      if (!st.exhaustive) return first;
    }
  }
  if (parsed.record.redirect !== null && !hasAll) {
    const target = truncateDomain(normName(expandMacros(parsed.record.redirect, ctx, domain)));
    countLookup(st, domain, `redirect=${parsed.record.redirect}`);
    const r = await checkHost(resolver, target, ctx, st, next, 'redirect');
    const rr: HostResult = r.result === 'none' ? { result: 'permerror', matched: null } : r;
    return first ?? rr;
  }
  return first ?? { result: 'neutral', matched: null };
}

async function addressesOf(resolver: AuditResolver, st: State, name: string, family: 4 | 6): Promise<DnsAnswer<string[]>> {
  return cached(st, `${family}:${name}`, () => (family === 4 ? resolver.a(name) : resolver.aaaa(name)));
}

function dnsFail(st: State, domain: string, term: string, a: { kind: 'unreachable' | 'broken'; code: string; detail: string }): 'temperror' {
  st.problems.push({ domain, record: st.records[domain] ?? null, kind: 'dns', dns: a.kind, error: `lookup for "${term}" failed: ${a.code} (${a.detail})` });
  return 'temperror';
}

async function matchMechanism(resolver: AuditResolver, domain: string, term: SpfMechanism, ctx: SpfContext, st: State, chain: readonly string[]): Promise<boolean | 'temperror' | 'permerror'> {
  const target = (): string => truncateDomain(normName(term.value === null ? domain : expandMacros(term.value, ctx, domain)));
  const fam = familyOf(ctx.ip);
  switch (term.name) {
    case 'all': return true;
    case 'ip4': return fam === 4 && ipMatches(ctx.ip, term.value!, term.cidr4 ?? 32);
    case 'ip6': return fam === 6 && ipMatches(ctx.ip, term.value!, term.cidr6 ?? 128);
    case 'include': {
      countLookup(st, domain, term.text);
      const r = await checkHost(resolver, target(), ctx, st, chain, 'include');
      if (r.result === 'pass') return true;
      if (r.result === 'temperror') return 'temperror';
      if (r.result === 'permerror' || r.result === 'none') return 'permerror';
      return false;
    }
    case 'a': {
      countLookup(st, domain, term.text);
      const name = target();
      const a = await addressesOf(resolver, st, name, fam);
      if (a.kind === 'unreachable' || a.kind === 'broken') return dnsFail(st, domain, term.text, a);
      if (a.kind === 'none') { countVoid(st, domain, term.text); return false; }
      return a.records.some((x) => ipMatches(ctx.ip, x, fam === 4 ? term.cidr4 ?? 32 : term.cidr6 ?? 128));
    }
    case 'mx': {
      countLookup(st, domain, term.text);
      const name = target();
      const mx = await cached(st, `mx:${name}`, () => resolver.mx(name));
      if (mx.kind === 'unreachable' || mx.kind === 'broken') return dnsFail(st, domain, term.text, mx);
      if (mx.kind === 'none') { countVoid(st, domain, term.text); return false; }
      if (mx.records.length > 10) {
        st.problems.push({ domain, record: st.records[domain] ?? null, kind: 'limit', error: `"${term.text}": ${name} has ${mx.records.length} MX records (limit 10, RFC 7208 section 4.6.4)` });
        return 'permerror';
      }
      let hit = false;
      for (const r of mx.records) {
        const a = await addressesOf(resolver, st, normName(r.exchange), fam);
        if (a.kind === 'unreachable' || a.kind === 'broken') return dnsFail(st, domain, term.text, a);
        if (a.kind === 'ok' && a.records.some((x) => ipMatches(ctx.ip, x, fam === 4 ? term.cidr4 ?? 32 : term.cidr6 ?? 128))) { hit = true; if (!st.exhaustive) break; }
      }
      return hit;
    }
    case 'ptr': {
      countLookup(st, domain, term.text);
      const name = target();
      const p = await cached(st, `ptr:${ctx.ip}`, () => resolver.ptr(ctx.ip));
      if (p.kind !== 'ok') {
        if (p.kind === 'none') countVoid(st, domain, term.text);
        return false; // section 5.5: a failed PTR lookup is "no match"
      }
      for (const n of p.records.slice(0, 10)) {
        const host = normName(n);
        if (host !== name && !host.endsWith(`.${name}`)) continue;
        const a = await addressesOf(resolver, st, host, fam);
        if (a.kind === 'ok' && a.records.some((x) => ipMatches(ctx.ip, x, fam === 4 ? 32 : 128))) return true;
      }
      return false;
    }
    case 'exists': {
      countLookup(st, domain, term.text);
      const name = target();
      const a = await addressesOf(resolver, st, name, 4);
      if (a.kind === 'unreachable' || a.kind === 'broken') return dnsFail(st, domain, term.text, a);
      if (a.kind === 'none') { countVoid(st, domain, term.text); return false; }
      return true;
    }
  }
}
