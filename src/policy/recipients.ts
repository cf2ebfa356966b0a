/**
 * Local recipients: does this local address exist, and where does its mail go? Pure: every table is a lookup
 * function passed in (users, aliases from the database and from alias files, the role accounts from config).
 *
 * Field report 1, H4: every local part of a local domain was accepted and got a new mailbox. Now an address of a
 * local domain is accepted only when one of these says it exists, tried in this order (Postfix virtual(5) order):
 *   1. an alias of the whole address ("sales@example.org" -> targets)
 *   2. a mailbox: a user whose login name is the address, or an address a user owns exactly
 *   3. with a recipient delimiter ("+"), steps 1-2 again for the address without its extension ("alice+tag" -> "alice")
 *   4. the role accounts postmaster and abuse (RFC 5321 section 4.5.1, RFC 2142), which always exist: to the person
 *      the config names, else to their own mailbox at the first local domain
 *   5. a catch-all alias of the domain ("@example.org"), only when the admin wrote one
 * Anything else is unknown: `550 5.1.1 <addr>: Recipient address rejected: User unknown` at RCPT.
 *
 * An address literal of this host ([127.0.0.1], [IPv6:::1], the interface addresses) has only the role accounts:
 * postmaster@[own ip] and abuse@[own ip] reach the postmaster, everything else is unknown. The unqualified
 * <postmaster> is the same postmaster.
 *
 * Alias targets: a local target is resolved again (at most MAX_DEPTH levels, loops cut, at most MAX_TARGETS
 * addresses in all); a remote target only when its alias entry says `remote` (the admin allowed it). Targets that
 * lead nowhere are dropped; an alias whose every target was dropped is unknown, so mail is refused at RCPT rather
 * than bounced later. Local parts fold case (NFC, lower case) unless `foldCase` is off.
 */
import { type CanonicalAddress, quoteLocalPart } from '../core/address.ts';
import { canonicalMailDomain, foldLocalPart, localPartOfAddress } from '../core/canonical.ts';
import type { Locality } from '../core/locality.ts';
import type { Reply } from '../core/reply.ts';

export interface AliasTarget {
  /** "local@domain" (canonical domain). */
  readonly address: string;
  /** The admin allowed this target to be remote. */
  readonly remote: boolean;
}

export interface RecipientTables {
  /** Targets of an alias key ("local@domain", or "@domain" for a catch-all), or null when there is none. */
  aliases(key: string): readonly AliasTarget[] | null;
  /** True when "local@domain" is a mailbox (a user's login address or an address a user owns exactly). */
  isMailbox(address: string): boolean;
}

export interface RecipientSettings {
  /** Who gets postmaster@ (every local domain and own literal). Null: the mailbox postmaster@<first local domain>. */
  readonly postmaster: string | null;
  /** Who gets abuse@. Null: the postmaster. */
  readonly abuse: string | null;
  /** Recipient delimiter characters ("+", "+-"); "" turns extensions off. */
  readonly delimiter: string;
  /** Fold local parts to lower case (default true). */
  readonly foldCase: boolean;
  /** The first local domain, for the role accounts' own mailboxes; null when there is none. */
  readonly defaultDomain: () => string | null;
}

export type Resolution =
  | { readonly known: false; readonly reason: string }
  | { readonly known: true; readonly targets: readonly string[]; readonly via: string };

/** What the receive and deliver paths ask of the recipient tables. */
export interface RecipientResolver {
  /** Resolves a canonical local recipient (the relay decision said 'local'). */
  resolve(rcpt: CanonicalAddress): Resolution;
  /** Resolves "local part" at "domain" (domain in any form). */
  resolveAddress(localPart: string, domain: string): Resolution;
  /** True when a queued local address is still a known recipient. */
  isKnown(address: string): boolean;
}

const MAX_DEPTH = 8;
export const MAX_TARGETS = 1000;
const ROLES = new Set(['postmaster', 'abuse']);

export class LocalRecipients implements RecipientResolver {
  readonly #tables: RecipientTables;
  readonly #settings: RecipientSettings;
  readonly #locality: Locality;

  constructor(tables: RecipientTables, settings: RecipientSettings, locality: Locality) {
    this.#tables = tables;
    this.#settings = settings;
    this.#locality = locality;
  }

  /** Resolves a canonical local recipient (the relay decision said 'local'). */
  resolve(rcpt: CanonicalAddress): Resolution {
    return this.resolveAddress(rcpt.localPart, rcpt.domain);
  }

  /** Resolves "local part" at "domain" (domain in any form: it is folded). */
  resolveAddress(localPart: string, domain: string): Resolution {
    const out = new Set<string>();
    const r = this.#resolve(localPart, canonicalMailDomain(domain).domain, 0, new Set(), out);
    if (r === null || out.size === 0) return { known: false, reason: r === null ? 'no such user' : 'alias leads nowhere' };
    return { known: true, targets: [...out], via: r };
  }

