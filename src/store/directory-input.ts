/**
 * What every directory store does to its input before it touches a database: the normalization of policy
 * (users.ts, aliases.ts) and the errors with their codes, in one place, so SQLite and PostgreSQL cannot drift.
 */
import { RelayguardError } from '../core/errors.ts';
import { ERR_ALIAS_INVALID, ERR_ALIAS_NOT_FOUND, normalizeAliasKey, normalizeAliasTarget } from '../policy/aliases.ts';
import { isPasswordHash } from '../policy/password.ts';
import { normalizeDomain, normalizeOwnedAddress, normalizeUserName } from '../policy/users.ts';
import type { UserRecord } from '../policy/directory.ts';

export function printable(s: string): string {
  return String(s).slice(0, 80).replace(/[^\x20-\x7e]/g, '?');
}

export function userInvalid(message: string): RelayguardError {
  return new RelayguardError('ERR_USER_INVALID', message);
}

export function userExists(name: string, cause?: unknown): RelayguardError {
  return new RelayguardError('ERR_USER_EXISTS', `User "${printable(name)}" already exists`, cause === undefined ? undefined : { cause });
}

export function userNotFound(name: string, cause?: unknown): RelayguardError {
  return new RelayguardError('ERR_USER_NOT_FOUND', `No user "${printable(name)}"`, cause === undefined ? undefined : { cause });
}

export function notOwned(name: string, address: string): RelayguardError {
  return new RelayguardError('ERR_USER_NOT_FOUND', `User "${printable(name)}" does not own "${printable(address)}"`);
}

export function domainExists(domain: string): RelayguardError {
  return new RelayguardError('ERR_DOMAIN_EXISTS', `Domain "${domain}" already exists`);
}

export function domainNotFound(domain: string): RelayguardError {
  return new RelayguardError('ERR_DOMAIN_NOT_FOUND', `No domain "${printable(domain)}"`);
}

/** A normalized address a user may own; throws ERR_USER_INVALID. */
export function ownedAddress(address: string): string {
  const n = typeof address === 'string' ? normalizeOwnedAddress(address) : null;
  if (n === null) throw userInvalid(`Invalid address "${printable(String(address))}" (expected local@domain or @domain)`);
  return n;
}

/** Throws ERR_USER_INVALID unless `hash` is an encoded password hash (password.ts): a store never keeps a password. */
export function passwordHash(hash: string): string {
  if (typeof hash !== 'string' || !isPasswordHash(hash)) throw userInvalid('Password hash is not an encoded scrypt hash');
  return hash;
}

export interface CheckedUser {
  readonly name: string;
  readonly passwordHash: string;
  /** Normalized, without duplicates; includes the login name when it is an address. */
  readonly addresses: readonly string[];
  readonly disabled: boolean;
}

/** Normalizes a user record; throws ERR_USER_INVALID. */
export function checkUser(user: UserRecord): CheckedUser {
  const name = normalizeUserName(user.name);
  const hash = passwordHash(user.passwordHash);
  const addresses = new Set((user.addresses ?? []).map(ownedAddress));
  if (name.includes('@')) addresses.add(name);
  return { name, passwordHash: hash, addresses: [...addresses].sort(), disabled: user.disabled === true };
}

/** Normalizes a batch; a name given twice is ERR_USER_EXISTS. */
export function checkUsers(users: readonly UserRecord[]): CheckedUser[] {
  const checked = users.map(checkUser);
  const seen = new Set<string>();
  for (const c of checked) {
    if (seen.has(c.name)) throw userExists(c.name);
    seen.add(c.name);
  }
  return checked;
}

/** A normalized user name, or null for a malformed one (reads never throw for malformed input). */
export function userNameOrNull(name: string): string | null {
  try {
    return normalizeUserName(name);
  } catch {
    return null;
  }
}

/** The normalized address and its "@domain" for owns(), or null when it cannot be a sender address. */
export function senderAddress(address: string): { address: string; domain: string } | null {
  const a = typeof address === 'string' ? normalizeOwnedAddress(address) : null;
  if (a === null || a.startsWith('@')) return null;
  return { address: a, domain: a.slice(a.lastIndexOf('@')) };
}

/** Normalized domain; throws ERR_DOMAIN_INVALID. */
export function domainToAdd(domain: string): string {
  const d = typeof domain === 'string' ? normalizeDomain(domain) : null;
  if (d === null) throw new RelayguardError('ERR_DOMAIN_INVALID', `Invalid domain "${printable(String(domain))}"`);
  return d;
}

export function domainOrNull(domain: string): string | null {
  return typeof domain === 'string' ? normalizeDomain(domain) : null;
}

/** Normalized alias key and targets for addAlias(); throws ERR_ALIAS_INVALID. */
export function checkAlias(key: string, targets: readonly string[]): { key: string; targets: string[] } {
  const k = typeof key === 'string' ? normalizeAliasKey(key) : null;
  if (k === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias "${printable(String(key))}" (expected local@domain, or @domain for a catch-all)`);
  if (!Array.isArray(targets) || targets.length === 0) throw new RelayguardError(ERR_ALIAS_INVALID, 'An alias needs at least one target');
  const normalized = targets.map((t) => {
    const n = typeof t === 'string' ? normalizeAliasTarget(t) : null;
    if (n === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias target "${printable(String(t))}" (expected local@domain)`);
    return n;
  });
  return { key: k, targets: [...new Set(normalized)] };
}

/** Normalized key (and target) for removeAlias(); throws ERR_ALIAS_INVALID. */
export function aliasToRemove(key: string, target?: string): { key: string; target: string | undefined } {
  const k = typeof key === 'string' ? normalizeAliasKey(key) : null;
  if (k === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias "${printable(String(key))}"`);
  if (target === undefined) return { key: k, target: undefined };
  const t = typeof target === 'string' ? normalizeAliasTarget(target) : null;
  if (t === null) throw new RelayguardError(ERR_ALIAS_INVALID, `Invalid alias target "${printable(String(target))}"`);
  return { key: k, target: t };
}

export function aliasNotFound(key: string, target: string | undefined): RelayguardError {
  return new RelayguardError(ERR_ALIAS_NOT_FOUND, `No alias "${printable(key)}"${target === undefined ? '' : ` with target "${printable(target)}"`}`);
}
