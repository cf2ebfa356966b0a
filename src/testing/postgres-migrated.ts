/**
 * A private PostgreSQL 15 (src/testing/postgres.ts) with relayguard's schema migrated, for a test file: registers
 * the file's before/after hooks and returns the instance and an open admin connection once `before` ran.
 */
import { after, before } from 'node:test';
import pg from 'pg';
import { migrate } from '../store/postgres-schema.ts';
import { startPostgres, type PostgresInstance } from './postgres.ts';

export interface MigratedPostgres {
  /** The server (valid inside tests, after the file's `before`). */
  readonly pg: PostgresInstance;
  /** A connection for the test's own queries (TRUNCATE between cases, checks). */
  readonly admin: pg.Client;
}

export function migratedPostgres(): MigratedPostgres {
  const state: { pg?: PostgresInstance; admin?: pg.Client } = {};
  before(async () => {
    state.pg = await startPostgres(); // fails, naming the Debian package, when postgresql-15 is missing
    state.admin = new pg.Client(state.pg.url);
    await state.admin.connect();
    await migrate(state.admin);
  });
  after(async () => {
    await state.admin?.end().catch(() => {});
    await state.pg?.stop();
  });
  return {
    get pg() { if (!state.pg) throw new Error('migratedPostgres: used before the before() hook ran'); return state.pg; },
    get admin() { if (!state.admin) throw new Error('migratedPostgres: used before the before() hook ran'); return state.admin; },
  };
}
