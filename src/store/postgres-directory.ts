/**
 * The directory port (policy/directory.ts) on PostgreSQL (`store: { postgres: { url } }`), shared by every node.
 *
 * Tables: migrations/postgres/001_directory.sql (the SQLite tables, text COLLATE "C"). open() refuses a database
 * whose schema is not the one this code expects (postgres-schema.ts); `relayguard db migrate` brings it there.
 * One pool per store; the read path (isMailbox, owns, lookupAlias, credentials) is one round trip with a named
 * prepared statement. Races are settled by the database: two nodes adding one user both INSERT, the unique key
 * lets one commit and the other gets ERR_USER_EXISTS.
 *
 * Failures: anything that is the connection's fault (refused, reset, timeout, server shutting down, too many
 * clients) rejects with ERR_STORE_UNAVAILABLE, which the SMTP side turns into a 4xx; a connection that dies while
 * idle in the pool is logged and replaced, never an uncaught error.
 */
import { Client, DatabaseError, Pool, type PoolClient, type QueryResultRow } from 'pg';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import {
  ERR_STORE_UNAVAILABLE, type AliasEntry, type AliasTarget, type DirectoryStore, type UserCredentials, type UserInfo, type UserQuery, type UserRecord,
} from '../policy/directory.ts';
import { normalizeUserName } from '../policy/users.ts';
import {
  aliasNotFound, aliasToRemove, checkAlias, checkUser, checkUsers, domainExists, domainNotFound, domainOrNull, domainToAdd,
  notOwned, ownedAddress, passwordHash, senderAddress, userExists, userNameOrNull, userNotFound, type CheckedUser,
} from './directory-input.ts';
import { checkSchema, describePostgresUrl, loadMigrations, type Migration } from './postgres-schema.ts';

export interface PostgresDirectoryOptions {
  readonly clock?: Clock;
  /** Connections in the pool. Default 10. */
  readonly poolSize?: number;
  /** Longest wait for a connection (new or from the pool). Default 5000 ms. */
  readonly connectTimeoutMs?: number;
  /** Longest a statement may run (server statement_timeout and client timeout). Default 10000 ms. */
  readonly queryTimeoutMs?: number;
  readonly logger?: Logger;
  /** The migrations the schema must match (tests). Default: the files of migrations/postgres. */
  readonly migrations?: readonly Migration[];
}

/** SQLSTATE classes and codes that mean "the connection or server", not "this statement". */
/**
 * 08 connection, 28 authorization (login refused), 3D000 no such database, 53 resources (too many clients),
 * 57 operator intervention (shutdown, statement_timeout), 58 system.
 */
const UNAVAILABLE_SQLSTATE = /^(08|28|3D000|53|57|58)/;
const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

/** True when `err` is the database's or the network's fault rather than the statement's. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof RelayguardError) return err.code === ERR_STORE_UNAVAILABLE;
  if (err instanceof DatabaseError) return UNAVAILABLE_SQLSTATE.test(err.code ?? '');
  // Socket errors (ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE ...), pg's own timeouts and "Connection terminated".
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) return true;
  return typeof e?.message === 'string' && /timeout|terminated|Connection|not queryable|Client has encountered/i.test(e.message);
}

/**
 * An established connection that the server closed (57P01 admin shutdown, as after a restart or a
 * pg_terminate_backend; 57P02/57P03 crash and startup) or the network dropped: a read may be tried again on
 * another connection. Not for refused or timed-out connects, which would only double the wait.
 */
export function isDeadConnection(err: unknown): boolean {
  if (err instanceof DatabaseError) return /^57P0[1-3]$/.test(err.code ?? '');
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === 'ECONNRESET' || e?.code === 'EPIPE' || (typeof e?.message === 'string' && /Connection terminated unexpectedly|not queryable/.test(e.message));
}

