/**
 * DMARC records (RFC 7489 section 6.3) for the self-audit: a tag-list parser that names the tag and the problem,
 * and the checks a mail admin wants: p/sp values, pct range, adkim/aspf, fo/rf/ri, rua/ruf URIs (mailto: with an
 * optional size limit), and which report destinations are outside the domain (they need the authorization record
 * "<domain>._report._dmarc.<destination>", section 7.1).
 *
 * Trust: records are untrusted text; nothing here does I/O.
 */

export type DmarcPolicy = 'none' | 'quarantine' | 'reject';

export interface DmarcUri {
  readonly uri: string;
  /** mailto: address, lower-case domain. */
  readonly address: string | null;
  readonly domain: string | null;
  /** Size limit in bytes ("!10m"), or null. */
  readonly maxSize: number | null;
}

export interface DmarcRecord {
  readonly tags: Readonly<Record<string, string>>;
  readonly p: DmarcPolicy;
  readonly sp: DmarcPolicy | null;
  readonly pct: number;
  readonly adkim: 'r' | 's';
  readonly aspf: 'r' | 's';
  readonly rua: readonly DmarcUri[];
  readonly ruf: readonly DmarcUri[];
  readonly fo: readonly string[];
  readonly ri: number;
}

export type DmarcParse =
  | { readonly ok: true; readonly record: DmarcRecord; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly error: string; readonly warnings: readonly string[] };

const POLICIES = new Set(['none', 'quarantine', 'reject']);
const KNOWN = new Set(['v', 'p', 'sp', 'pct', 'adkim', 'aspf', 'rua', 'ruf', 'fo', 'rf', 'ri', 'np', 't', 'psd']);
const SIZE = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 } as const;

/** True when the TXT string is meant as a DMARC record ("v=DMARC1" first; section 6.6.3 discards the rest). */
export function isDmarcRecord(txt: string): boolean {
  return /^v\s*=\s*DMARC1\s*(;|$)/.test(txt);
}

/** Parses one DMARC URI ("mailto:a@b.example!10m"). */
export function parseDmarcUri(raw: string): DmarcUri | string {
  const text = raw.trim();
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):([^!]*)(?:!(\d+)([kmgt])?)?$/i.exec(text);
  if (!m) return `"${text}" is not a DMARC URI (scheme:address[!size])`;
  const scheme = m[1]!.toLowerCase();
  const maxSize = m[3] === undefined ? null : Number(m[3]) * (m[4] ? SIZE[m[4].toLowerCase() as keyof typeof SIZE] : 1);
  if (scheme !== 'mailto') return { uri: text, address: null, domain: null, maxSize };
  let addr: string;
  try {
    addr = decodeURIComponent(m[2]!);
  } catch {
    return `"${text}": bad percent-encoding`;
  }
  const at = addr.lastIndexOf('@');
  if (at <= 0 || at === addr.length - 1 || /[\s,;<>]/.test(addr)) return `"${text}": "${addr}" is not an email address`;
  const domain = addr.slice(at + 1).toLowerCase().replace(/\.$/, '');
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(domain)) return `"${text}": bad domain "${domain}"`;
  return { uri: text, address: `${addr.slice(0, at)}@${domain}`, domain, maxSize };
}

