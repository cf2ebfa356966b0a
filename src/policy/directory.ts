/**
 * The directory port: users (login name, password hash, disabled flag, owned addresses), database-managed local
 * domains and database aliases, as the receive path reads them (AUTH, sender ownership, "is this a mailbox", alias
 * expansion, local domains) and the CLI writes them. Owned here, by its consumer (policy); implemented by
 * src/store (SQLite, the embedded default, and PostgreSQL), all held to one contract suite (directory.case.ts).
 *
 * The contract, for every implementation:
 * - Inputs are normalized by the store with the functions of users.ts and aliases.ts (normalizeUserName,
 *   normalizeOwnedAddress, normalizeDomain, normalizeAliasKey, normalizeAliasTarget): case and Unicode form folded,
 *   domains as lower-case A-labels without trailing dot. Lists are sorted by code point (SQLite's BINARY order;
 *   PostgreSQL columns are COLLATE "C"), so every implementation lists in the same order.
 * - Changes throw RelayguardError with a stable code: ERR_USER_INVALID, ERR_USER_EXISTS, ERR_USER_NOT_FOUND,
 *   ERR_DOMAIN_INVALID, ERR_DOMAIN_EXISTS, ERR_DOMAIN_NOT_FOUND, ERR_ALIAS_INVALID, ERR_ALIAS_NOT_FOUND. A write
 *   that throws has written nothing. Two writers racing for one name: exactly one wins, the other gets *_EXISTS.
 * - Reads never throw for malformed input (they answer null or false), but they do reject when the store itself
 *   fails (a database that cannot be reached: ERR_STORE_UNAVAILABLE), so the receive path answers 451 rather than
 *   taking an outage for "no such user".
 * - Stores keep password hashes only (the encoded form of password.ts); hashing and verification happen here in
 *   policy (UserAccounts), never in a store.
 */
import { RelayguardError } from '../core/errors.ts';
import type { AliasEntry } from './aliases.ts';
import { DEFAULT_SCRYPT_PARAMS, hashPassword, verifyPassword, type ScryptParams } from './password.ts';
import type { AliasTarget } from './recipients.ts';
import { checkPassword, normalizeOwnedAddress, normalizeUserName, type AddManyOptions, type AddUserOptions, type NewUser, type UserInfo } from './users.ts';

export type { AliasEntry } from './aliases.ts';
export type { AliasTarget } from './recipients.ts';
export type { UserInfo } from './users.ts';

/** The store cannot be reached or failed (connection refused, timeout, database gone): a temporary condition. */
export const ERR_STORE_UNAVAILABLE = 'ERR_STORE_UNAVAILABLE';

/** A user as a store keeps it: the password already hashed. */
export interface UserRecord {
  /** Login name; normalized by the store (normalizeUserName). An address as name is owned automatically. */
  readonly name: string;
  /** Encoded hash (password.ts); a store refuses anything else with ERR_USER_INVALID. */
  readonly passwordHash: string;
  /** Extra addresses the user may send as; "@example.org" means every address at example.org. */
  readonly addresses?: readonly string[];
  readonly disabled?: boolean;
}

/** searchUsers() input. */
export interface UserQuery {
  /** Substring of the name or of an owned address, any case; '' or absent: every user. */
  readonly search?: string;
  readonly offset: number;
  readonly limit: number;
}

/** What AUTH needs of a user. */
export interface UserCredentials {
  /** Normalized login name. */
  readonly name: string;
  readonly passwordHash: string;
  readonly disabled: boolean;
}

export interface DirectoryStore {
  /** "sqlite" or "postgres" (logs, metrics). */
  readonly kind: string;

  // ---- users -------------------------------------------------------------------------------------------------