  /** True when a queued local address is still a known recipient (delivery asks before creating a mailbox). */
  isKnown(address: string): boolean {
    const at = address.lastIndexOf('@');
    if (at < 0) return this.resolveAddress(address, '').known;
    let local = localPartOfAddress(address);
    if (local.startsWith('"') && local.endsWith('"') && local.length >= 2) local = local.slice(1, -1).replace(/\\(.)/g, '$1');
    return this.resolveAddress(local, address.slice(at + 1)).known;
  }

  #fold(local: string): string {
    return this.#settings.foldCase ? foldLocalPart(local) : local.normalize('NFC');
  }

  /** Adds the final addresses to `out`; returns how the address was found, or null when it is unknown. */
  #resolve(localPart: string, domain: string, depth: number, seen: Set<string>, out: Set<string>): string | null {
    const local = this.#fold(localPart);
    const literal = domain === '' || domain.startsWith('[');
    if (literal) {
      // The unqualified <postmaster> and own literals: role accounts only.
      if (!ROLES.has(local)) return null;
      return this.#role(local, depth, seen, out);
    }
    const full = `${quoteLocalPart(local)}@${domain}`;
    const found = this.#lookup(full, depth, seen, out);
    if (found !== null) return found;
    const base = this.#base(local);
    if (base !== null) {
      const found2 = this.#lookup(`${quoteLocalPart(base)}@${domain}`, depth, seen, out);
      if (found2 !== null) return `${found2} (extension)`;
    }
    if (ROLES.has(local)) return this.#role(local, depth, seen, out);
    const catchAll = this.#tables.aliases(`@${domain}`);
    if (catchAll !== null) return this.#expand(`@${domain}`, catchAll, depth, seen, out) ? 'catch-all' : null;
    return null;
  }

  #base(local: string): string | null {
    const d = this.#settings.delimiter;
    if (d === '') return null;
    for (let i = 1; i < local.length; i++) {
      if (d.includes(local[i]!)) return local.slice(0, i);
    }
    return null;
  }

  #lookup(address: string, depth: number, seen: Set<string>, out: Set<string>): string | null {
    const targets = this.#tables.aliases(address);
    if (targets !== null) return this.#expand(address, targets, depth, seen, out) ? 'alias' : null;
    if (this.#tables.isMailbox(address)) {
      this.#add(out, address);
      return 'mailbox';
    }
    return null;
  }

  #role(role: string, depth: number, seen: Set<string>, out: Set<string>): string | null {
    const s = this.#settings;
    const person = role === 'abuse' ? (s.abuse ?? s.postmaster) : s.postmaster;
    if (person !== null) {
      const at = person.lastIndexOf('@');
      const domain = canonicalMailDomain(person.slice(at + 1)).domain;
      if (!this.#locality.isLocal(domain)) {
        this.#add(out, person); // the admin named a remote person in the config
        return `${role} (config)`;
      }
      const key = `role:${person}`;
      if (seen.has(key) || depth >= MAX_DEPTH) return null;
      seen.add(key);
      const local = localPartOfAddress(person);
      if (ROLES.has(this.#fold(local))) {
        // postmaster: postmaster@example.org: deliver to that mailbox (no recursion into the role itself).
        this.#add(out, `${this.#fold(local)}@${domain}`);
        return `${role} (config)`;
      }
      return this.#resolve(local, domain, depth + 1, seen, out) === null ? null : `${role} (config)`;
    }
    const d = s.defaultDomain();
    if (d === null) return null;
    this.#add(out, `postmaster@${d}`);
    return `${role} (postmaster mailbox)`;
  }

  /** Expands alias targets into `out`; true when at least one target led somewhere. */
  #expand(key: string, targets: readonly AliasTarget[], depth: number, seen: Set<string>, out: Set<string>): boolean {
    if (seen.has(key) || depth >= MAX_DEPTH) return false;
    seen.add(key);
    let any = false;
    for (const t of targets) {
      if (out.size >= MAX_TARGETS) break;
      const at = t.address.lastIndexOf('@');
      if (at <= 0) continue;
      const domain = canonicalMailDomain(t.address.slice(at + 1)).domain;
      const local = t.address.slice(0, at);
      if (this.#locality.isLocal(domain)) {
        // Loops end in #expand: an alias key already being expanded adds nothing the second time.
        if (this.#resolve(local, domain, depth + 1, seen, out) !== null) any = true;
      } else if (t.remote) {
        this.#add(out, `${local}@${domain}`);
        any = true;
      }
    }
    return any;
  }

  #add(out: Set<string>, address: string): void {
    if (out.size < MAX_TARGETS) out.add(address);
  }
}

/** The RCPT reply for an unknown local recipient (Postfix's wording). */
export function unknownUserReply(address: string): Reply {
  return { code: 550, enhanced: '5.1.1', text: `<${address}>: Recipient address rejected: User unknown` };
}
