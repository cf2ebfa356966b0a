/**
 * The alias table: local addresses that forward to other addresses (users, lists, and remote addresses when the
 * admin says so). Two sources with one meaning: the `aliases` table of the directory (directory.ts; `relayguard alias
 * add|remove|list`) and alias files in Postfix virtual(5) / aliases(5) form, listed in `recipients.aliasFiles`.
 *
 * Keys: "local@domain" (one address), "@domain" (catch-all for the domain: only when the admin writes one), or a
 * bare "local" in a file (that local part at every local domain, as /etc/aliases does for $mydestination).
 * Targets: "local@domain"; a target outside our domains is allowed only with `remote` (database: `--remote`;
 * files: `recipients.allowRemoteAliasTargets`). Local parts fold to lower case; domains to canonical form.
 *
 * File syntax: `key  target, target ...` or `key: target, ...`; `#` comments; a line that starts with white space
 * continues the previous one. Errors name the file and line.
 */
import { canonicalDomain, canonicalMailDomain, domainOfAddress, foldLocalPart, isRoutedLocalPart } from '../core/canonical.ts';
import { RelayguardError } from '../core/errors.ts';
import type { AliasTarget } from './recipients.ts';

export const ERR_ALIAS_INVALID = 'ERR_ALIAS_INVALID';
export const ERR_ALIAS_NOT_FOUND = 'ERR_ALIAS_NOT_FOUND';

const LOCAL = /^[^\s\x00-\x1f\x7f"<>(),;:\\[\]]+$/u;

function printable(s: string): string {
  return s.slice(0, 80).replace(/[^\x20-\x7e]/g, '?');
}

/** Normalizes an alias key: "local@domain", "@domain" or (files only) a bare "local"; null when invalid. */
export function normalizeAliasKey(input: string, options: { bare?: boolean } = {}): string | null {
  const s = input.trim();
  const at = s.lastIndexOf('@');
  if (at < 0) {
    if (options.bare !== true) return null;
    const local = foldLocalPart(s);
    return local !== '' && LOCAL.test(local) && !isRoutedLocalPart(local) && Buffer.byteLength(local) <= 64 ? local : null;
  }
  const domain = canonicalDomain(s.slice(at + 1));
  if (domain === null) return null;
  if (at === 0) return `@${domain}`;
  const local = foldLocalPart(s.slice(0, at));
  if (!LOCAL.test(local) || isRoutedLocalPart(local) || Buffer.byteLength(local) > 64) return null;
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return null;
  return `${local}@${domain}`;
}

/** Normalizes an alias target ("local@domain"); null when invalid. */
export function normalizeAliasTarget(input: string): string | null {
  const s = input.trim();
  const at = s.lastIndexOf('@');
  if (at <= 0) return null;
  const local = s.slice(0, at).normalize('NFC');
  if (!LOCAL.test(local) || isRoutedLocalPart(local) || Buffer.byteLength(local) > 64) return null;
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return null;
  const d = s.slice(at + 1);
  const domain = d.startsWith('[') ? canonicalMailDomain(d) : { domain: canonicalDomain(d), ip: null };
  if (domain.domain === null || (d.startsWith('[') && domain.ip === null)) return null;
  return `${local}@${domain.domain}`;
}

/**
 * What a database alias must satisfy before it is written (`relayguard alias add` and the web API): the alias is in a
 * local domain, and a target outside the local domains is allowed only when the admin said `remote` (`remoteHint`
 * tells how: "add --remote"). Throws ERR_ALIAS_INVALID; malformed keys and targets are left to the store's check.
 */
export function checkAliasLocality(key: string, targets: readonly string[], isLocal: (domain: string) => boolean, remote: boolean, remoteHint: string): void {
  const keyDomain = domainOfAddress(key);
  if (!isLocal(keyDomain)) {
    throw new RelayguardError(ERR_ALIAS_INVALID, `${printable(key)}: ${printable(keyDomain) || 'the domain'} is not a local domain (add it as a local domain first)`);
  }
  if (remote) return;
  for (const t of targets) {
    const n = normalizeAliasTarget(t);
    if (n !== null && !isLocal(domainOfAddress(n))) {
      throw new RelayguardError(ERR_ALIAS_INVALID, `target ${printable(n)} is outside the local domains: ${remoteHint} to forward mail there`);
    }
  }
}

export interface AliasEntry {
  readonly key: string;
  readonly target: string;
  readonly remote: boolean;
  /** Where it came from: "database" or "file:line". */
  readonly source: string;
}

export interface AliasFileProblem {
  readonly line: number;
  readonly message: string;
}

/**
 * Parses an alias file (virtual(5) / aliases(5) form). Remote targets are refused unless `allowRemote`;
 * `isLocal` tells local domains from remote ones.
 */
export function parseAliasFile(
  text: string,
  options: { allowRemote: boolean; isLocal: (domain: string) => boolean },
): { entries: Map<string, AliasTarget[]>; problems: AliasFileProblem[] } {
  const entries = new Map<string, AliasTarget[]>();
  const problems: AliasFileProblem[] = [];
  const logical: { line: number; text: string }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '');
    if (line.trim() === '') return;
    if (/^\s/.test(line) && logical.length > 0) logical[logical.length - 1]!.text += ` ${line.trim()}`;
    else logical.push({ line: i + 1, text: line.trim() });
  });
  for (const { line, text: l } of logical) {
    const m = /^(\S+?):?\s+(.+)$/.exec(l);
    if (!m) { problems.push({ line, message: `expected "address  target, target ...", got ${JSON.stringify(printable(l))}` }); continue; }
    const key = normalizeAliasKey(m[1]!, { bare: true });
    if (key === null) { problems.push({ line, message: `invalid alias ${JSON.stringify(printable(m[1]!))}` }); continue; }
    const targets: AliasTarget[] = [];
    for (const raw of m[2]!.split(/[,\s]+/).filter((t) => t !== '')) {
      const t = normalizeAliasTarget(raw);
      if (t === null) { problems.push({ line, message: `invalid target ${JSON.stringify(printable(raw))} (expected local@domain)` }); continue; }
      const remote = !options.isLocal(t.slice(t.lastIndexOf('@') + 1));
      if (remote && !options.allowRemote) {
        problems.push({ line, message: `target ${t} is not in a local domain: set recipients.allowRemoteAliasTargets to forward outside` });
        continue;
      }
      targets.push({ address: t, remote });
    }
    if (targets.length > 0) entries.set(key, [...(entries.get(key) ?? []), ...targets]);
  }
  return { entries, problems };
}
