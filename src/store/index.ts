/**
 * Purpose: the storage adapters behind the asynchronous ports other modules own (policy's DirectoryStore,
 *   CounterStore, AdminStore, DecisionStore and TesterRunStore, the queue's MailQueue: openQueue picks the embedded SQLite queue or the shared PostgreSQL one),
 * on the embedded SQLite database (default) or on PostgreSQL (`store: { postgres: { url } }`, shared by every
 * node), and the PostgreSQL schema migrations (`relayguard db migrate`) with the check made when a store opens.
 * Trust: holds password hashes and the relay's address tables; reads and writes the database only (SQLite file
 * under dataDir with mode 0600, or a PostgreSQL server); talks to no SMTP peer. Loads `pg` only for PostgreSQL.
 * Standards: none beyond SQL (SQLite 3, PostgreSQL 15).
 */
import { join } from 'node:path';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import { RelayguardError } from '../core/errors.ts';
import type { AdminStore } from '../policy/admin-accounts.ts';
import type { CounterStore } from '../policy/counters.ts';
import { ERR_STORE_UNAVAILABLE, type DirectoryStore } from '../policy/directory.ts';
import { describePostgresUrl, migrate, schemaStatus, type MigrateResult, type SchemaStatus } from './postgres-schema.ts';
import { SqliteCounterStore } from './sqlite-counters.ts';
import { SqliteDirectoryStore } from './sqlite-directory.ts';
import { SqliteAdminStore } from './sqlite-admin.ts';
import { ThreadedSqliteDecisionStore, sqliteDecisionsPath } from './sqlite-decisions.ts';
import type { DecisionStore } from '../policy/decisions.ts';
import type { TesterRunStore } from '../policy/tester-runs.ts';
import { SqliteTesterRunStore, sqliteTesterRunsPath } from './sqlite-tester-runs.ts';
import { QueueStore, SqliteMailQueue, type MailQueue } from '../queue/index.ts';
import { SqliteAuditStore, sqliteAuditPath, type AuditReportStore, type StoredAuditReport } from './sqlite-audit.ts';

export { SqliteCounterStore } from './sqlite-counters.ts';
export { SqliteDirectoryStore } from './sqlite-directory.ts';
export { SqliteAdminStore } from './sqlite-admin.ts';
export { SqliteDecisionStore, ThreadedSqliteDecisionStore, sqliteDecisionsPath } from './sqlite-decisions.ts';
export { SqliteTesterRunStore, sqliteTesterRunsPath } from './sqlite-tester-runs.ts';
export {
  ERR_STORE_MIGRATION_FAILED, ERR_STORE_MIGRATIONS_MISSING, ERR_STORE_SCHEMA_MODIFIED, ERR_STORE_SCHEMA_NEWER, ERR_STORE_SCHEMA_OLD,
  describePostgresUrl, loadMigrations, type MigrateResult, type SchemaStatus,
} from './postgres-schema.ts';

/** `store.postgres` of the configuration. */
export interface PostgresSettings {
  readonly url: string;
  readonly poolSize: number;
  /** The queue's lease time (ms); default 30 s. */
  readonly leaseTime?: number;
}