export function unavailable(err: unknown, where: string): RelayguardError {
  if (err instanceof RelayguardError) return err;
  return new RelayguardError(ERR_STORE_UNAVAILABLE, `PostgreSQL (${where}) is unavailable: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

function sqlstate(err: unknown): string | undefined {
  return err instanceof DatabaseError ? err.code : undefined;
}

/** "Key (name)=(bob) already exists." -> "bob" */
function duplicateKey(err: unknown): string | null {
  const m = /\)=\((.*)\) already exists/.exec(err instanceof DatabaseError ? err.detail ?? '' : '');
  return m ? m[1]! : null;
}

interface UserRow extends QueryResultRow {
  name: string;
  created_at: string | number;
  disabled: boolean;
  addresses: string[];
}

function toInfo(row: UserRow): UserInfo {
  return Object.freeze({
    name: String(row.name),
    createdAt: Number(row.created_at),
    disabled: row.disabled === true,
    addresses: Object.freeze([...row.addresses]),
  });
}

const USER_SELECT = `SELECT u.name, u.created_at, u.disabled,
  COALESCE(array_agg(a.address ORDER BY a.address) FILTER (WHERE a.address IS NOT NULL), '{}') AS addresses
  FROM users u LEFT JOIN user_addresses a ON a.name = u.name`;

export class PostgresDirectoryStore implements DirectoryStore {
  readonly kind = 'postgres';
  readonly #pool: Pool;
  readonly #clock: Clock;
  readonly #where: string;
  readonly #url: string;
  readonly #logger: Logger;
  /** Stop functions of the running watch() listeners (close() stops them). */
  readonly #watchers = new Set<() => void>();
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string, clock: Clock, url: string, logger: Logger) {
    this.#pool = pool;
    this.#where = where;
    this.#clock = clock;
    this.#url = url;
    this.#logger = logger;
  }

  /**
   * Connects and checks the schema (ERR_STORE_SCHEMA_OLD / _NEWER / _MODIFIED; ERR_STORE_UNAVAILABLE when the
   * database cannot be reached). Nothing is left open when it throws.
   */
  static async open(url: string, options: PostgresDirectoryOptions = {}): Promise<PostgresDirectoryStore> {
    const where = describePostgresUrl(url);
    const logger = options.logger ?? NULL_LOGGER;
    const queryTimeout = options.queryTimeoutMs ?? 10_000;
    const pool = new Pool({
      connectionString: url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      idleTimeoutMillis: 30_000,
      query_timeout: queryTimeout,
      statement_timeout: queryTimeout,
      application_name: 'relayguard',
      keepAlive: true,
    });
    // A pooled connection that dies while idle (server restart, failover) is dropped by the pool; without a
    // listener the error would be thrown from the event emitter and end the process.
    pool.on('error', (err) => logger.warn('postgres connection lost', { store: 'directory', err_code: sqlstate(err) ?? errCode(err), err: err.message }));
    try {
      await checkSchema(pool, options.migrations ?? loadMigrations());
    } catch (err) {
      await pool.end().catch(() => {});
      throw isUnavailable(err) ? unavailable(err, where) : err;
    }
    return new PostgresDirectoryStore(pool, where, options.clock ?? SYSTEM_CLOCK, url, logger);
  }

  /**
   * A read. Retried on another connection when a pooled one turns out dead (server restart, failover): each dead
   * one leaves the pool when it fails, so at most pool size + 1 tries reach a live or a new connection.
   */
  async #query<R extends QueryResultRow>(name: string | null, text: string, values: unknown[]): Promise<R[]> {
    const tries = (this.#pool.options.max ?? 10) + 1;
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await this.#pool.query<R>(name === null ? { text, values } : { name, text, values });
        return r.rows;
      } catch (err) {
        if (attempt < tries && isDeadConnection(err)) {
          // Found by a query rather than while idle (the pool's 'error' event): the same event, then the next try.
          this.#logger.warn('postgres connection lost', { store: 'directory', err_code: sqlstate(err) ?? errCode(err), err: (err as Error).message });
          continue;
        }
        throw isUnavailable(err) ? unavailable(err, this.#where) : err;
      }
    }
  }

  async #count(text: string, values: unknown[]): Promise<number> {
    try {
      return (await this.#pool.query(text, values)).rowCount ?? 0;
    } catch (err) {
      throw isUnavailable(err) ? unavailable(err, this.#where) : err;
    }
  }

  async #transaction<T>(fn: (client: PoolClient) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw unavailable(err, this.#where);
    }
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (isUnavailable(err)) broken = err as Error;
      else await client.query('ROLLBACK').catch((e: unknown) => { broken = e as Error; });
      throw isUnavailable(err) ? unavailable(err, this.#where) : err;
    } finally {
      client.release(broken); // a broken connection is closed, not returned to the pool
    }
  }

  async #get(name: string): Promise<UserInfo | null> {
    const rows = await this.#query<UserRow>('rg_dir_get_user', `${USER_SELECT} WHERE u.name = $1 GROUP BY u.name`, [name]);
    return rows.length === 0 ? null : toInfo(rows[0]!);
  }

  async #insert(users: readonly CheckedUser[]): Promise<void> {
    const createdAt = this.#clock.now();
    await this.#transaction(async (c) => {
      const existing = await c.query<{ name: string }>('SELECT name FROM users WHERE name = ANY($1::text[]) ORDER BY name LIMIT 1', [users.map((u) => u.name)]);
      if (existing.rows.length > 0) throw userExists(existing.rows[0]!.name);
      try {
        await c.query(
          'INSERT INTO users (name, password_hash, created_at, disabled) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[])',
          [users.map((u) => u.name), users.map((u) => u.passwordHash), users.map(() => createdAt), users.map((u) => u.disabled)],
        );
      } catch (err) {
        // Another writer inserted the same name after our look (it committed while we waited on its row).
        if (sqlstate(err) === UNIQUE_VIOLATION) throw userExists(duplicateKey(err) ?? users[0]!.name, err);
        throw err;
      }
      const names = users.flatMap((u) => u.addresses.map(() => u.name));
      const addresses = users.flatMap((u) => u.addresses);
      if (addresses.length > 0) {
        await c.query('INSERT INTO user_addresses (name, address) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING', [names, addresses]);
      }
    });
  }

  async addUser(user: UserRecord): Promise<UserInfo> {
    const u = checkUser(user);
    await this.#insert([u]);
    return (await this.#get(u.name))!;
  }

  async addUsers(users: readonly UserRecord[]): Promise<UserInfo[]> {
    const checked = checkUsers(users);
    if (checked.length === 0) return [];
    await this.#insert(checked);
    const byName = new Map((await this.#query<UserRow>(null, `${USER_SELECT} WHERE u.name = ANY($1::text[]) GROUP BY u.name`, [checked.map((u) => u.name)]))
      .map((r) => [r.name, toInfo(r)]));
    return checked.map((u) => byName.get(u.name)!);
  }

  async removeUser(name: string): Promise<void> {
    const normalized = normalizeUserName(name);
    // user_addresses rows go with it (ON DELETE CASCADE).
    if ((await this.#count('DELETE FROM users WHERE name = $1', [normalized])) === 0) throw userNotFound(normalized);
  }

  async getUser(name: string): Promise<UserInfo | null> {
    const n = userNameOrNull(name);
    return n === null ? null : this.#get(n);
  }

  async listUsers(): Promise<UserInfo[]> {
    return (await this.#query<UserRow>(null, `${USER_SELECT} GROUP BY u.name ORDER BY u.name`, [])).map(toInfo);
  }

  async searchUsers(query: UserQuery): Promise<{ total: number; users: UserInfo[] }> {
    const s = (query.search ?? '').trim().toLowerCase();
    // strpos, not LIKE: a plain substring (no wildcards to escape); names and addresses are stored folded.
    const where = s === '' ? '' : ` WHERE strpos(lower(u.name), $1) > 0
      OR EXISTS (SELECT 1 FROM user_addresses x WHERE x.name = u.name AND strpos(lower(x.address), $1) > 0)`;
    const args: unknown[] = s === '' ? [] : [s];
    const [count, rows] = await Promise.all([
      this.#query<{ n: number }>(null, `SELECT count(*)::int AS n FROM users u${where}`, args),
      this.#query<UserRow>(null, `${USER_SELECT}${where} GROUP BY u.name ORDER BY u.name LIMIT $${args.length + 1} OFFSET $${args.length + 2}`,
        [...args, Math.max(0, Math.floor(query.limit)), Math.max(0, Math.floor(query.offset))]),
    ]);
    return { total: Number(count[0]!.n), users: rows.map(toInfo) };
  }

  async credentials(name: string): Promise<UserCredentials | null> {
    const n = userNameOrNull(name);
    if (n === null) return null;
    const rows = await this.#query<{ password_hash: string; disabled: boolean }>('rg_dir_credentials', 'SELECT password_hash, disabled FROM users WHERE name = $1', [n]);
    return rows.length === 0 ? null : { name: n, passwordHash: String(rows[0]!.password_hash), disabled: rows[0]!.disabled === true };
  }

  async setPasswordHash(name: string, hash: string): Promise<void> {
    const normalized = normalizeUserName(name);
    passwordHash(hash);
    if ((await this.#count('UPDATE users SET password_hash = $1 WHERE name = $2', [hash, normalized])) === 0) throw userNotFound(normalized);
  }

  async setDisabled(name: string, disabled: boolean): Promise<void> {
    const normalized = normalizeUserName(name);
    if ((await this.#count('UPDATE users SET disabled = $1 WHERE name = $2', [disabled === true, normalized])) === 0) throw userNotFound(normalized);
  }

  async #requireUser(input: string): Promise<string> {
    const name = normalizeUserName(input);
    if ((await this.#query(null, 'SELECT 1 FROM users WHERE name = $1', [name])).length === 0) throw userNotFound(name);
    return name;
  }

  async addAddress(name: string, address: string): Promise<void> {
    const normalized = await this.#requireUser(name);
    const a = ownedAddress(address);
    try {
      await this.#count('INSERT INTO user_addresses (name, address) VALUES ($1, $2) ON CONFLICT DO NOTHING', [normalized, a]);
    } catch (err) {
      if (sqlstate(err) === FOREIGN_KEY_VIOLATION) throw userNotFound(normalized, err); // removed meanwhile
      throw err;
    }
  }

  async removeAddress(name: string, address: string): Promise<void> {
    const normalized = await this.#requireUser(name);
    const a = ownedAddress(address);
    if ((await this.#count('DELETE FROM user_addresses WHERE name = $1 AND address = $2', [normalized, a])) === 0) throw notOwned(normalized, a);
  }

  async owns(name: string, address: string): Promise<boolean> {
    const user = userNameOrNull(name);
    const a = senderAddress(address);
    if (user === null || a === null) return false;
    const rows = await this.#query('rg_dir_owns', 'SELECT 1 FROM user_addresses WHERE name = $1 AND address IN ($2, $3) LIMIT 1', [user, a.address, a.domain]);
    return rows.length > 0;
  }

  async isMailbox(address: string): Promise<boolean> {
    const a = senderAddress(address);
    if (a === null) return false;
    const rows = await this.#query(
      'rg_dir_is_mailbox',
      'SELECT 1 FROM user_addresses a JOIN users u ON u.name = a.name WHERE a.address = $1 AND NOT u.disabled LIMIT 1',
      [a.address],
    );
    return rows.length > 0;
  }

  async addDomain(domain: string): Promise<string> {
    const d = domainToAdd(domain);
    if ((await this.#count('INSERT INTO domains (domain, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING', [d, this.#clock.now()])) === 0) throw domainExists(d);
    return d;
  }

  async removeDomain(domain: string): Promise<void> {
    const d = domainOrNull(domain);
    const changes = d === null ? 0 : await this.#count('DELETE FROM domains WHERE domain = $1', [d]);
    if (changes === 0) throw domainNotFound(String(domain));
  }

  async listDomains(): Promise<string[]> {
    return (await this.#query<{ domain: string }>('rg_dir_domains', 'SELECT domain FROM domains ORDER BY domain', [])).map((r) => r.domain);
  }

  async hasDomain(domain: string): Promise<boolean> {
    const d = domainOrNull(domain);
    return d !== null && (await this.#query('rg_dir_has_domain', 'SELECT 1 FROM domains WHERE domain = $1', [d])).length > 0;
  }

  async addAlias(key: string, targets: readonly string[], options: { readonly remote?: boolean } = {}): Promise<AliasEntry[]> {
    const alias = checkAlias(key, targets);
    const remote = options.remote === true;
    // One statement: all targets or none.
    await this.#count(
      `INSERT INTO aliases (address, target, remote, created_at) SELECT $1, t, $3, $4 FROM unnest($2::text[]) AS t
       ON CONFLICT (address, target) DO UPDATE SET remote = excluded.remote`,
      [alias.key, alias.targets, remote, this.#clock.now()],
    );
    return alias.targets.map((t) => ({ key: alias.key, target: t, remote, source: 'database' }));
  }

  async removeAlias(key: string, target?: string): Promise<number> {
    const r = aliasToRemove(key, target);
    const changes = r.target === undefined
      ? await this.#count('DELETE FROM aliases WHERE address = $1', [r.key])
      : await this.#count('DELETE FROM aliases WHERE address = $1 AND target = $2', [r.key, r.target]);
    if (changes === 0) throw aliasNotFound(r.key, target);
    return changes;
  }

  async listAliases(): Promise<AliasEntry[]> {
    return (await this.#query<{ address: string; target: string; remote: boolean }>(null, 'SELECT address, target, remote FROM aliases ORDER BY address, target', []))
      .map((r) => ({ key: r.address, target: r.target, remote: r.remote === true, source: 'database' }));
  }

  async lookupAlias(key: string): Promise<AliasTarget[] | null> {
    // PostgreSQL text cannot hold NUL; no stored key has one (normalizeAliasKey refuses control characters).
    if (typeof key !== 'string' || key.includes('\0')) return null;
    const rows = await this.#query<{ target: string; remote: boolean }>('rg_dir_lookup_alias', 'SELECT target, remote FROM aliases WHERE address = $1 ORDER BY target', [key]);
    return rows.length === 0 ? null : rows.map((r) => ({ address: r.target, remote: r.remote === true }));
  }

  async version(): Promise<string> {
    const rows = await this.#query<{ version: string }>('rg_dir_version', 'SELECT version FROM directory_version', []);
    return String(rows[0]?.version ?? 0);
  }

  /**
   * LISTEN relayguard_directory on a connection of its own (migrations/postgres/003_directory_changes.sql sends
   * one NOTIFY per changing statement, at commit). A lost connection is re-established with backoff (1 s, doubling
   * to 30 s); after it is back, `onChange` is called once, since notifications sent meanwhile are lost.
   */
  watch(onChange: () => void): () => void {
    let stopped = false;
    let client: Client | null = null;
    let timer: NodeJS.Timeout | null = null;
    let delay = 1000;
    let connectedBefore = false;
    const schedule = (): void => {
      if (stopped || timer !== null) return;
      timer = setTimeout(() => { timer = null; void connect(); }, delay);
      timer.unref();
      delay = Math.min(delay * 2, 30_000);
    };
    const connect = async (): Promise<void> => {
      const c = new Client({ connectionString: this.#url, connectionTimeoutMillis: 5000, application_name: 'relayguard listen', keepAlive: true });
      client = c;
      let failed = false;
      const lost = (err?: Error): void => {
        if (failed) return;
        failed = true;
        if (client === c) client = null;
        c.end().catch(() => {});
        if (!stopped) {
          this.#logger.warn('directory change listener lost', { store: 'directory', err_code: ERR_STORE_UNAVAILABLE, err: err?.message ?? 'connection ended' });
          schedule();
        }
      };
      c.on('error', lost);
      c.on('end', () => lost());
      c.on('notification', () => { if (!stopped) onChange(); });
      try {
        await c.connect();
        await c.query('LISTEN relayguard_directory');
        if (stopped) { await c.end().catch(() => {}); return; }
        delay = 1000;
        if (connectedBefore) onChange(); // whatever changed while we were away
        connectedBefore = true;
      } catch (err) {
        lost(err as Error);
      }
    };
    void connect();
    const stop = (): void => {
      stopped = true;
      this.#watchers.delete(stop);
      if (timer !== null) clearTimeout(timer);
      const c = client;
      client = null;
      c?.end().catch(() => {});
    };
    this.#watchers.add(stop);
    return stop;
  }

  close(): Promise<void> {
    for (const stop of [...this.#watchers]) stop();
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}

function errCode(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'ERR_STORE_UNAVAILABLE';
}
