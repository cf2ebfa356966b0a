/**
 * `relayguard db migrate|status`: the schema of the shared PostgreSQL database (`store: { postgres: { url } }`).
 * `migrate` applies the pending migrations of src/store/migrations/postgres in one transaction (nodes started
 * together wait for each other; a failing file leaves the schema where it was); `status` compares the database's
 * version with this relayguard's. With the embedded SQLite database (the default) there is nothing to migrate:
 * its tables are created when a store opens it.
 *
 * Exit codes: 0 done (status: the schema matches); 1 status: the schema does not match; 2 a refused or failed
 * migration, or a database that cannot be reached (the message names the error code).
 */
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';

export interface DbCommandIo {
  out(s: string): void;
  err(s: string): void;
}

export function registerDbCommands(
  program: Command,
  io: DbCommandIo,
  setExit: (code: number) => void,
  configFrom: (opts: { config?: string }) => Config,
): void {
  const db = program
    .command('db')
    .description('the shared PostgreSQL database (store.postgres): schema migrations and their status');

  db
    .command('migrate')
    .description('create or upgrade the PostgreSQL schema named by store.postgres.url, in one transaction; with the embedded SQLite database there is nothing to do')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (opts: { config?: string }) => {
      const config = configFrom(opts);
      if (config.store.postgres === null) {
        io.out('embedded SQLite: nothing to migrate');
        return;
      }
      const store = await import('../store/index.ts');
      const where = store.describePostgresUrl(config.store.postgres.url);
      const r = await store.migratePostgres(config.store.postgres.url);
      io.out(r.applied.length === 0
        ? `${where}: schema is current (version ${r.to}), nothing to apply`
        : `${where}: schema migrated from version ${r.from} to ${r.to} (applied ${r.applied.join(', ')})`);
    });

  db
    .command('status')
    .description('compare the schema version of the PostgreSQL database with this relayguard\'s; exits 1 unless they match')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'as JSON')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const config = configFrom(opts);
      if (config.store.postgres === null) {
        if (opts.json) io.out(JSON.stringify({ store: 'sqlite' }));
        else io.out('embedded SQLite: no schema versions (tables are created when relayguard opens the database)');
        return;
      }
      const store = await import('../store/index.ts');
      const where = store.describePostgresUrl(config.store.postgres.url);
      const s = await store.postgresSchemaStatus(config.store.postgres.url);
      const state = s.current === s.expected ? 'current' : s.current < s.expected ? 'old' : 'newer';
      if (opts.json) {
        io.out(JSON.stringify({ store: 'postgres', database: where, state, current: s.current, expected: s.expected, pending: s.pending }));
      } else if (state === 'current') {
        io.out(`${where}: schema version ${s.current}, current`);
      } else if (state === 'old') {
        io.out(`${where}: schema version ${s.current}, this relayguard needs ${s.expected}: run "relayguard db migrate" (pending: ${s.pending.join(', ')})`);
      } else {
        io.out(`${where}: schema version ${s.current} is newer than this relayguard knows (${s.expected}): upgrade relayguard`);
      }
      setExit(state === 'current' ? 0 : 1);
    });
}