  /** Creates a user. Throws ERR_USER_INVALID or ERR_USER_EXISTS. */
  addUser(user: UserRecord): Promise<UserInfo>;
  /** Creates many users in one transaction, all or none (ERR_USER_EXISTS also for a name given twice). */
  addUsers(users: readonly UserRecord[]): Promise<UserInfo[]>;
  /** Deletes a user and their addresses. Throws ERR_USER_NOT_FOUND. */
  removeUser(name: string): Promise<void>;
  /** One user, or null (also for a malformed name). */
  getUser(name: string): Promise<UserInfo | null>;
  /** All users, sorted by name. */
  listUsers(): Promise<UserInfo[]>;
  /**
   * One page of users sorted by name (as listUsers), with how many match: `search` (case-insensitive, a substring)
   * keeps the users whose name or an owned address contains it. One query for the page, one for the count: what
   * an admin page asks of a large directory, instead of listing every user.
   */
  searchUsers(query: UserQuery): Promise<{ total: number; users: UserInfo[] }>;
  /** The stored hash and disabled flag, or null (also for a malformed name). */
  credentials(name: string): Promise<UserCredentials | null>;
  /** Replaces a user's hash. Throws ERR_USER_NOT_FOUND or ERR_USER_INVALID. */
  setPasswordHash(name: string, passwordHash: string): Promise<void>;
  /** Disables or re-enables a user. Throws ERR_USER_NOT_FOUND. */
  setDisabled(name: string, disabled: boolean): Promise<void>;
  /** Lets a user send as another address ("@domain" for a whole domain). Idempotent. ERR_USER_NOT_FOUND, ERR_USER_INVALID. */
  addAddress(name: string, address: string): Promise<void>;
  /** Removes an owned address. Throws ERR_USER_NOT_FOUND when the user does not exist or does not own it. */
  removeAddress(name: string, address: string): Promise<void>;
  /**
   * True when `name` may use `address` as envelope sender: the user owns the address, or its whole domain
   * ("@domain"; subdomains are not included). Case-insensitive on the whole address. False for malformed input.
   */
  owns(name: string, address: string): Promise<boolean>;
  /**
   * True when mail for `address` has a mailbox here: an enabled user owns the address exactly (a login name that
   * is an address counts; an "@domain" wildcard does not make a catch-all). Case-insensitive, like owns().
   */
  isMailbox(address: string): Promise<boolean>;

  // ---- local domains -----------------------------------------------------------------------------------------

  /** Adds a local domain; returns it normalized. Throws ERR_DOMAIN_INVALID or ERR_DOMAIN_EXISTS. */
  addDomain(domain: string): Promise<string>;
  /** Removes a local domain. Throws ERR_DOMAIN_NOT_FOUND (also for a malformed one). */
  removeDomain(domain: string): Promise<void>;
  /** Local domains of the database, sorted. */
  listDomains(): Promise<string[]>;
  /** True when the domain (any case, trailing dot, U-label or A-label) is a database-managed local domain. */
  hasDomain(domain: string): Promise<boolean>;

  // ---- aliases -----------------------------------------------------------------------------------------------

  /**
   * Adds targets to an alias (a list when there are several); adding a target again sets its remote flag.
   * Throws ERR_ALIAS_INVALID. Returns the normalized entries.
   */
  addAlias(key: string, targets: readonly string[], options?: { readonly remote?: boolean }): Promise<AliasEntry[]>;
  /** Removes one target, or the whole alias without `target`; returns how many entries went. ERR_ALIAS_NOT_FOUND, ERR_ALIAS_INVALID. */
  removeAlias(key: string, target?: string): Promise<number>;
  /** Every database alias entry, sorted by key then target. */
  listAliases(): Promise<AliasEntry[]>;
  /**
   * The targets of a key exactly as stored (already normalized: "local@domain" or "@domain"; the recipient
   * resolver normalizes before it asks), sorted by target; null when there is no such alias.
   */
  lookupAlias(key: string): Promise<AliasTarget[] | null>;

  // ---- change detection (the receive path's in-memory copy) ----------------------------------------------------

