/**
 * Admin accounts of the web service (dashboard and HTTP API): the store port and the password/token rules over it.
 * Purpose: who may look at and change the relay through HTTP, with what credential, and a record of every change.
 * Trust: admins are not mail users. A mail user's password travels over SMTP AUTH from any mail client and is
 * guessed at by every botnet; an admin's opens the queue, the users and the ORDB. Keeping them in separate tables
 * means a leaked mailbox password never opens the dashboard, `user list` never shows an admin, and removing a
 * mail user never locks an operator out (and the reverse).
 *
 *   AdminStore      the port (implementation: store/sqlite-admin.ts, tables admin_* in relayguard.db).
 *   AdminAccounts   passwords (scrypt, policy/password.ts, as for mail users), API tokens, audit entries.
 *
 * API tokens are 32 random bytes (`rgt_` + base64url), shown once; only their SHA-256 is stored. A token carries 256
 * bits of entropy, so a slow hash adds nothing against guessing, and a fast one lets the store look it up directly.
 */
import { createHash, randomBytes } from 'node:crypto';
import { RelayguardError } from '../core/errors.ts';
import { DEFAULT_SCRYPT_PARAMS, hashPassword, verifyPassword, type ScryptParams } from './password.ts';

/** An API token's last use is recorded to this resolution (ms): a polling script costs no write per request. */
export const TOKEN_USE_RESOLUTION_MS = 60_000;

export interface AdminRecord {
  readonly name: string;
  readonly createdAt: number;
}

export interface AdminTokenRecord {
  readonly admin: string;
  readonly name: string;
  readonly createdAt: number;
  readonly lastUsedAt: number | null;
}

export interface AuditEntry {
  readonly id: number;
  readonly at: number;
  /** The admin (or `token:NAME` of an admin) who did it; `cli` for changes made with the command line. */
  readonly actor: string;
  /** A fixed verb: queue.hold, queue.release, admin.login, ... */
  readonly action: string;
  /** What it applied to (queue ids, a user name), or null. */
  readonly target: string | null;
  /** The result, short JSON. */
  readonly detail: string | null;
  readonly clientIp: string | null;
}

export type NewAuditEntry = Omit<AuditEntry, 'id'>;

export interface AdminStore {
  /** Throws ERR_ADMIN_EXISTS. */
  addAdmin(name: string, passwordHash: string, now: number): Promise<void>;
  /** Throws ERR_ADMIN_NOT_FOUND. */
  setAdminPassword(name: string, passwordHash: string): Promise<void>;
  /** Removes the admin and their tokens; throws ERR_ADMIN_NOT_FOUND. */
  removeAdmin(name: string): Promise<void>;
  listAdmins(): Promise<AdminRecord[]>;
  passwordHash(name: string): Promise<string | null>;
  /** Throws ERR_ADMIN_NOT_FOUND (no such admin) or ERR_ADMIN_TOKEN_EXISTS. */
  addToken(admin: string, name: string, tokenHash: string, now: number): Promise<void>;
  /** The token's owner, or null; records its use. */
  useToken(tokenHash: string, now: number): Promise<{ admin: string; name: string } | null>;
  listTokens(): Promise<AdminTokenRecord[]>;
  /** Throws ERR_ADMIN_TOKEN_NOT_FOUND. */
  removeToken(admin: string, name: string): Promise<void>;
  appendAudit(entry: NewAuditEntry): Promise<void>;
  /** Newest first; `beforeId` pages back. */
  auditLog(options: { limit: number; beforeId?: number | undefined }): Promise<AuditEntry[]>;
  /** Resolves when the store answers (health). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const TOKEN = /^rgt_[A-Za-z0-9_-]{43}$/;

/** An admin or token name: 1-64 of letters, digits, `._@-`, starting with a letter or digit. Throws ERR_ADMIN_NAME. */
export function checkAdminName(name: string, what = 'admin name'): string {
  if (!NAME.test(name)) throw new RelayguardError('ERR_ADMIN_NAME', `Bad ${what} "${name.slice(0, 80)}": use 1-64 letters, digits, '.', '_', '@', '-'`);
  return name;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export interface AdminAccountsOptions {
  readonly scrypt?: ScryptParams;
  readonly now?: () => number;
}

export class AdminAccounts {
  readonly store: AdminStore;
  readonly #scrypt: ScryptParams;
  readonly #now: () => number;
  /** A hash that an unknown name is checked against, so a login takes as long whether or not the name exists. */
  #dummy: Promise<string> | null = null;

  constructor(store: AdminStore, options: AdminAccountsOptions = {}) {
    this.store = store;
    this.#scrypt = options.scrypt ?? DEFAULT_SCRYPT_PARAMS;
    this.#now = options.now ?? Date.now;
  }

  async add(name: string, password: string): Promise<void> {
    checkAdminName(name);
    checkPassword(password);
    await this.store.addAdmin(name, await hashPassword(password, this.#scrypt), this.#now());
  }

  async setPassword(name: string, password: string): Promise<void> {
    checkAdminName(name);
    checkPassword(password);
    await this.store.setAdminPassword(name, await hashPassword(password, this.#scrypt));
  }

  /** The admin's name when the password is right, else null (an unknown name costs the same scrypt). */
  async verify(name: string, password: string): Promise<string | null> {
    const hash = NAME.test(name) ? await this.store.passwordHash(name) : null;
    if (hash === null) {
      this.#dummy ??= hashPassword(randomBytes(16).toString('hex'), this.#scrypt);
      await verifyPassword(password, await this.#dummy);
      return null;
    }
    return (await verifyPassword(password, hash)) ? name : null;
  }

  /** Creates a token for `admin` and returns it: the only time it is ever seen. */
  async createToken(admin: string, name: string): Promise<string> {
    checkAdminName(admin);
    checkAdminName(name, 'token name');
    const token = `rgt_${randomBytes(32).toString('base64url')}`;
    await this.store.addToken(admin, name, hashToken(token), this.#now());
    return token;
  }

  /** The owner of a bearer token, or null. */
  async authenticateToken(token: string): Promise<{ admin: string; name: string } | null> {
    if (!TOKEN.test(token)) return null;
    return this.store.useToken(hashToken(token), this.#now());
  }
}

function checkPassword(password: string): void {
  if (password.length < 8) throw new RelayguardError('ERR_ADMIN_PASSWORD', 'An admin password needs at least 8 characters');
  if (password.length > 1024) throw new RelayguardError('ERR_ADMIN_PASSWORD', 'An admin password is at most 1024 characters');
}
