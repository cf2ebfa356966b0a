/**
 * The alias table: local addresses that forward to other addresses (users, lists, and remote addresses when the
 * admin says so). Two sources with one meaning: the `aliases` table of the embedded database (`relayguard alias
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
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { canonicalDomain, canonicalMailDomain, foldLocalPart, isRoutedLocalPart } from '../core/canonical.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { restrictSqliteFiles } from '../core/file-modes.ts';
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

export interface AliasEntry {
  readonly key: string;
  readonly target: string;
  readonly remote: boolean;
  /** Where it came from: "database" or "file:line". */
  readonly source: string;
}

/** The database part of the alias table. */
export class AliasStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #statements = new Map<string, StatementSync>();
  #changes = 0;

  constructor(database: string | DatabaseSync, options: { clock?: Clock } = {}) {
    this.#ownsDb = typeof database === 'string';
    this.#db = typeof database === 'string' ? new DatabaseSync(database) : database;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    if (this.#ownsDb && database !== ':memory:') {
      restrictSqliteFiles(database as string); // relayguard.db: 0600 before the first write (-wal, -shm follow)
      this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
    }
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS aliases (
        address TEXT NOT NULL,
        target TEXT NOT NULL,
        remote INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (address, target)
      );
    `);
  }

  #stmt(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (!s) this.#statements.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  /** Adds targets to an alias (a list when there are several). Throws ERR_ALIAS_INVALID. Returns the normalized entries. */
  add(key: string, targets: readonly string[], options: { remote?: boolean } = {}): AliasEntry[] {
    const k = normalizeAliasKey(key);
    if (k === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias "${printable(key)}" (expected local@domain, or @domain for a catch-all)`);
    if (targets.length === 0) throw new RelayguardError(ERR_ALIAS_INVALID, 'An alias needs at least one target');
    const normalized = targets.map((t) => {
      const n = normalizeAliasTarget(t);
      if (n === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias target "${printable(t)}" (expected local@domain)`);
      return n;
    });
    const now = this.#clock.now();
    const insert = this.#stmt('INSERT INTO aliases (address, target, remote, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (address, target) DO UPDATE SET remote = excluded.remote');
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const t of normalized) insert.run(k, t, options.remote === true ? 1 : 0, now);
      this.#db.exec('COMMIT');
      this.#changes++;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
    return normalized.map((t) => ({ key: k, target: t, remote: options.remote === true, source: 'database' }));
  }

  /** Removes one target, or the whole alias when `target` is absent. Throws ERR_ALIAS_NOT_FOUND. */
  remove(key: string, target?: string): number {
    const k = normalizeAliasKey(key);
    if (k === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias "${printable(key)}"`);
    let changes: number;
    if (target === undefined) {
      changes = Number(this.#stmt('DELETE FROM aliases WHERE address = ?').run(k).changes);
    } else {
      const t = normalizeAliasTarget(target);
      if (t === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias target "${printable(target)}"`);
      changes = Number(this.#stmt('DELETE FROM aliases WHERE address = ? AND target = ?').run(k, t).changes);
    }
    if (changes > 0) this.#changes++;
    if (changes === 0) throw new RelayguardError(ERR_ALIAS_NOT_FOUND, `No alias "${printable(k)}"${target === undefined ? '' : ` with target "${printable(target)}"`}`);
    return changes;
  }

  list(): AliasEntry[] {
    return this.#stmt('SELECT address, target, remote FROM aliases ORDER BY address, target').all()
      .map((r) => ({ key: String(r['address']), target: String(r['target']), remote: Number(r['remote']) === 1, source: 'database' }));
  }

  /**
   * A number that changes whenever the alias table may have changed: a commit by any other connection (SQLite's
   * data_version) or a change made through this store.
   */
  version(): string {
    const v = this.#stmt('PRAGMA data_version').get() as Record<string, unknown> | undefined;
    return `${String(v?.['data_version'] ?? 0)}/${this.#changes}`;
  }

  /** Changes made through this store object (no database access). */
  get localChanges(): number {
    return this.#changes;
  }

  /** The whole table as key -> targets (for an in-memory copy on the per-recipient path). */
  snapshot(): Map<string, AliasTarget[]> {
    const out = new Map<string, AliasTarget[]>();
    for (const r of this.#stmt('SELECT address, target, remote FROM aliases ORDER BY address, target').all()) {
      const key = String(r['address']);
      const t = { address: String(r['target']), remote: Number(r['remote']) === 1 };
      const list = out.get(key);
      if (list) list.push(t);
      else out.set(key, [t]);
    }
    return out;
  }

  /** The targets of a normalized key, or null. */
  lookup(key: string): AliasTarget[] | null {
    const rows = this.#stmt('SELECT target, remote FROM aliases WHERE address = ?').all(key);
    if (rows.length === 0) return null;
    return rows.map((r) => ({ address: String(r['target']), remote: Number(r['remote']) === 1 }));
  }

  close(): void {
    if (this.#ownsDb && this.#db.isOpen) this.#db.close();
  }
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
