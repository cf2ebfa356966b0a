/**
 * The directory port (policy/directory.ts) on the embedded SQLite database, relayguard.db under dataDir.
 *
 * This module owns the embedded schema (the one CREATE TABLE of each table; PostgreSQL's twin is
 * migrations/postgres/001_directory.sql). The tables are those relayguard created before the port (the synchronous
 * UserStore and AliasStore, since removed), created if missing, so every existing relayguard.db keeps working
 * (directory_version and its triggers are added to it on first open):
 *   users(name PK, password_hash, created_at, disabled)
 *   user_addresses(name, address)      -- PK (name, address); address "@example.org" owns the whole domain
 *   domains(domain PK, created_at)
 *   aliases(address, target, remote, created_at)   -- PK (address, target)
 *   directory_version(id = 1, version)              -- bumped by triggers on the four tables (change detection)
 * node:sqlite is synchronous: each method runs to completion before its promise settles (no worker, no queue),
 * which keeps the embedded default as fast as the synchronous stores. Writes use BEGIN IMMEDIATE and check inside
 * the transaction, so two processes on one file cannot both create a user (the loser gets ERR_USER_EXISTS).
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import {
  buildRecipientSnapshot,
  type AliasEntry, type AliasTarget, type DirectoryStore, type SyncRecipientReads, type UserCredentials, type UserInfo, type UserQuery, type UserRecord,
} from '../policy/directory.ts';
import {
  aliasNotFound, aliasToRemove, checkAlias, checkUser, checkUsers, domainExists, domainNotFound, domainOrNull, domainToAdd,
  notOwned, ownedAddress, passwordHash, senderAddress, userExists, userNameOrNull, userNotFound, type CheckedUser,
} from './directory-input.ts';
import { normalizeUserName } from '../policy/users.ts';
import { immediate, openSqliteFile } from './sqlite-common.ts';

const SCHEMA = `
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
  CREATE TABLE IF NOT EXISTS aliases (
    address TEXT NOT NULL,
    target TEXT NOT NULL,
    remote INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (address, target)
  );
  -- One number that goes up with every change to the four tables above, whoever writes them (triggers: an older
  -- relayguard or another process too). The receive path compares it, not PRAGMA data_version alone, so commits
  -- to other tables of relayguard.db (ORDB listings) do not make it re-read the directory.
  CREATE TABLE IF NOT EXISTS directory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
  );
  INSERT OR IGNORE INTO directory_version (id, version) VALUES (1, 0);
${['users', 'user_addresses', 'domains', 'aliases'].flatMap((t) => ['INSERT', 'UPDATE', 'DELETE'].map((op) => `
  CREATE TRIGGER IF NOT EXISTS ${t}_${op.toLowerCase()}_version AFTER ${op} ON ${t}
  BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;`)).join('')}
`;

export interface SqliteDirectoryOptions {
  readonly clock?: Clock;
}

type Row = Record<string, unknown>;

function toInfo(row: Row, addresses: string[]): UserInfo {
  return Object.freeze({
    name: String(row['name']),
    createdAt: Number(row['created_at']),
    disabled: Number(row['disabled']) !== 0,
    addresses: Object.freeze(addresses),
  });
}

export class SqliteDirectoryStore implements DirectoryStore {
  readonly kind = 'sqlite';
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #statements = new Map<string, StatementSync>();
  /** Writes through this store (PRAGMA data_version counts only other connections' commits). */
  #changes = 0;

  /** `database` is a file path, ":memory:", or an open DatabaseSync shared with other stores (not closed by close()). */
  constructor(database: string | DatabaseSync, options: SqliteDirectoryOptions = {}) {
    // Password hashes: 0600 before the first write, durable commits.
    ({ db: this.#db, owns: this.#ownsDb } = openSqliteFile(database, { synchronous: 'FULL', busyTimeoutMs: 5000 }));
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#db.exec('PRAGMA foreign_keys = ON;');
    this.#db.exec(SCHEMA);
  }

  #stmt(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (!s) this.#statements.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  #transaction<T>(fn: () => T): T {
    this.#changes++;
    return immediate(this.#db, fn);
  }

  #exists(name: string): boolean {
    return this.#stmt('SELECT 1 FROM users WHERE name = ?').get(name) !== undefined;
  }

  #requireUser(input: string): string {
    const name = normalizeUserName(input);
    if (!this.#exists(name)) throw userNotFound(name);
    return name;
  }

  #insert(users: readonly CheckedUser[]): void {
    const createdAt = this.#clock.now();
    const insertUser = this.#stmt('INSERT INTO users (name, password_hash, created_at, disabled) VALUES (?, ?, ?, ?)');
    const insertAddress = this.#stmt('INSERT OR IGNORE INTO user_addresses (name, address) VALUES (?, ?)');
    this.#transaction(() => {
      for (const u of users) {
        if (this.#exists(u.name)) throw userExists(u.name);
        insertUser.run(u.name, u.passwordHash, createdAt, u.disabled ? 1 : 0);
        for (const a of u.addresses) insertAddress.run(u.name, a);
      }
    });
  }

  #get(name: string): UserInfo | null {
    const row = this.#stmt('SELECT name, created_at, disabled FROM users WHERE name = ?').get(name);
    if (row === undefined) return null;
    const addresses = this.#stmt('SELECT address FROM user_addresses WHERE name = ? ORDER BY address').all(name).map((r) => String(r['address']));
    return toInfo(row, addresses);
  }

  async addUser(user: UserRecord): Promise<UserInfo> {
    const u = checkUser(user);
    this.#insert([u]);
    return this.#get(u.name)!;
  }

  async addUsers(users: readonly UserRecord[]): Promise<UserInfo[]> {
    const checked = checkUsers(users);
    this.#insert(checked);
    return checked.map((u) => this.#get(u.name)!);
  }

  async removeUser(name: string): Promise<void> {
    const normalized = normalizeUserName(name);
    this.#transaction(() => {
      this.#stmt('DELETE FROM user_addresses WHERE name = ?').run(normalized);
      if (Number(this.#stmt('DELETE FROM users WHERE name = ?').run(normalized).changes) === 0) throw userNotFound(normalized);
    });
  }

  async getUser(name: string): Promise<UserInfo | null> {
    const n = userNameOrNull(name);
    return n === null ? null : this.#get(n);
  }

  async listUsers(): Promise<UserInfo[]> {
    return this.#listUsers();
  }

  async searchUsers(query: UserQuery): Promise<{ total: number; users: UserInfo[] }> {
    const s = (query.search ?? '').trim().toLowerCase();
    // instr, not LIKE: the search is a plain substring (no wildcards to escape). Names and addresses are stored
    // normalized (folded), so lower() on them only matters for the search text's own case.
    const where = s === '' ? '' : ` WHERE instr(lower(u.name), ?1) > 0
      OR EXISTS (SELECT 1 FROM user_addresses a WHERE a.name = u.name AND instr(lower(a.address), ?1) > 0)`;
    const args = s === '' ? [] : [s];
    const total = Number(this.#stmt(`SELECT count(*) AS n FROM users u${where}`).get(...args)!['n']);
    const rows = this.#stmt(`SELECT u.name, u.created_at, u.disabled FROM users u${where} ORDER BY u.name LIMIT ?${args.length + 1} OFFSET ?${args.length + 2}`)
      .all(...args, Math.max(0, Math.floor(query.limit)), Math.max(0, Math.floor(query.offset)));
    const addresses = this.#stmt('SELECT address FROM user_addresses WHERE name = ? ORDER BY address');
    return { total, users: rows.map((r) => toInfo(r, addresses.all(String(r['name'])).map((a) => String(a['address'])))) };
  }

  #listUsers(): UserInfo[] {
    const byName = new Map<string, string[]>();
    for (const r of this.#stmt('SELECT name, address FROM user_addresses ORDER BY name, address').all()) {
      const n = String(r['name']);
      let list = byName.get(n);
      if (!list) byName.set(n, (list = []));
      list.push(String(r['address']));
    }
    return this.#stmt('SELECT name, created_at, disabled FROM users ORDER BY name').all()
      .map((row) => toInfo(row, byName.get(String(row['name'])) ?? []));
  }

  async credentials(name: string): Promise<UserCredentials | null> {
    const n = userNameOrNull(name);
    if (n === null) return null;
    const row = this.#stmt('SELECT password_hash, disabled FROM users WHERE name = ?').get(n);
    return row === undefined ? null : { name: n, passwordHash: String(row['password_hash']), disabled: Number(row['disabled']) !== 0 };
  }

  async setPasswordHash(name: string, hash: string): Promise<void> {
    const normalized = normalizeUserName(name);
    passwordHash(hash);
    this.#changes++;
    const result = this.#stmt('UPDATE users SET password_hash = ? WHERE name = ?').run(hash, normalized);
    if (Number(result.changes) === 0) throw userNotFound(normalized);
  }

  async setDisabled(name: string, disabled: boolean): Promise<void> {
    const normalized = normalizeUserName(name);
    this.#changes++;
    const result = this.#stmt('UPDATE users SET disabled = ? WHERE name = ?').run(disabled ? 1 : 0, normalized);
    if (Number(result.changes) === 0) throw userNotFound(normalized);
  }

  async addAddress(name: string, address: string): Promise<void> {
    const normalized = this.#requireUser(name);
    const a = ownedAddress(address);
    this.#changes++;
    this.#stmt('INSERT OR IGNORE INTO user_addresses (name, address) VALUES (?, ?)').run(normalized, a);
  }

  async removeAddress(name: string, address: string): Promise<void> {
    const normalized = this.#requireUser(name);
    const a = ownedAddress(address);
    this.#changes++;
    const result = this.#stmt('DELETE FROM user_addresses WHERE name = ? AND address = ?').run(normalized, a);
    if (Number(result.changes) === 0) throw notOwned(normalized, a);
  }

  async owns(name: string, address: string): Promise<boolean> {
    const user = userNameOrNull(name);
    const a = senderAddress(address);
    if (user === null || a === null) return false;
    return this.#stmt('SELECT 1 FROM user_addresses WHERE name = ? AND (address = ? OR address = ?)').get(user, a.address, a.domain) !== undefined;
  }

  async isMailbox(address: string): Promise<boolean> {
    const a = senderAddress(address);
    if (a === null) return false;
    return this.#stmt('SELECT 1 FROM user_addresses a JOIN users u ON u.name = a.name WHERE a.address = ? AND u.disabled = 0 LIMIT 1')
      .get(a.address) !== undefined;
  }

  async addDomain(domain: string): Promise<string> {
    const d = domainToAdd(domain);
    this.#changes++;
    const result = this.#stmt('INSERT OR IGNORE INTO domains (domain, created_at) VALUES (?, ?)').run(d, this.#clock.now());
    if (Number(result.changes) === 0) throw domainExists(d);
    return d;
  }

  async removeDomain(domain: string): Promise<void> {
    const d = domainOrNull(domain);
    this.#changes++;
    const changes = d === null ? 0 : Number(this.#stmt('DELETE FROM domains WHERE domain = ?').run(d).changes);
    if (changes === 0) throw domainNotFound(String(domain));
  }

  async listDomains(): Promise<string[]> {
    return this.#listDomains();
  }

  #listDomains(): string[] {
    return this.#stmt('SELECT domain FROM domains ORDER BY domain').all().map((r) => String(r['domain']));
  }

  async hasDomain(domain: string): Promise<boolean> {
    const d = domainOrNull(domain);
    return d !== null && this.#stmt('SELECT 1 FROM domains WHERE domain = ?').get(d) !== undefined;
  }

  async addAlias(key: string, targets: readonly string[], options: { readonly remote?: boolean } = {}): Promise<AliasEntry[]> {
    const alias = checkAlias(key, targets);
    const remote = options.remote === true;
    const now = this.#clock.now();
    const insert = this.#stmt('INSERT INTO aliases (address, target, remote, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (address, target) DO UPDATE SET remote = excluded.remote');
    this.#transaction(() => {
      for (const t of alias.targets) insert.run(alias.key, t, remote ? 1 : 0, now);
    });
    return alias.targets.map((t) => ({ key: alias.key, target: t, remote, source: 'database' }));
  }

  async removeAlias(key: string, target?: string): Promise<number> {
    const r = aliasToRemove(key, target);
    this.#changes++;
    const changes = r.target === undefined
      ? Number(this.#stmt('DELETE FROM aliases WHERE address = ?').run(r.key).changes)
      : Number(this.#stmt('DELETE FROM aliases WHERE address = ? AND target = ?').run(r.key, r.target).changes);
    if (changes === 0) throw aliasNotFound(r.key, target);
    return changes;
  }

  async listAliases(): Promise<AliasEntry[]> {
    return this.#listAliases();
  }

  #listAliases(): AliasEntry[] {
    return this.#stmt('SELECT address, target, remote FROM aliases ORDER BY address, target').all()
      .map((r) => ({ key: String(r['address']), target: String(r['target']), remote: Number(r['remote']) === 1, source: 'database' }));
  }

  async lookupAlias(key: string): Promise<AliasTarget[] | null> {
    if (typeof key !== 'string') return null;
    const rows = this.#stmt('SELECT target, remote FROM aliases WHERE address = ? ORDER BY target').all(key);
    if (rows.length === 0) return null;
    return rows.map((r) => ({ address: String(r['target']), remote: Number(r['remote']) === 1 }));
  }

  async version(): Promise<string> {
    return this.#version();
  }

  #dataVersion: StatementSync | null = null;
  #seen = { dataVersion: -1, changes: -1, version: '' };

  /**
   * directory_version, read again only when a commit happened since the last look: PRAGMA data_version (another
   * connection committed) or a write through this store. One PRAGMA (microseconds) when nothing changed.
   */
  #version(): string {
    this.#dataVersion ??= this.#db.prepare('PRAGMA data_version');
    const dataVersion = Number(this.#dataVersion.get()?.['data_version'] ?? 0);
    if (dataVersion !== this.#seen.dataVersion || this.#changes !== this.#seen.changes) {
      const v = this.#stmt('SELECT version FROM directory_version WHERE id = 1').get();
      this.#seen = { dataVersion, changes: this.#changes, version: String(v?.['version'] ?? 0) };
    }
    return this.#seen.version;
  }

  /** The file is local: the receive path checks the version on every lookup (DirectoryStore.sync). */
  readonly sync: SyncRecipientReads = {
    version: () => this.#version(),
    snapshot: () => {
      const version = this.#version();
      return buildRecipientSnapshot(version, this.#listUsers(), this.#listDomains(), this.#listAliases());
    },
  };

  async close(): Promise<void> {
    if (this.#ownsDb && this.#db.isOpen) this.#db.close();
  }
}
