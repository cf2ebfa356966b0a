/**
 * SMTP TLS Reporting (RFC 8460 section 3): the "_smtp._tls" TXT record, "v=TLSRPTv1; rua=URI[,URI]" with mailto:
 * or https: destinations, parsed with named errors.
 *
 * Trust: records are untrusted text; nothing here does I/O.
 */

export type TlsRptParse =
  | { readonly ok: true; readonly rua: readonly string[]; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly error: string };

export function isTlsRptRecord(txt: string): boolean {
  return /^v=TLSRPTv1\s*(;|$)/.test(txt);
}

export function parseTlsRpt(text: string): TlsRptParse {
  if (!isTlsRptRecord(text)) return { ok: false, error: 'record does not start with "v=TLSRPTv1"' };
  const warnings: string[] = [];
  let rua: string[] | null = null;
  for (const raw of text.split(';').slice(1)) {
    const part = raw.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return { ok: false, error: `"${part}" is not a field=value pair` };
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name !== 'rua') { warnings.push(`unknown field "${name}" (ignored)`); continue; }
    if (rua !== null) return { ok: false, error: 'field "rua" appears twice' };
    rua = [];
    for (const u of value.split(',').map((x) => x.trim())) {
      if (/^mailto:[^@\s,;]+@[a-z0-9.-]+\.[a-z0-9-]+$/i.test(u)) rua.push(u);
      else if (/^https:\/\/[a-z0-9.-]+(:\d+)?(\/[\x21-\x7e]*)?$/i.test(u)) rua.push(u);
      else return { ok: false, error: `rua: "${u}" is not a mailto: or https: URI` };
    }
  }
  if (rua === null || rua.length === 0) return { ok: false, error: 'the required field "rua" is missing' };
  return { ok: true, rua, warnings };
}