export interface OpenQueueOptions {
  /** The embedded queue's directory (queue.db, spool/), used when `postgres` is null. */
  readonly dataDir: string;
  /** PostgreSQL instead of SQLite: one queue shared by every node. */
  readonly postgres: PostgresSettings | null;
  /** This node's name (config `node`). */
  readonly node: string;
  /**
   * 'receive' (default): intake and the runner (SQLite: under the receiver lock, with recovery); 'admin': list,
   * show and the admin commands from another process (the CLI); 'read': list and show only.
   */
  readonly role?: 'receive' | 'admin' | 'read';
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/**
 * The mail queue the configuration names, behind the queue's MailQueue port. PostgreSQL: connects and checks the
 * schema first (ERR_STORE_SCHEMA_OLD: run `relayguard db migrate`; ERR_STORE_UNAVAILABLE). SQLite: 'admin' and
 * 'read' throw ERR_QUEUE_OPEN when dataDir holds no queue.
 */
export async function openQueue(options: OpenQueueOptions): Promise<MailQueue> {
  const role = options.role ?? 'receive';
  const common = { ...(options.clock ? { clock: options.clock } : {}), ...(options.logger ? { logger: options.logger } : {}) };
  if (options.postgres === null) {
    const store = role === 'receive'
      ? QueueStore.open({ dataDir: options.dataDir, ...common })
      : role === 'admin'
        ? QueueStore.openAdmin({ dataDir: options.dataDir, ...common })
        : QueueStore.open({ dataDir: options.dataDir, readOnly: true, ...common });
    return new SqliteMailQueue(store, options.node);
  }
  const { PostgresMailQueue } = await import('./postgres-queue.ts');
  return PostgresMailQueue.open(options.postgres.url, {
    node: options.node,
    poolSize: role === 'receive' ? options.postgres.poolSize : 2,
    role: role === 'receive' ? 'receive' : 'admin',
    ...(options.postgres.leaseTime !== undefined ? { leaseTimeMs: options.postgres.leaseTime } : {}),
    ...common,
  });
}

export interface OpenDirectoryOptions {
  /** The embedded database file (dataDir/relayguard.db), used when `postgres` is null. */
  readonly sqliteFile: string;
  /** PostgreSQL instead of SQLite. */
  readonly postgres: PostgresSettings | null;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

/**
 * The directory store the configuration names. PostgreSQL: connects and checks the schema first
 * (ERR_STORE_SCHEMA_OLD / _NEWER / _MODIFIED, ERR_STORE_UNAVAILABLE).
 */
export async function openDirectoryStore(options: OpenDirectoryOptions): Promise<DirectoryStore> {
  if (options.postgres === null) return new SqliteDirectoryStore(options.sqliteFile, options.clock ? { clock: options.clock } : {});
  const { PostgresDirectoryStore } = await import('./postgres-directory.ts');
  return PostgresDirectoryStore.open(options.postgres.url, {
    poolSize: options.postgres.poolSize,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}

export interface OpenCountersOptions {
  /** `store.postgres` of the configuration (required: without it, counters stay in each process's memory). */
  readonly postgres: PostgresSettings | null;
  readonly logger?: Logger;
}

/**
 * The cluster's shared counters on PostgreSQL (the AUTH throttle of every node; migrations/postgres/004_counters.sql).
 * Connects and checks the schema like the directory store.
 */
export async function openCounterStore(options: OpenCountersOptions): Promise<CounterStore> {
  if (options.postgres === null) throw new TypeError('openCounterStore needs store.postgres (without it use openSqliteCounters or the in-memory throttle)');
  const { PostgresCounterStore } = await import('./postgres-counters.ts');
  return PostgresCounterStore.open(options.postgres.url, {
    poolSize: Math.max(2, Math.min(4, options.postgres.poolSize)),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}

/**
 * The admin store (web admins, API token hashes, audit log; policy/admin-accounts.ts): PostgreSQL's with
 * store.postgres (shared by every node; migrations/postgres/005_admin.sql), else the embedded relayguard.db.
 */
export async function openAdminStore(options: { sqliteFile: string; postgres: PostgresSettings | null; logger?: Logger }): Promise<AdminStore> {
  if (options.postgres === null) return new SqliteAdminStore(options.sqliteFile);
  const { PostgresAdminStore } = await import('./postgres-admin.ts');
  return PostgresAdminStore.open(options.postgres.url, { poolSize: 2, ...(options.logger ? { logger: options.logger } : {}) });
}

/** The counters file the worker processes of one machine share: dataDir/counters.db. */
export function sqliteCountersPath(dataDir: string): string {
  return join(dataDir, 'counters.db');
}

/**
 * Counters shared by the processes of one machine that open the same file (serve's workers on the embedded
 * database): pass the result as AssembleOptions.counters in every worker, and close it when the worker stops.
 */
export function openSqliteCounters(dataDir: string): CounterStore {
  return new SqliteCounterStore(sqliteCountersPath(dataDir));
}

async function withClient<T>(url: string, fn: (client: import('pg').Client) => Promise<T>): Promise<T> {
  const [{ Client }, { isUnavailable }] = await Promise.all([import('pg'), import('./postgres-directory.ts')]);
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000, application_name: 'relayguard db' });
  client.on('error', () => { /* reported by the query that fails */ });
  try {
    await client.connect();
    return await fn(client);
  } catch (err) {
    if (isUnavailable(err) && !(err instanceof RelayguardError)) {
      throw new RelayguardError(ERR_STORE_UNAVAILABLE, `Cannot use PostgreSQL at ${describePostgresUrl(url)}: ${(err as Error).message}`, { cause: err });
    }
    throw err;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Applies the pending PostgreSQL migrations (one transaction; concurrent callers wait for each other). */
export async function migratePostgres(url: string): Promise<MigrateResult> {
  return withClient(url, (c) => migrate(c));
}

/** The database's schema version against this code's, changing nothing. */
export async function postgresSchemaStatus(url: string): Promise<SchemaStatus> {
  return withClient(url, (c) => schemaStatus(c));
}

/**
 * The relay-decision store (policy/decisions.ts): PostgreSQL's table with store.postgres (every node's decisions in
 * one place; migrations/postgres/006_decisions.sql), else dataDir/decisions.db (its own file, apart from relayguard.db, written from a worker thread).
 */
export async function openDecisionStore(options: { dataDir: string; postgres: PostgresSettings | null; logger?: Logger }): Promise<DecisionStore> {
  if (options.postgres === null) return new ThreadedSqliteDecisionStore(sqliteDecisionsPath(options.dataDir));
  const { PostgresDecisionStore } = await import('./postgres-decisions.ts');
  return PostgresDecisionStore.open(options.postgres.url, { poolSize: 2, ...(options.logger ? { logger: options.logger } : {}) });
}

/**
 * The tester-run store (policy/tester-runs.ts: runs started from the web tester): PostgreSQL's table with
 * store.postgres (every node's runs; migrations/postgres/007_tester_runs.sql), else dataDir/tester-runs.db.
 */
export async function openTesterRunStore(options: { dataDir: string; postgres: PostgresSettings | null; logger?: Logger }): Promise<TesterRunStore> {
  if (options.postgres === null) return new SqliteTesterRunStore(sqliteTesterRunsPath(options.dataDir));
  const { PostgresTesterRunStore } = await import('./postgres-tester-runs.ts');
  return PostgresTesterRunStore.open(options.postgres.url, { poolSize: 2, ...(options.logger ? { logger: options.logger } : {}) });
}

export { SqliteAuditStore, sqliteAuditPath, type AuditReportStore, type StoredAuditReport } from './sqlite-audit.ts';

/**
 * The self-audit history: PostgreSQL's table with store.postgres (every node's reports; migrations/postgres/008_audit.sql),
 * else dataDir/audit.db. `keep`: the newest reports kept per node.
 */
export async function openAuditStore<T extends StoredAuditReport>(options: { dataDir: string; postgres: PostgresSettings | null; keep?: number; logger?: Logger }): Promise<AuditReportStore<T>> {
  const keep = options.keep !== undefined ? { keep: options.keep } : {};
  if (options.postgres === null) return new SqliteAuditStore<T>(sqliteAuditPath(options.dataDir), keep);
  const { PostgresAuditStore } = await import('./postgres-audit.ts');
  return PostgresAuditStore.open<T>(options.postgres.url, { poolSize: 2, ...keep, ...(options.logger ? { logger: options.logger } : {}) });
}
