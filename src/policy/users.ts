/**
 * Users who may AUTH on submission listeners, the addresses each may send as, and the local domains managed in
 * the database (in addition to `localDomains` in the config).
 *
 * Tables (created if missing; the database may be shared with other stores):
 *   users(name PK, password_hash, created_at, disabled)
 *   user_addresses(name, address)      -- PK (name, address); address "@example.org" owns the whole domain
 *   domains(domain PK, created_at)
 *
 * Matching rules: user names and addresses are stored and compared case-insensitively (NFC, then lower case),
 * whole address including the local part. RFC 5321 lets a local part be case-sensitive, but two users whose
 * addresses differ only by case are a spoofing hazard, not a feature. Domains are stored as lower-case A-labels
 * (IDNA), without a trailing dot.
 * A user whose login name is an address owns that address automatically.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { canonicalDomain } from '../core/canonical.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { restrictSqliteFiles } from '../core/file-modes.ts';
import { DEFAULT_SCRYPT_PARAMS, hashPassword, verifyPassword, type ScryptParams } from './password.ts';

export interface UserInfo {
  /** Normalized login name. */
  readonly name: string;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
  readonly disabled: boolean;
  /** Addresses the user may send as (normalized, sorted); includes the login name when it is an address. */
  readonly addresses: readonly string[];
}

export interface UserStoreOptions {
  readonly clock?: Clock;
  /** scrypt cost for new hashes (tests lower it). Default DEFAULT_SCRYPT_PARAMS. */
  readonly scrypt?: ScryptParams;
  /** Password verification (tests count calls). Default verifyPassword. */
  readonly verify?: (password: string, encoded: string) => Promise<boolean>;
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

type Row = Record<string, unknown>;

/** SQLite-backed users, owned addresses and local domains. */
export class UserStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #params: ScryptParams;
  #dummyHash: Promise<string> | null = null;
  readonly #verify: (password: string, encoded: string) => Promise<boolean>;

