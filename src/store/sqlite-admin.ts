/**
 * The admin store port (policy/admin-accounts.ts) on the embedded SQLite database, relayguard.db under dataDir
 * (beside the directory's tables; the file is 0600 already, it holds password hashes):
 *   admin_users(name PK, password_hash, created_at)
 *   admin_tokens(token_hash PK, admin -> admin_users ON DELETE CASCADE, name, created_at, last_used_at)  UNIQUE (admin, name)
 *   admin_audit(id PK autoincrement, at, actor, action, target, detail, client_ip)
 * Writes use BEGIN IMMEDIATE and check inside the transaction (the CLI and a running serve share the file).
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { RelayguardError } from '../core/errors.ts';
import { TOKEN_USE_RESOLUTION_MS, type AdminRecord, type AdminStore, type AdminTokenRecord, type AuditEntry, type NewAuditEntry } from '../policy/admin-accounts.ts';
import { immediate, openSqliteFile } from './sqlite-common.ts';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS admin_users (
    name TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE IF NOT EXISTS admin_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    admin TEXT NOT NULL REFERENCES admin_users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (admin, name)
  );
  CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    client_ip TEXT
  );
`;

const notFound = (name: string): RelayguardError => new RelayguardError('ERR_ADMIN_NOT_FOUND', `No admin "${name}"`);


export class SqliteAdminStore implements AdminStore {
  readonly #db: DatabaseSync;
  readonly #owns: boolean;
  readonly #statements = new Map<string, StatementSync>();

  constructor(database: string | DatabaseSync) {
    ({ db: this.#db, owns: this.#owns } = openSqliteFile(database, { synchronous: 'FULL', busyTimeoutMs: 5000 }));
    this.#db.exec('PRAGMA foreign_keys = ON;');
    this.#db.exec(SCHEMA);
  }

  #stmt(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (!s) this.#statements.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  #tx<T>(fn: () => T): T {
    return immediate(this.#db, fn);
  }

  #exists(name: string): boolean {
    return this.#stmt('SELECT 1 FROM admin_users WHERE name = ?').get(name) !== undefined;
  }

  async addAdmin(name: string, passwordHash: string, now: number): Promise<void> {
    this.#tx(() => {
      if (this.#exists(name)) throw new RelayguardError('ERR_ADMIN_EXISTS', `Admin "${name}" exists`);
      this.#stmt('INSERT INTO admin_users (name, password_hash, created_at) VALUES (?, ?, ?)').run(name, passwordHash, now);
    });
  }

  async setAdminPassword(name: string, passwordHash: string): Promise<void> {
    const r = this.#stmt('UPDATE admin_users SET password_hash = ? WHERE name = ?').run(passwordHash, name);
    if (Number(r.changes) === 0) throw notFound(name);
  }

  async removeAdmin(name: string): Promise<void> {
    const r = this.#stmt('DELETE FROM admin_users WHERE name = ?').run(name);
    if (Number(r.changes) === 0) throw notFound(name);
  }

  async listAdmins(): Promise<AdminRecord[]> {
    return this.#stmt('SELECT name, created_at FROM admin_users ORDER BY name').all()
      .map((r) => ({ name: String(r['name']), createdAt: Number(r['created_at']) }));
  }

  async passwordHash(name: string): Promise<string | null> {
    const r = this.#stmt('SELECT password_hash FROM admin_users WHERE name = ?').get(name);
    return r === undefined ? null : String(r['password_hash']);
  }

  async addToken(admin: string, name: string, tokenHash: string, now: number): Promise<void> {
    this.#tx(() => {
      if (!this.#exists(admin)) throw notFound(admin);
      if (this.#stmt('SELECT 1 FROM admin_tokens WHERE admin = ? AND name = ?').get(admin, name) !== undefined) {
        throw new RelayguardError('ERR_ADMIN_TOKEN_EXISTS', `Admin "${admin}" already has a token "${name}"`);
      }
      this.#stmt('INSERT INTO admin_tokens (token_hash, admin, name, created_at) VALUES (?, ?, ?, ?)').run(tokenHash, admin, name, now);
    });
  }

  async useToken(tokenHash: string, now: number): Promise<{ admin: string; name: string } | null> {
    const r = this.#stmt('SELECT admin, name, last_used_at FROM admin_tokens WHERE token_hash = ?').get(tokenHash);
    if (r === undefined) return null;
    // Last use to the minute: a script polling the API must not cost a database write per request.
    const last = r['last_used_at'] === null ? null : Number(r['last_used_at']);
    if (last === null || now - last >= TOKEN_USE_RESOLUTION_MS || now < last) {
      this.#stmt('UPDATE admin_tokens SET last_used_at = ? WHERE token_hash = ?').run(now, tokenHash);
    }
    return { admin: String(r['admin']), name: String(r['name']) };
  }

  async listTokens(): Promise<AdminTokenRecord[]> {
    return this.#stmt('SELECT admin, name, created_at, last_used_at FROM admin_tokens ORDER BY admin, name').all().map((r) => ({
      admin: String(r['admin']), name: String(r['name']), createdAt: Number(r['created_at']),
      lastUsedAt: r['last_used_at'] === null ? null : Number(r['last_used_at']),
    }));
  }

  async removeToken(admin: string, name: string): Promise<void> {
    const r = this.#stmt('DELETE FROM admin_tokens WHERE admin = ? AND name = ?').run(admin, name);
    if (Number(r.changes) === 0) throw new RelayguardError('ERR_ADMIN_TOKEN_NOT_FOUND', `Admin "${admin}" has no token "${name}"`);
  }

  async appendAudit(e: NewAuditEntry): Promise<void> {
    this.#stmt('INSERT INTO admin_audit (at, actor, action, target, detail, client_ip) VALUES (?, ?, ?, ?, ?, ?)')
      .run(e.at, e.actor, e.action, e.target, e.detail, e.clientIp);
  }

  async auditLog(options: { limit: number; beforeId?: number | undefined }): Promise<AuditEntry[]> {
    const rows = options.beforeId === undefined
      ? this.#stmt('SELECT * FROM admin_audit ORDER BY id DESC LIMIT ?').all(options.limit)
      : this.#stmt('SELECT * FROM admin_audit WHERE id < ? ORDER BY id DESC LIMIT ?').all(options.beforeId, options.limit);
    return rows.map((r) => ({
      id: Number(r['id']), at: Number(r['at']), actor: String(r['actor']), action: String(r['action']),
      target: r['target'] === null ? null : String(r['target']), detail: r['detail'] === null ? null : String(r['detail']),
      clientIp: r['client_ip'] === null ? null : String(r['client_ip']),
    }));
  }

  async ping(): Promise<void> {
    this.#stmt('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.#owns && this.#db.isOpen) this.#db.close();
  }
}