/** Parses a DMARC record. Syntax errors name the tag; soft problems become warnings. */
export function parseDmarc(text: string): DmarcParse {
  const warnings: string[] = [];
  if (!isDmarcRecord(text)) return { ok: false, error: 'record does not start with "v=DMARC1"', warnings };
  const tags: Record<string, string> = {};
  const parts = text.split(';');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!.trim();
    if (part === '') {
      if (i !== parts.length - 1) warnings.push('empty tag (";;")');
      continue;
    }
    const eq = part.indexOf('=');
    if (eq <= 0) return { ok: false, error: `"${part}" is not a tag=value pair`, warnings };
    const name = part.slice(0, eq).trim().toLowerCase();
    const value = part.slice(eq + 1).trim();
    if (!/^[a-z][a-z0-9_]*$/.test(name)) return { ok: false, error: `bad tag name "${part.slice(0, eq).trim()}"`, warnings };
    if (name in tags) return { ok: false, error: `tag "${name}" appears twice`, warnings };
    if (!KNOWN.has(name)) warnings.push(`unknown tag "${name}" (ignored)`);
    tags[name] = value;
  }
  if (tags.v !== 'DMARC1') return { ok: false, error: `v must be "DMARC1", got "${tags.v}"`, warnings };
  const p = tags.p;
  if (p === undefined) return { ok: false, error: 'the required tag "p" is missing', warnings };
  if (!POLICIES.has(p.toLowerCase())) return { ok: false, error: `p: "${p}" is not none, quarantine or reject`, warnings };
  if (!/^p\s*=/i.test(parts[1]?.trim() ?? '')) warnings.push('"p" should directly follow "v" (RFC 7489 section 6.4)');
  let sp: DmarcPolicy | null = null;
  if (tags.sp !== undefined) {
    if (!POLICIES.has(tags.sp.toLowerCase())) return { ok: false, error: `sp: "${tags.sp}" is not none, quarantine or reject`, warnings };
    sp = tags.sp.toLowerCase() as DmarcPolicy;
  }
  let pct = 100;
  if (tags.pct !== undefined) {
    if (!/^\d{1,3}$/.test(tags.pct) || Number(tags.pct) > 100) return { ok: false, error: `pct: "${tags.pct}" is not an integer from 0 to 100`, warnings };
    pct = Number(tags.pct);
  }
  const align = (name: 'adkim' | 'aspf'): 'r' | 's' | string => {
    const v = tags[name];
    if (v === undefined) return 'r';
    if (v === 'r' || v === 's') return v;
    return `${name}: "${v}" is not "r" or "s"`;
  };
  const adkim = align('adkim');
  if (adkim.length > 1) return { ok: false, error: adkim, warnings };
  const aspf = align('aspf');
  if (aspf.length > 1) return { ok: false, error: aspf, warnings };
  const uris = (name: 'rua' | 'ruf'): DmarcUri[] | string => {
    const v = tags[name];
    if (v === undefined) return [];
    if (v === '') return `${name}: empty`;
    const out: DmarcUri[] = [];
    for (const raw of v.split(',')) {
      const u = parseDmarcUri(raw);
      if (typeof u === 'string') return `${name}: ${u}`;
      if (u.address === null) warnings.push(`${name}: "${u.uri}" is not a mailto: URI (receivers only send reports by mail)`);
      out.push(u);
    }
    return out;
  };
  const rua = uris('rua');
  if (typeof rua === 'string') return { ok: false, error: rua, warnings };
  const ruf = uris('ruf');
  if (typeof ruf === 'string') return { ok: false, error: ruf, warnings };
  let fo: string[] = ['0'];
  if (tags.fo !== undefined) {
    fo = tags.fo.split(':').map((x) => x.trim());
    const bad = fo.find((x) => !['0', '1', 'd', 's'].includes(x));
    if (bad !== undefined) return { ok: false, error: `fo: "${bad}" is not 0, 1, d or s`, warnings };
    if (ruf.length === 0) warnings.push('fo is set but there is no ruf destination');
  }
  if (tags.rf !== undefined && !tags.rf.split(':').every((x) => x.trim().toLowerCase() === 'afrf')) return { ok: false, error: `rf: "${tags.rf}" is not "afrf"`, warnings };
  let ri = 86400;
  if (tags.ri !== undefined) {
    if (!/^\d{1,10}$/.test(tags.ri) || Number(tags.ri) > 0xffffffff) return { ok: false, error: `ri: "${tags.ri}" is not a 32-bit unsigned integer`, warnings };
    ri = Number(tags.ri);
  }
  return {
    ok: true,
    record: { tags, p: p.toLowerCase() as DmarcPolicy, sp, pct, adkim: adkim as 'r' | 's', aspf: aspf as 'r' | 's', rua, ruf, fo, ri },
    warnings,
  };
}

/**
 * An approximation of the organizational domain (RFC 7489 section 3.2) without the Public Suffix List: the last two
 * labels, or three when the second-level label is a common registry label (co, com, net, org, ac, gov, edu).
 */
export function organizationalDomain(domain: string): string {
  const labels = domain.toLowerCase().replace(/\.$/, '').split('.');
  if (labels.length <= 2) return labels.join('.');
  const sld = labels[labels.length - 2]!;
  const n = ['co', 'com', 'net', 'org', 'ac', 'gov', 'edu'].includes(sld) && labels[labels.length - 1]!.length === 2 ? 3 : 2;
  return labels.slice(-n).join('.');
}

/** Report destinations whose organizational domain differs from the policy domain's (they need authorization). */
export function externalDestinations(policyDomain: string, record: DmarcRecord): string[] {
  const org = organizationalDomain(policyDomain);
  const out = new Set<string>();
  for (const u of [...record.rua, ...record.ruf]) if (u.domain !== null && organizationalDomain(u.domain) !== org) out.add(u.domain);
  return [...out];
}