  /** `database` is a file path, ":memory:", or an open DatabaseSync shared with other stores (not closed by close()). */
  constructor(database: string | DatabaseSync, options: UserStoreOptions = {}) {
    this.#ownsDb = typeof database === 'string';
    this.#db = typeof database === 'string' ? new DatabaseSync(database) : database;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#params = options.scrypt ?? DEFAULT_SCRYPT_PARAMS;
    this.#verify = options.verify ?? verifyPassword;
    if (this.#ownsDb && database !== ':memory:') {
      restrictSqliteFiles(database as string); // password hashes: 0600 before the first write (-wal, -shm follow)
      this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;');
    }
    this.#db.exec(`
      PRAGMA foreign_keys = ON;
      CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
      );
      CREATE TABLE IF NOT EXISTS user_addresses (
        name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        address TEXT NOT NULL,
        PRIMARY KEY (name, address)
      );
      CREATE INDEX IF NOT EXISTS user_addresses_by_address ON user_addresses(address);
      CREATE TABLE IF NOT EXISTS domains (
        domain TEXT PRIMARY KEY NOT NULL,
        created_at INTEGER NOT NULL
      );
    `);
  }

  close(): void {
    if (this.#ownsDb && this.#db.isOpen) this.#db.close();
  }

  readonly #statements = new Map<string, StatementSync>();

  #stmt(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (!s) this.#statements.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  #transaction<T>(fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  #exists(name: string): boolean {
    return this.#stmt('SELECT 1 FROM users WHERE name = ?').get(name) !== undefined;
  }

  #requireUser(input: string): string {
    const name = normalizeUserName(input);
    if (!this.#exists(name)) throw new RelayguardError('ERR_USER_NOT_FOUND', `No user "${printable(name)}"`);
    return name;
  }

  #normalizeAddresses(addresses: readonly string[]): string[] {
    return addresses.map((a) => {
      const n = normalizeOwnedAddress(a);
      if (n === null) invalid(`Invalid address "${printable(String(a))}" (expected local@domain or @domain)`);
      return n;
    });
  }

  /** Creates a user. Throws ERR_USER_INVALID or ERR_USER_EXISTS. */
  async add(name: string, password: string, options: AddUserOptions = {}): Promise<UserInfo> {
    const normalized = normalizeUserName(name);
    checkPassword(password);
    const addresses = this.#normalizeAddresses(options.addresses ?? []);
    if (normalized.includes('@')) addresses.push(normalized);
    if (this.#exists(normalized)) throw new RelayguardError('ERR_USER_EXISTS', `User "${printable(normalized)}" already exists`);
    const hash = await hashPassword(password, this.#params);
    const createdAt = this.#clock.now();
    try {
      this.#transaction(() => {
        if (this.#exists(normalized)) throw new RelayguardError('ERR_USER_EXISTS', `User "${printable(normalized)}" already exists`);
        this.#stmt('INSERT INTO users (name, password_hash, created_at, disabled) VALUES (?, ?, ?, ?)')
          .run(normalized, hash, createdAt, options.disabled ? 1 : 0);
        const insert = this.#stmt('INSERT OR IGNORE INTO user_addresses (name, address) VALUES (?, ?)');
        for (const a of addresses) insert.run(normalized, a);
      });
    } catch (err) {
      if (err instanceof RelayguardError) throw err;
      // Another process may have created the same user between our check and the insert.
      if (this.#exists(normalized)) throw new RelayguardError('ERR_USER_EXISTS', `User "${printable(normalized)}" already exists`, { cause: err });
      throw err;
    }
    return this.get(normalized)!;
  }

  /**
   * Adds many users (imports): every entry is checked first (ERR_USER_INVALID; ERR_USER_EXISTS for a name that is
   * here already or given twice), the passwords are hashed `concurrency` at a time, and all rows go in in one
   * transaction: all of the users or none.
   */
  async addMany(users: readonly NewUser[], options: AddManyOptions = {}): Promise<UserInfo[]> {
    const checked = users.map((u) => {
      const name = normalizeUserName(u.name);
      checkPassword(u.password);
      const addresses = this.#normalizeAddresses(u.addresses ?? []);
      if (name.includes('@')) addresses.push(name);
      return { name, addresses, password: u.password, disabled: u.disabled === true };
    });
    const names = new Set<string>();
    for (const c of checked) {
      if (names.has(c.name) || this.#exists(c.name)) throw new RelayguardError('ERR_USER_EXISTS', `User "${printable(c.name)}" already exists`);
      names.add(c.name);
    }
    const hashes: string[] = new Array<string>(checked.length);
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < checked.length) {
        const i = next++;
        hashes[i] = await hashPassword(checked[i]!.password, this.#params);
        options.onHashed?.(++done, checked.length);
      }
    };
    const workers = Math.max(1, Math.min(Math.floor(options.concurrency ?? 4), checked.length));
    await Promise.all(Array.from({ length: workers }, worker));
    const createdAt = this.#clock.now();
    this.#transaction(() => {
      const insertUser = this.#stmt('INSERT INTO users (name, password_hash, created_at, disabled) VALUES (?, ?, ?, ?)');
      const insertAddress = this.#stmt('INSERT OR IGNORE INTO user_addresses (name, address) VALUES (?, ?)');
      checked.forEach((c, i) => {
        // Another process may have added the same user while the passwords were hashed.
        if (this.#exists(c.name)) throw new RelayguardError('ERR_USER_EXISTS', `User "${printable(c.name)}" already exists`);
        insertUser.run(c.name, hashes[i]!, createdAt, c.disabled ? 1 : 0);
        for (const a of c.addresses) insertAddress.run(c.name, a);
      });
    });
    return checked.map((c) => this.get(c.name)!);
  }

  /** Deletes a user and their addresses. Throws ERR_USER_NOT_FOUND. */
  remove(name: string): void {
    const normalized = this.#requireUser(name);
    this.#transaction(() => {
      this.#stmt('DELETE FROM user_addresses WHERE name = ?').run(normalized);
      this.#stmt('DELETE FROM users WHERE name = ?').run(normalized);
    });
  }

  /** One user, or null. Never throws for a malformed name. */
  get(name: string): UserInfo | null {
    let normalized: string;
    try {
      normalized = normalizeUserName(name);
    } catch {
      return null;
    }
    const row = this.#stmt('SELECT name, created_at, disabled FROM users WHERE name = ?').get(normalized);
    if (row === undefined) return null;
    const addresses = this.#stmt('SELECT address FROM user_addresses WHERE name = ? ORDER BY address')
      .all(normalized).map((r) => String(r.address));
    return toInfo(row, addresses);
  }

  /** All users, sorted by name. */
  list(): UserInfo[] {
    const byName = new Map<string, string[]>();
    for (const r of this.#stmt('SELECT name, address FROM user_addresses ORDER BY name, address').all()) {
      const name = String(r.name);
      let list = byName.get(name);
      if (!list) byName.set(name, (list = []));
      list.push(String(r.address));
    }
    return this.#stmt('SELECT name, created_at, disabled FROM users ORDER BY name').all()
      .map((row) => toInfo(row, byName.get(String(row.name)) ?? []));
  }

  /** Replaces a user's password. Throws ERR_USER_NOT_FOUND or ERR_USER_INVALID. */
  async setPassword(name: string, password: string): Promise<void> {
    const normalized = this.#requireUser(name);
    checkPassword(password);
    const hash = await hashPassword(password, this.#params);
    const result = this.#stmt('UPDATE users SET password_hash = ? WHERE name = ?').run(hash, normalized);
    if (Number(result.changes) === 0) throw new RelayguardError('ERR_USER_NOT_FOUND', `No user "${printable(normalized)}"`);
  }

  /** Disables or re-enables a user; a disabled user never authenticates. Throws ERR_USER_NOT_FOUND. */
  setDisabled(name: string, disabled: boolean): void {
    const normalized = this.#requireUser(name);
    this.#stmt('UPDATE users SET disabled = ? WHERE name = ?').run(disabled ? 1 : 0, normalized);
  }

  /** Lets a user send as another address ("@domain" for a whole domain). Idempotent. */
  addAddress(name: string, address: string): void {
    const normalized = this.#requireUser(name);
    const [a] = this.#normalizeAddresses([address]);
    this.#stmt('INSERT OR IGNORE INTO user_addresses (name, address) VALUES (?, ?)').run(normalized, a!);
  }

  /** Removes an owned address. Throws ERR_USER_NOT_FOUND when the user does not own it. */
  removeAddress(name: string, address: string): void {
    const normalized = this.#requireUser(name);
    const [a] = this.#normalizeAddresses([address]);
    const result = this.#stmt('DELETE FROM user_addresses WHERE name = ? AND address = ?').run(normalized, a!);
    if (Number(result.changes) === 0) {
      throw new RelayguardError('ERR_USER_NOT_FOUND', `User "${printable(normalized)}" does not own "${printable(a!)}"`);
    }
  }

  /**
   * True when the password is right and the user is enabled. Never throws for bad input, and does one scrypt
   * verification whatever happens (against a dummy hash for unknown or malformed names), so response time does
   * not reveal which user names exist.
   */
  async authenticate(name: string, password: string): Promise<boolean> {
    let row: Row | undefined;
    try {
      row = this.#stmt('SELECT password_hash, disabled FROM users WHERE name = ?').get(normalizeUserName(name));
    } catch {
      row = undefined;
    }
    const pw = typeof password === 'string' ? password : '';
    if (row === undefined) {
      // The same work as for a known user, so timing does not tell which names exist.
      await this.#verify(pw, await this.#dummy());
      return false;
    }
    const ok = await this.#verify(pw, String(row.password_hash));
    return ok && Number(row.disabled) === 0;
  }

  #dummy(): Promise<string> {
    this.#dummyHash ??= hashPassword('relayguard-dummy-password', this.#params);
    return this.#dummyHash;
  }

  /**
   * True when `name` may use `address` as its envelope sender: the address is one the user owns, or the user owns
   * its whole domain ("@domain"). Case-insensitive on the whole address. False for malformed input.
   */
  owns(name: string, address: string): boolean {
    let user: string;
    try {
      user = normalizeUserName(name);
    } catch {
      return false;
    }
    const a = normalizeOwnedAddress(address);
    if (a === null || a.startsWith('@')) return false;
    const domain = a.slice(a.lastIndexOf('@'));
    return this.#stmt('SELECT 1 FROM user_addresses WHERE name = ? AND (address = ? OR address = ?)')
      .get(user, a, domain) !== undefined;
  }

  /**
   * True when mail for `address` has a mailbox here: an enabled user whose login name is the address, or who owns
   * the address exactly (an "@domain" wildcard lets a user send as the domain, it does not make a catch-all).
   * Case-insensitive on the whole address, like owns().
   */
  isMailbox(address: string): boolean {
    const a = normalizeOwnedAddress(address);
    if (a === null || a.startsWith('@')) return false;
    return this.#stmt('SELECT 1 FROM user_addresses a JOIN users u ON u.name = a.name WHERE a.address = ? AND u.disabled = 0 LIMIT 1')
      .get(a) !== undefined;
  }

  /** Adds a local domain. Throws ERR_DOMAIN_INVALID or ERR_DOMAIN_EXISTS. */
  addDomain(domain: string): string {
    const d = normalizeDomain(domain);
    if (d === null) throw new RelayguardError('ERR_DOMAIN_INVALID', `Invalid domain "${printable(String(domain))}"`);
    const result = this.#stmt('INSERT OR IGNORE INTO domains (domain, created_at) VALUES (?, ?)').run(d, this.#clock.now());
    if (Number(result.changes) === 0) throw new RelayguardError('ERR_DOMAIN_EXISTS', `Domain "${d}" already exists`);
    return d;
  }

  /** Removes a local domain. Throws ERR_DOMAIN_NOT_FOUND. */
  removeDomain(domain: string): void {
    const d = normalizeDomain(domain);
    const result = d === null ? { changes: 0 } : this.#stmt('DELETE FROM domains WHERE domain = ?').run(d);
    if (Number(result.changes) === 0) throw new RelayguardError('ERR_DOMAIN_NOT_FOUND', `No domain "${printable(String(domain))}"`);
  }

  /** Local domains from the database, sorted. */
  listDomains(): string[] {
    return this.#stmt('SELECT domain FROM domains ORDER BY domain').all().map((r) => String(r.domain));
  }

  /** True when the domain (any case, trailing dot, U-label or A-label) is a database-managed local domain. */
  hasDomain(domain: string): boolean {
    const d = normalizeDomain(domain);
    return d !== null && this.#stmt('SELECT 1 FROM domains WHERE domain = ?').get(d) !== undefined;
  }
}

function toInfo(row: Row, addresses: string[]): UserInfo {
  return Object.freeze({
    name: String(row.name),
    createdAt: Number(row.created_at),
    disabled: Number(row.disabled) !== 0,
    addresses: Object.freeze(addresses),
  });
}
