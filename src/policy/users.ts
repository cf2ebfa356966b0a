/**
 * Users who may AUTH on submission listeners, the addresses each may send as, and the local domains managed in
 * the database (in addition to `localDomains` in the config): the forms and rules every directory store
 * (directory.ts; src/store for SQLite and PostgreSQL, which own the tables) normalizes and checks with.
 *
 * Matching rules: user names and addresses are stored and compared case-insensitively (NFC, then lower case),
 * whole address including the local part. RFC 5321 lets a local part be case-sensitive, but two users whose
 * addresses differ only by case are a spoofing hazard, not a feature. Domains are stored as lower-case A-labels
 * (IDNA), without a trailing dot.
 * A user whose login name is an address owns that address automatically.
 */
import { canonicalDomain } from '../core/canonical.ts';
import { RelayguardError } from '../core/errors.ts';

export interface UserInfo {
  /** Normalized login name. */
  readonly name: string;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
  readonly disabled: boolean;
  /** Addresses the user may send as (normalized, sorted); includes the login name when it is an address. */
  readonly addresses: readonly string[];
}

/** A user for addMany(). */
export interface NewUser {
  readonly name: string;
  readonly password: string;
  /** Extra addresses the user may send as, as for add(). */
  readonly addresses?: readonly string[];
  readonly disabled?: boolean;
}

export interface AddManyOptions {
  /** Passwords hashed at the same time (scrypt: about 32 MiB and tens of milliseconds each). Default 4. */
  readonly concurrency?: number;
  /** Called after each hash (progress). */
  readonly onHashed?: (done: number, total: number) => void;
}

export interface AddUserOptions {
  /** Extra addresses the user may send as; "@example.org" means every address at example.org. */
  readonly addresses?: readonly string[];
  readonly disabled?: boolean;
}

const MAX_NAME_BYTES = 255; // RFC 4616: authcid up to 255 octets
const MAX_PASSWORD_BYTES = 255; // RFC 4616: passwd up to 255 octets
const CONTROL_OR_SPACE = /[\s\x00-\x1f\x7f\u0085\u00a0\u2028\u2029]/u;
const LOCAL_PART = /^[^\s\x00-\x1f\x7f@%!"<>(),;:\\[\]]+$/u;

function invalid(message: string): never {
  throw new RelayguardError('ERR_USER_INVALID', message);
}

function bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** Lower-case A-label form of a domain without trailing dot, or null when it is not a valid host name (core/canonical.ts). */
export function normalizeDomain(input: string): string | null {
  return canonicalDomain(input);
}

/**
 * Normalizes an address a user may own: "local@domain" (case folded, domain as A-label) or "@domain" for the
 * whole domain. Local parts that carry routing ("%", "!", "@"), quoting or spaces are refused.
 * Returns null when the address is not acceptable.
 */
export function normalizeOwnedAddress(input: string): string | null {
  if (typeof input !== 'string' || input.length === 0 || input.length > 1024) return null;
  const at = input.lastIndexOf('@');
  if (at < 0) return null;
  const domain = normalizeDomain(input.slice(at + 1));
  if (domain === null) return null;
  const local = input.slice(0, at).normalize('NFC').toLowerCase();
  if (local === '') return at === 0 ? `@${domain}` : null;
  if (bytes(local) > 64 || !LOCAL_PART.test(local)) return null;
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return null;
  return `${local}@${domain}`;
}

/** Normalizes a login name; throws ERR_USER_INVALID. */
export function normalizeUserName(input: string): string {
  if (typeof input !== 'string' || input.length === 0) invalid('User name must not be empty');
  const name = input.normalize('NFC').toLowerCase();
  if (bytes(name) > MAX_NAME_BYTES) invalid(`User name is longer than ${MAX_NAME_BYTES} bytes`);
  if (CONTROL_OR_SPACE.test(name)) invalid(`User name "${printable(input)}" contains spaces or control characters`);
  if (name.includes('@')) {
    const address = normalizeOwnedAddress(name);
    if (address === null || address.startsWith('@')) invalid(`User name "${printable(input)}" contains "@" but is not a valid address`);
    return address;
  }
  return name;
}

/** Throws ERR_USER_INVALID when a password could not be stored or used (empty, too long, NUL/CR/LF); the message never holds the password. */
export function checkPassword(password: string): void {
  if (typeof password !== 'string' || password.length === 0) invalid('Password must not be empty');
  if (bytes(password) > MAX_PASSWORD_BYTES) invalid(`Password is longer than ${MAX_PASSWORD_BYTES} bytes`);
  // AUTH PLAIN separates fields with NUL, and LOGIN lines end at CR/LF: such a password could never be used.
  if (/[\x00\r\n]/.test(password)) invalid('Password must not contain NUL, CR or LF');
}

function printable(s: string): string {
  return s.slice(0, 80).replace(/[^\x20-\x7e]/g, '?');
}
