/**
 * PostgreSQL schema migrations: numbered SQL files in migrations/postgres/ (NNN_name.sql, from 001 with no gap),
 * applied by `relayguard db migrate`, and the check every PostgreSQL store makes when it opens.
 *
 * Protocol (migrate): one transaction on one connection: take a transaction-scoped advisory lock (two nodes
 * migrating at once queue behind each other; the second finds nothing to do), create schema_migrations if missing,
 * refuse when the database has a version this code does not know (ERR_STORE_SCHEMA_NEWER) or an applied file
 * whose text changed since (ERR_STORE_SCHEMA_MODIFIED), run every pending file and record it (version, name,
 * sha-256 of its text), COMMIT. PostgreSQL DDL is transactional: a failing file (ERR_STORE_MIGRATION_FAILED)
 * leaves the database exactly at the version it had.
 *
 * Check (open): the database's version must equal the newest file's: older is ERR_STORE_SCHEMA_OLD ("run
 * relayguard db migrate"), newer is ERR_STORE_SCHEMA_NEWER (a newer relayguard migrated it: upgrade this node).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ClientBase, QueryResult, QueryResultRow } from 'pg';
import { RelayguardError } from '../core/errors.ts';

export const ERR_STORE_SCHEMA_OLD = 'ERR_STORE_SCHEMA_OLD';
export const ERR_STORE_SCHEMA_NEWER = 'ERR_STORE_SCHEMA_NEWER';
export const ERR_STORE_SCHEMA_MODIFIED = 'ERR_STORE_SCHEMA_MODIFIED';
export const ERR_STORE_MIGRATION_FAILED = 'ERR_STORE_MIGRATION_FAILED';
export const ERR_STORE_MIGRATIONS_MISSING = 'ERR_STORE_MIGRATIONS_MISSING';

/** Where the SQL files are (beside this module; `npm run build` must copy them next to the built one). */
export const POSTGRES_MIGRATIONS_DIR: string = fileURLToPath(new URL('./migrations/postgres/', import.meta.url));

export interface Migration {
  readonly version: number;
  /** File name without ".sql", e.g. "001_directory". */
  readonly name: string;
  readonly sql: string;
  /** sha-256 of the file's text, hex. */
  readonly checksum: string;
}

/** Anything that runs a query: a pg Pool, Client or PoolClient. */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
}

/** The URL without its password, for messages and logs. */
export function describePostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    return u.toString();
  } catch {
    return 'the configured PostgreSQL database';
  }
}

const FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;

