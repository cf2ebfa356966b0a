/**
 * The connection pool of a small PostgreSQL store (admin accounts, counters, relay decisions): bounded timeouts,
 * TCP keepalives, a pooled connection that dies while idle logged (never thrown from the emitter), and the schema
 * checked before the store is used (ERR_STORE_SCHEMA_OLD / _NEWER / _MODIFIED, ERR_STORE_UNAVAILABLE).
 */
import { Pool } from 'pg';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { isDeadConnection, isUnavailable, unavailable } from './postgres-directory.ts';
import { checkSchema, describePostgresUrl, loadMigrations, type Migration } from './postgres-schema.ts';

export interface CheckedPoolOptions {
  /** The store's name in logs and in PostgreSQL's application_name ("relayguard <store>"). */
  readonly store: string;
  readonly poolSize: number;
  readonly connectTimeoutMs: number;
  /** Client-side and server-side (statement_timeout) limit of one statement. */
  readonly queryTimeoutMs: number;
  readonly migrations?: readonly Migration[];
  readonly logger?: Logger;
}

/** A pool whose schema was checked, and the URL as logs may show it (no password). */
export async function openCheckedPool(url: string, o: CheckedPoolOptions): Promise<{ pool: Pool; where: string }> {
  const where = describePostgresUrl(url);
  const logger = o.logger ?? NULL_LOGGER;
  const pool = new Pool({
    connectionString: url,
    max: o.poolSize,
    connectionTimeoutMillis: o.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    query_timeout: o.queryTimeoutMs,
    statement_timeout: o.queryTimeoutMs,
    application_name: `relayguard ${o.store}`,
    keepAlive: true,
  });
  pool.on('error', (err) => logger.warn('postgres connection lost', { store: o.store, err_code: 'ERR_STORE_UNAVAILABLE', err: err.message }));
  try {
    await checkSchema(pool, o.migrations ?? loadMigrations());
  } catch (err) {
    await pool.end().catch(() => {});
    throw isUnavailable(err) ? unavailable(err, where) : err;
  }
  return { pool, where };
}

/**
 * One statement on a store's pool: a connection-level failure becomes ERR_STORE_UNAVAILABLE naming the database
 * (never the password). `retryDeadConnection`: a pooled connection found dead (the server restarted while it
 * idled) is retried once on a fresh one (idempotent statements only).
 */
export async function poolQuery(pool: Pool, where: string, text: string, values: unknown[] = [], options: { readonly retryDeadConnection?: boolean } = {}): Promise<{ rows: Record<string, unknown>[]; rowCount: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await pool.query(text, values);
      return { rows: r.rows as Record<string, unknown>[], rowCount: r.rowCount ?? 0 };
    } catch (err) {
      if (options.retryDeadConnection === true && attempt === 1 && isDeadConnection(err)) continue;
      throw isUnavailable(err) ? unavailable(err, where) : err;
    }
  }
}
