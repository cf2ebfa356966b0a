/**
 * MTA-STS (RFC 8461) for the self-audit: the `_mta-sts` TXT record (section 3.1) and the policy file (section 3.2)
 * parsed with named errors, and the mx-pattern matching of section 4.1. The HTTPS fetch lives in https-fetch.ts.
 *
 * Trust: records and policy files are untrusted text; nothing here does I/O.
 */

export type StsTxtParse =
  | { readonly ok: true; readonly id: string; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly error: string };

/** True when the TXT string announces MTA-STS ("v=STSv1" first). */
export function isStsRecord(txt: string): boolean {
  return /^v=STSv1\s*(;|$)/.test(txt);
}

/** Parses one "v=STSv1; id=..." record (section 3.1: sts-id = 1*32(ALPHA / DIGIT)). */
export function parseStsTxt(text: string): StsTxtParse {
  if (!isStsRecord(text)) return { ok: false, error: 'record does not start with "v=STSv1"' };
  const warnings: string[] = [];
  let id: string | null = null;
  for (const raw of text.split(';').slice(1)) {
    const part = raw.trim();
    if (part === '') continue;
    const m = /^([A-Za-z0-9_.-]+)=([\x21-\x3a\x3c\x3e-\x7e]*)$/.exec(part);
    if (!m) return { ok: false, error: `"${part}" is not a field=value pair` };
    if (m[1] === 'id') {
      if (id !== null) return { ok: false, error: 'field "id" appears twice' };
      if (!/^[A-Za-z0-9]{1,32}$/.test(m[2]!)) return { ok: false, error: `id: "${m[2]}" is not 1 to 32 letters or digits` };
      id = m[2]!;
    } else {
      warnings.push(`unknown field "${m[1]}" (ignored)`);
    }
  }
  if (id === null) return { ok: false, error: 'the required field "id" is missing' };
  return { ok: true, id, warnings };
}

export interface StsPolicy {
  readonly mode: 'enforce' | 'testing' | 'none';
  readonly mx: readonly string[];
  readonly maxAge: number;
}

export type StsPolicyParse =
  | { readonly ok: true; readonly policy: StsPolicy; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly error: string; readonly warnings: readonly string[] };

const MAX_AGE_LIMIT = 31_557_600;

/** Parses a policy file (section 3.2): "key: value" lines, CRLF or LF. */
export function parseStsPolicy(text: string): StsPolicyParse {
  const warnings: string[] = [];
  const fields = new Map<string, string[]>();
  const lines = text.split(/\r?\n/);
  if (!text.includes('\r\n') && text.includes('\n')) warnings.push('lines end in LF, not CRLF (RFC 8461 section 3.2 specifies CRLF; most senders accept both)');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const m = /^([A-Za-z0-9_.-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) return { ok: false, error: `line ${i + 1} "${line.slice(0, 80)}" is not "key: value"`, warnings };
    const key = m[1]!;
    const list = fields.get(key);
    if (list) list.push(m[2]!);
    else fields.set(key, [m[2]!]);
  }
  for (const [k, v] of fields) {
    if (!['version', 'mode', 'max_age', 'mx'].includes(k)) warnings.push(`unknown field "${k}" (ignored)`);
    else if (k !== 'mx' && v.length > 1) warnings.push(`field "${k}" appears ${v.length} times (the first one counts)`);
  }
  const version = fields.get('version')?.[0];
  if (version === undefined) return { ok: false, error: 'the required field "version" is missing', warnings };
  if (version !== 'STSv1') return { ok: false, error: `version: "${version}" is not "STSv1"`, warnings };
  const mode = fields.get('mode')?.[0];
  if (mode === undefined) return { ok: false, error: 'the required field "mode" is missing', warnings };
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return { ok: false, error: `mode: "${mode}" is not enforce, testing or none`, warnings };
  const maxAgeText = fields.get('max_age')?.[0];
  if (maxAgeText === undefined) return { ok: false, error: 'the required field "max_age" is missing', warnings };
  if (!/^\d{1,10}$/.test(maxAgeText) || Number(maxAgeText) > MAX_AGE_LIMIT) return { ok: false, error: `max_age: "${maxAgeText}" is not an integer from 0 to ${MAX_AGE_LIMIT}`, warnings };
  const maxAge = Number(maxAgeText);
  const mx: string[] = [];
  for (const raw of fields.get('mx') ?? []) {
    const p = raw.toLowerCase().replace(/\.$/, '');
    if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/.test(p)) return { ok: false, error: `mx: "${raw}" is not a host name or "*." pattern`, warnings };
    mx.push(p);
  }
  if (mode !== 'none' && mx.length === 0) return { ok: false, error: `mode ${mode} needs at least one "mx" field`, warnings };
  if (mode !== 'none' && maxAge < 86400) warnings.push(`max_age ${maxAge} is under a day (RFC 8461 section 3.2 recommends weeks)`);
  return { ok: true, policy: { mode, mx, maxAge }, warnings };
}

/** Section 4.1: exact match, or "*.example.com" matching exactly one more left-most label. */
export function stsMxMatches(host: string, pattern: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (p.startsWith('*.')) {
    const dot = h.indexOf('.');
    return dot > 0 && h.slice(dot + 1) === p.slice(2);
  }
  return h === p;
}