/** Reads the migration files of `dir`, sorted; throws ERR_STORE_MIGRATIONS_MISSING when they are missing, misnamed or not numbered 1..N. */
export function loadMigrations(dir: string = POSTGRES_MIGRATIONS_DIR): Migration[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.sql'));
  } catch (err) {
    throw new RelayguardError(ERR_STORE_MIGRATIONS_MISSING, `Cannot read the PostgreSQL migrations in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const migrations = names.map((n) => {
    const m = FILE.exec(n);
    if (!m) throw new RelayguardError(ERR_STORE_MIGRATIONS_MISSING, `Migration file "${n}" in ${dir} is not named NNN_name.sql`);
    const sql = readFileSync(`${dir.replace(/\/?$/, '/')}${n}`, 'utf8');
    return { version: Number(m[1]), name: n.slice(0, -4), sql, checksum: createHash('sha256').update(sql).digest('hex') };
  }).sort((a, b) => a.version - b.version);
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new RelayguardError(ERR_STORE_MIGRATIONS_MISSING, `Migrations in ${dir} must be numbered 001, 002, ... without gaps or repeats; found ${m.name}`);
  });
  if (migrations.length === 0) throw new RelayguardError(ERR_STORE_MIGRATIONS_MISSING, `No migration files in ${dir}`);
  return migrations;
}

export interface AppliedMigration {
  readonly version: number;
  readonly name: string;
  readonly checksum: string;
}

export interface SchemaStatus {
  /** Highest version applied to the database; 0 for a database never migrated. */
  readonly current: number;
  /** Highest version this code knows. */
  readonly expected: number;
  /** Files this code would apply, in order. */
  readonly pending: readonly string[];
  readonly applied: readonly AppliedMigration[];
}

async function readApplied(db: Queryable): Promise<AppliedMigration[]> {
  const exists = await db.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (exists.rows[0]?.t == null) return [];
  const r = await db.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
  return r.rows.map((row) => ({ version: Number(row.version), name: String(row.name), checksum: String(row.checksum) }));
}

function statusOf(applied: readonly AppliedMigration[], migrations: readonly Migration[]): SchemaStatus {
  const current = applied.reduce((max, a) => Math.max(max, a.version), 0);
  const expected = migrations.length === 0 ? 0 : migrations[migrations.length - 1]!.version;
  return { current, expected, pending: migrations.filter((m) => m.version > current).map((m) => m.name), applied };
}

/** Throws ERR_STORE_SCHEMA_MODIFIED when an applied migration is not the file this code has under that number. */
function checkApplied(applied: readonly AppliedMigration[], migrations: readonly Migration[]): void {
  for (const a of applied) {
    const m = migrations[a.version - 1];
    if (m === undefined) continue; // newer than this code: the caller decides
    if (m.checksum !== a.checksum || m.name !== a.name) {
      throw new RelayguardError(
        ERR_STORE_SCHEMA_MODIFIED,
        `PostgreSQL schema migration ${a.version} was applied as "${a.name}" (sha-256 ${a.checksum.slice(0, 12)}), but this relayguard has "${m.name}" (sha-256 ${m.checksum.slice(0, 12)}): a migration file was changed after it was applied`,
      );
    }
  }
}

function newer(status: SchemaStatus): RelayguardError {
  return new RelayguardError(
    ERR_STORE_SCHEMA_NEWER,
    `The PostgreSQL schema is at version ${status.current}, newer than this relayguard knows (${status.expected}): upgrade relayguard on this node`,
  );
}

/** The database's schema version against this code's, without changing anything. */
export async function schemaStatus(db: Queryable, migrations: readonly Migration[] = loadMigrations()): Promise<SchemaStatus> {
  return statusOf(await readApplied(db), migrations);
}

/**
 * Refuses a database whose schema is not the one this code expects (ERR_STORE_SCHEMA_OLD, ERR_STORE_SCHEMA_NEWER,
 * ERR_STORE_SCHEMA_MODIFIED); returns the version.
 */
export async function checkSchema(db: Queryable, migrations: readonly Migration[] = loadMigrations()): Promise<number> {
  const status = await schemaStatus(db, migrations);
  if (status.current > status.expected) throw newer(status);
  checkApplied(status.applied, migrations);
  if (status.current < status.expected) {
    throw new RelayguardError(
      ERR_STORE_SCHEMA_OLD,
      `The PostgreSQL schema is at version ${status.current}, this relayguard needs ${status.expected} (pending: ${status.pending.join(', ')}): run "relayguard db migrate"`,
    );
  }
  return status.current;
}

export interface MigrateResult {
  readonly from: number;
  readonly to: number;
  /** Names of the files applied now, in order (empty when the schema was current). */
  readonly applied: readonly string[];
}

/** Applies the pending migrations in one transaction on `client` (a Client or a PoolClient, not a Pool). */
export async function migrate(client: ClientBase, migrations: readonly Migration[] = loadMigrations()): Promise<MigrateResult> {
  await client.query('BEGIN');
  try {
    // Serializes concurrent migrators (two nodes starting at once) until this transaction ends.
    await client.query("SELECT pg_advisory_xact_lock(hashtext('relayguard.schema_migrations'))");
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      checksum TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`);
    const status = statusOf(await readApplied(client), migrations);
    if (status.current > status.expected) throw newer(status);
    checkApplied(status.applied, migrations);
    const applied: string[] = [];
    for (const m of migrations) {
      if (m.version <= status.current) continue;
      try {
        await client.query(m.sql);
      } catch (err) {
        throw new RelayguardError(
          ERR_STORE_MIGRATION_FAILED,
          `PostgreSQL migration ${m.name} failed: ${(err as Error).message}; nothing was applied (the schema stays at version ${status.current})`,
          { cause: err },
        );
      }
      await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
      applied.push(m.name);
    }
    await client.query('COMMIT');
    return { from: status.current, to: Math.max(status.current, status.expected), applied };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