  /**
   * A token that changes whenever the directory may have changed, whoever changed it (this store, another process,
   * another node): the receive path re-reads its copy when it differs. One cheap round trip at most.
   */
  version(): Promise<string>;
  /**
   * Calls `onChange` soon after any writer changes the directory, for stores that can push (PostgreSQL: LISTEN);
   * returns the unsubscribe function. Best effort: a lost connection is re-established by the store, and callers
   * still compare version() every few seconds. Absent for stores that cannot push (SQLite: poll version()).
   */
  watch?(onChange: () => void): () => void;
  /**
   * Synchronous reads, for embedded stores only (SQLite: the file is local and node:sqlite answers at once): the
   * receive path then checks the version on every lookup (one PRAGMA, microseconds), so a change made by another
   * process (the CLI) applies to the very next RCPT, as it did before the port. Absent for network stores.
   */
  readonly sync?: SyncRecipientReads;

  /** Releases the connection(s); the store is unusable afterwards. Safe to call twice. */
  close(): Promise<void>;
}

/** What the per-RCPT path needs of the directory, in memory. */
export interface RecipientSnapshot {
  /** version() when the copy was read (read first, so a change during the read shows as a new version). */
  readonly version: string;
  /** Addresses with a mailbox: owned exactly by an enabled user (normalized as normalizeOwnedAddress does). */
  readonly mailboxes: ReadonlySet<string>;
  /** Database-managed local domains. */
  readonly domains: ReadonlySet<string>;
  /** Alias key -> targets, as lookupAlias() answers. */
  readonly aliases: ReadonlyMap<string, readonly AliasTarget[]>;
}

/** See DirectoryStore.sync. */
export interface SyncRecipientReads {
  version(): string;
  snapshot(): RecipientSnapshot;
}

/** Reads the recipient tables of a store (three list reads after the version). */
export async function readRecipientSnapshot(store: DirectoryStore): Promise<RecipientSnapshot> {
  const version = await store.version();
  const [users, domains, aliases] = await Promise.all([store.listUsers(), store.listDomains(), store.listAliases()]);
  return buildRecipientSnapshot(version, users, domains, aliases);
}

/** The snapshot of what the lists answered (version read before them). */
export function buildRecipientSnapshot(version: string, users: readonly UserInfo[], domains: readonly string[], aliases: readonly AliasEntry[]): RecipientSnapshot {
  const mailboxes = new Set<string>();
  for (const u of users) if (!u.disabled) for (const a of u.addresses) if (!a.startsWith('@')) mailboxes.add(a);
  const table = new Map<string, AliasTarget[]>();
  for (const e of aliases) {
    const t = { address: e.target, remote: e.remote };
    const list = table.get(e.key);
    if (list) list.push(t);
    else table.set(e.key, [t]);
  }
  return { version, mailboxes, domains: new Set(domains), aliases: table };
}

// ---------------------------------------------------------------------------------------------------------------
// Passwords: hashed and verified here, stored through the port.

export interface UserAccountsOptions {
  /** scrypt cost for new hashes (tests lower it). Default DEFAULT_SCRYPT_PARAMS. */
  readonly scrypt?: ScryptParams;
  /** Password verification (tests count calls). Default verifyPassword. */
  readonly verify?: (password: string, encoded: string) => Promise<boolean>;
}

function printable(s: string): string {
  return String(s).slice(0, 80).replace(/[^\x20-\x7e]/g, '?');
}

function userExists(name: string): RelayguardError {
  return new RelayguardError('ERR_USER_EXISTS', `User "${printable(name)}" already exists`);
}

/** Checks a user's name and addresses as a store would, before a password is hashed (ERR_USER_INVALID). */
function precheck(name: string, addresses: readonly string[] = []): string {
  const normalized = normalizeUserName(name);
  for (const a of addresses) {
    if (normalizeOwnedAddress(a) === null) {
      throw new RelayguardError('ERR_USER_INVALID', `Invalid address "${printable(a)}" (expected local@domain or @domain)`);
    }
  }
  return normalized;
}

