/**
 * The admin store port (policy/admin-accounts.ts) on PostgreSQL (migrations/postgres/005_admin.sql): admins, API
 * token hashes and the audit log shared by every node. Each method is one statement (one round trip); the unique
 * keys decide races between nodes (ERR_ADMIN_EXISTS, ERR_ADMIN_TOKEN_EXISTS). Connection trouble rejects with
 * ERR_STORE_UNAVAILABLE.
 */
import { DatabaseError, type Pool } from 'pg';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { TOKEN_USE_RESOLUTION_MS, type AdminRecord, type AdminStore, type AdminTokenRecord, type AuditEntry, type NewAuditEntry } from '../policy/admin-accounts.ts';
import { openCheckedPool, poolQuery } from './postgres-pool.ts';
import type { Migration } from './postgres-schema.ts';

export interface PostgresAdminOptions {
  readonly poolSize?: number;
  readonly logger?: Logger;
  readonly migrations?: readonly Migration[];
}

const notFound = (name: string): RelayguardError => new RelayguardError('ERR_ADMIN_NOT_FOUND', `No admin "${name}"`);
const uniqueViolation = (err: unknown): boolean => err instanceof DatabaseError && err.code === '23505';
const fkViolation = (err: unknown): boolean => err instanceof DatabaseError && err.code === '23503';

export class PostgresAdminStore implements AdminStore {
  readonly #pool: Pool;
  readonly #where: string;
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string) {
    this.#pool = pool;
    this.#where = where;
  }

  static async open(url: string, options: PostgresAdminOptions = {}): Promise<PostgresAdminStore> {
    const { pool, where } = await openCheckedPool(url, {
      store: 'admin', poolSize: options.poolSize ?? 2, connectTimeoutMs: 2000, queryTimeoutMs: 5000,
      ...(options.migrations ? { migrations: options.migrations } : {}), ...(options.logger ? { logger: options.logger } : {}),
    });
    return new PostgresAdminStore(pool, where);
  }

  #q(text: string, values: unknown[] = []): Promise<{ rows: Record<string, unknown>[]; rowCount: number }> {
    return poolQuery(this.#pool, this.#where, text, values, { retryDeadConnection: true });
  }

  async addAdmin(name: string, passwordHash: string, now: number): Promise<void> {
    try {
      await this.#q('INSERT INTO admin_users (name, password_hash, created_at) VALUES ($1, $2, $3)', [name, passwordHash, now]);
    } catch (err) {
      if (uniqueViolation(err)) throw new RelayguardError('ERR_ADMIN_EXISTS', `Admin "${name}" exists`);
      throw err;
    }
  }

  async setAdminPassword(name: string, passwordHash: string): Promise<void> {
    if ((await this.#q('UPDATE admin_users SET password_hash = $2 WHERE name = $1', [name, passwordHash])).rowCount === 0) throw notFound(name);
  }

  async removeAdmin(name: string): Promise<void> {
    if ((await this.#q('DELETE FROM admin_users WHERE name = $1', [name])).rowCount === 0) throw notFound(name);
  }

  async listAdmins(): Promise<AdminRecord[]> {
    return (await this.#q('SELECT name, created_at FROM admin_users ORDER BY name')).rows.map((r) => ({ name: String(r['name']), createdAt: Number(r['created_at']) }));
  }

  async passwordHash(name: string): Promise<string | null> {
    const r = (await this.#q('SELECT password_hash FROM admin_users WHERE name = $1', [name])).rows[0];
    return r === undefined ? null : String(r['password_hash']);
  }

  async addToken(admin: string, name: string, tokenHash: string, now: number): Promise<void> {
    try {
      await this.#q('INSERT INTO admin_tokens (token_hash, admin, name, created_at) VALUES ($1, $2, $3, $4)', [tokenHash, admin, name, now]);
    } catch (err) {
      if (fkViolation(err)) throw notFound(admin);
      if (uniqueViolation(err)) throw new RelayguardError('ERR_ADMIN_TOKEN_EXISTS', `Admin "${admin}" already has a token "${name}"`);
      throw err;
    }
  }

  async useToken(tokenHash: string, now: number): Promise<{ admin: string; name: string } | null> {
    // Last use to the minute (TOKEN_USE_RESOLUTION_MS): no write per request of a polling script.
    const found = (await this.#q('SELECT admin, name, last_used_at FROM admin_tokens WHERE token_hash = $1', [tokenHash])).rows[0];
    if (found !== undefined) {
      const last = found['last_used_at'] === null ? null : Number(found['last_used_at']);
      if (last === null || now - last >= TOKEN_USE_RESOLUTION_MS || now < last) await this.#q('UPDATE admin_tokens SET last_used_at = $2 WHERE token_hash = $1', [tokenHash, now]);
    }
    const r = found;
    return r === undefined ? null : { admin: String(r['admin']), name: String(r['name']) };
  }

  async listTokens(): Promise<AdminTokenRecord[]> {
    return (await this.#q('SELECT admin, name, created_at, last_used_at FROM admin_tokens ORDER BY admin, name')).rows.map((r) => ({
      admin: String(r['admin']), name: String(r['name']), createdAt: Number(r['created_at']),
      lastUsedAt: r['last_used_at'] === null ? null : Number(r['last_used_at']),
    }));
  }

  async removeToken(admin: string, name: string): Promise<void> {
    if ((await this.#q('DELETE FROM admin_tokens WHERE admin = $1 AND name = $2', [admin, name])).rowCount === 0) {
      throw new RelayguardError('ERR_ADMIN_TOKEN_NOT_FOUND', `Admin "${admin}" has no token "${name}"`);
    }
  }

  async appendAudit(e: NewAuditEntry): Promise<void> {
    await this.#q('INSERT INTO admin_audit (at, actor, action, target, detail, client_ip) VALUES ($1, $2, $3, $4, $5, $6)', [e.at, e.actor, e.action, e.target, e.detail, e.clientIp]);
  }

  async auditLog(options: { limit: number; beforeId?: number | undefined }): Promise<AuditEntry[]> {
    const r = options.beforeId === undefined
      ? await this.#q('SELECT * FROM admin_audit ORDER BY id DESC LIMIT $1', [options.limit])
      : await this.#q('SELECT * FROM admin_audit WHERE id < $1 ORDER BY id DESC LIMIT $2', [options.beforeId, options.limit]);
    return r.rows.map((x) => ({
      id: Number(x['id']), at: Number(x['at']), actor: String(x['actor']), action: String(x['action']),
      target: x['target'] === null ? null : String(x['target']), detail: x['detail'] === null ? null : String(x['detail']),
      clientIp: x['client_ip'] === null ? null : String(x['client_ip']),
    }));
  }

  async ping(): Promise<void> {
    await this.#q('SELECT 1');
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}