/** Users with passwords over a DirectoryStore: what `user add|passwd` and SMTP AUTH need. */
export class UserAccounts {
  readonly #store: DirectoryStore;
  readonly #params: ScryptParams;
  readonly #verify: (password: string, encoded: string) => Promise<boolean>;
  #dummyHash: Promise<string> | null = null;

  constructor(store: DirectoryStore, options: UserAccountsOptions = {}) {
    this.#store = store;
    this.#params = options.scrypt ?? DEFAULT_SCRYPT_PARAMS;
    this.#verify = options.verify ?? verifyPassword;
  }

  /** Creates a user with a password. Throws ERR_USER_INVALID or ERR_USER_EXISTS (checked before hashing, and again by the store). */
  async add(name: string, password: string, options: AddUserOptions = {}): Promise<UserInfo> {
    const normalized = precheck(name, options.addresses);
    checkPassword(password);
    if ((await this.#store.getUser(normalized)) !== null) throw userExists(normalized);
    const passwordHash = await hashPassword(password, this.#params);
    return this.#store.addUser({ name: normalized, passwordHash, addresses: options.addresses ?? [], disabled: options.disabled === true });
  }

  /**
   * Adds many users (imports): every entry is checked first (ERR_USER_INVALID; ERR_USER_EXISTS for a name that is
   * here already or given twice), the passwords are hashed `concurrency` at a time, and the store writes all of
   * them or none.
   */
  async addMany(users: readonly NewUser[], options: AddManyOptions = {}): Promise<UserInfo[]> {
    const names = new Set<string>();
    for (const u of users) {
      const n = precheck(u.name, u.addresses);
      checkPassword(u.password);
      if (names.has(n)) throw userExists(n);
      names.add(n);
    }
    for (const n of names) if ((await this.#store.getUser(n)) !== null) throw userExists(n);
    const hashes: string[] = new Array<string>(users.length);
    let next = 0;
    let done = 0;
    const worker = async (): Promise<void> => {
      while (next < users.length) {
        const i = next++;
        hashes[i] = await hashPassword(users[i]!.password, this.#params);
        options.onHashed?.(++done, users.length);
      }
    };
    const workers = Math.max(1, Math.min(Math.floor(options.concurrency ?? 4), users.length));
    await Promise.all(Array.from({ length: workers }, worker));
    return this.#store.addUsers(users.map((u, i) => ({
      name: u.name, passwordHash: hashes[i]!, addresses: u.addresses ?? [], disabled: u.disabled === true,
    })));
  }

  /** Replaces a user's password. Throws ERR_USER_NOT_FOUND or ERR_USER_INVALID. */
  async setPassword(name: string, password: string): Promise<void> {
    const normalized = normalizeUserName(name);
    checkPassword(password);
    if ((await this.#store.getUser(normalized)) === null) {
      throw new RelayguardError('ERR_USER_NOT_FOUND', `No user "${printable(normalized)}"`);
    }
    await this.#store.setPasswordHash(normalized, await hashPassword(password, this.#params));
  }

  /**
   * True when the password is right and the user is enabled. Malformed input is a wrong password; a store failure
   * rejects (ERR_STORE_UNAVAILABLE: 451, not 535). One scrypt verification whatever happens (against a dummy hash
   * for unknown names), so response time does not reveal which user names exist.
   */
  async authenticate(name: string, password: string): Promise<boolean> {
    const user = typeof name === 'string' ? await this.#store.credentials(name) : null;
    const pw = typeof password === 'string' ? password : '';
    if (user === null) {
      await this.#verify(pw, await this.#dummy());
      return false;
    }
    const ok = await this.#verify(pw, user.passwordHash);
    return ok && !user.disabled;
  }

  #dummy(): Promise<string> {
    this.#dummyHash ??= hashPassword('relayguard-dummy-password', this.#params);
    return this.#dummyHash;
  }
}
