import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { RelayguardError } from '../core/errors.ts';
import { freePort } from '../testing/ports.ts';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { migratePostgres, postgresSchemaStatus } from './index.ts';
import { PostgresDirectoryStore } from './postgres-directory.ts';
import { checkSchema, loadMigrations, migrate, schemaStatus, type Migration } from './postgres-schema.ts';

let pg: PostgresInstance;
let n = 0;

before(async () => { pg = await startPostgres(); });
after(async () => { await pg?.stop(); });

function code(c: string, text?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof RelayguardError, String(e));
    assert.equal(e.code, c, e.message);
    if (text) assert.match(e.message, text);
    return true;
  };
}

/** A new empty database and a connected client. */
async function freshDb(): Promise<{ url: string; client: Client; done: () => Promise<void> }> {
  const url = await pg.createDatabase(`schema_${++n}`);
  const client = new Client(url);
  await client.connect();
  return { url, client, done: () => client.end() };
}

function extra(version: number, name: string, sql: string): Migration {
  return { version, name: `${String(version).padStart(3, '0')}_${name}`, sql, checksum: `test-${version}-${sql.length}` };
}

test('migrations: the shipped files are numbered from 001 and checksummed', () => {
  const m = loadMigrations();
  assert.deepEqual(m.map((x) => [x.version, x.name]), [[1, '001_directory'], [2, '002_queue'], [3, '003_directory_changes'], [4, '004_counters'], [5, '005_admin'], [6, '006_decisions'], [7, '007_tester_runs'], [8, '008_audit'], [9, '009_decisions_by_rule']]);
  assert.match(m[0]!.checksum, /^[0-9a-f]{64}$/);
  assert.match(m[0]!.sql, /CREATE TABLE users/);
});

test('migrations: misnamed, missing or gapped files are refused with ERR_STORE_MIGRATIONS_MISSING', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-migrations-'));
  try {
    assert.throws(() => loadMigrations(join(dir, 'absent')), code('ERR_STORE_MIGRATIONS_MISSING'));
    assert.throws(() => loadMigrations(dir), code('ERR_STORE_MIGRATIONS_MISSING', /No migration files/));
    writeFileSync(join(dir, '001_a.sql'), 'SELECT 1;');
    writeFileSync(join(dir, '003_c.sql'), 'SELECT 1;');
    assert.throws(() => loadMigrations(dir), code('ERR_STORE_MIGRATIONS_MISSING', /without gaps/));
    writeFileSync(join(dir, '002_b.sql'), 'SELECT 1;');
    assert.deepEqual(loadMigrations(dir).map((m) => m.name), ['001_a', '002_b', '003_c']);
    writeFileSync(join(dir, '4_bad.sql'), 'SELECT 1;');
    assert.throws(() => loadMigrations(dir), code('ERR_STORE_MIGRATIONS_MISSING', /NNN_name\.sql/));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('schema: a store refuses an unmigrated database; db migrate applies the files once; then the store opens', async () => {
  const db = await freshDb();
  try {
    const all = loadMigrations().map((m) => m.name);
    const last = all.length;
    await assert.rejects(PostgresDirectoryStore.open(db.url), code('ERR_STORE_SCHEMA_OLD', new RegExp(`version 0, this relayguard needs ${last} .*relayguard db migrate`)));
    assert.deepEqual(await postgresSchemaStatus(db.url), { current: 0, expected: last, pending: all, applied: [] });
    assert.deepEqual(await migratePostgres(db.url), { from: 0, to: last, applied: all });
    assert.deepEqual(await migratePostgres(db.url), { from: last, to: last, applied: [] });
    const status = await postgresSchemaStatus(db.url);
    assert.equal(status.current, last);
    assert.deepEqual(status.pending, []);
    assert.equal(status.applied[0]!.checksum, loadMigrations()[0]!.checksum);
    const s = await PostgresDirectoryStore.open(db.url);
    await s.addDomain('example.org');
    await s.close();
    // Text columns sort by code point whatever the database's locale.
    const collations = await db.client.query("SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_name IN ('users', 'user_addresses', 'domains', 'aliases') AND data_type = 'text' AND column_name <> 'password_hash'");
    assert.deepEqual(collations.rows, [{ collation_name: 'C' }]);
  } finally {
    await db.done();
  }
});

test('schema: a database newer than the code, or a changed migration file, is refused', async () => {
  const db = await freshDb();
  try {
    await migrate(db.client);
    const n = loadMigrations().length;
    await db.client.query(`INSERT INTO schema_migrations (version, name, checksum) VALUES (${n + 1}, '${String(n + 1).padStart(3, '0')}_from_the_future', 'x')`);
    await assert.rejects(PostgresDirectoryStore.open(db.url), code('ERR_STORE_SCHEMA_NEWER', new RegExp(`version ${n + 1}, newer than this relayguard knows \\(${n}\\): upgrade relayguard`)));
    await assert.rejects(migrate(db.client), code('ERR_STORE_SCHEMA_NEWER'));
    await db.client.query('DELETE FROM schema_migrations WHERE version = $1', [n + 1]);
    assert.equal(await checkSchema(db.client), n);
    await db.client.query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");
    await assert.rejects(checkSchema(db.client), code('ERR_STORE_SCHEMA_MODIFIED', /001_directory/));
    await assert.rejects(migrate(db.client), code('ERR_STORE_SCHEMA_MODIFIED'));
  } finally {
    await db.done();
  }
});

test('schema: a failing migration leaves the database at the version it had; pending ones apply in order', async () => {
  const db = await freshDb();
  try {
    const shipped = loadMigrations();
    const base = shipped.length;
    const v = (n: number): string => String(n).padStart(3, '0');
    await migrate(db.client, shipped);
    const bad = [...shipped, extra(base + 1, 'good_part', 'CREATE TABLE two (id int);'), extra(base + 2, 'broken', 'CREATE TABLE three (id int); SELECT no_such_function();')];
    await assert.rejects(migrate(db.client, bad), code('ERR_STORE_MIGRATION_FAILED', new RegExp(`${v(base + 2)}_broken failed: .*no_such_function.*nothing was applied \\(the schema stays at version ${base}\\)`)));
    assert.equal((await schemaStatus(db.client, shipped)).current, base);
    assert.equal((await db.client.query("SELECT to_regclass('two') AS t")).rows[0].t, null, 'the good part was rolled back with the broken one');
    await assert.rejects(checkSchema(db.client, bad), code('ERR_STORE_SCHEMA_OLD', new RegExp(`pending: ${v(base + 1)}_good_part, ${v(base + 2)}_broken`)));
    const good = [...shipped, extra(base + 1, 'good_part', 'CREATE TABLE two (id int);'), extra(base + 2, 'fixed', 'CREATE TABLE three (id int);')];
    assert.deepEqual(await migrate(db.client, good), { from: base, to: base + 2, applied: [`${v(base + 1)}_good_part`, `${v(base + 2)}_fixed`] });
    assert.equal(await checkSchema(db.client, good), base + 2);
    // This code (which knows only the shipped files) now refuses the database.
    await assert.rejects(checkSchema(db.client, shipped), code('ERR_STORE_SCHEMA_NEWER'));
  } finally {
    await db.done();
  }
});

test('schema: two nodes migrating at once apply each file once', async () => {
  const db = await freshDb();
  const other = new Client(db.url);
  await other.connect();
  try {
    const results = await Promise.all([migrate(db.client), migrate(other), migratePostgres(db.url)]);
    assert.deepEqual(results.map((r) => r.applied.length).sort(), [0, 0, loadMigrations().length]);
    const rows = await db.client.query('SELECT version FROM schema_migrations');
    assert.deepEqual(rows.rows.map((r) => r.version).sort((a, b) => a - b), loadMigrations().map((m) => m.version));
  } finally {
    await other.end();
    await db.done();
  }
});

test('schema: an unreachable server is ERR_STORE_UNAVAILABLE, and the password never shows', async () => {
  const port = await freePort(); // nothing listens there
  const url = `postgresql://relayguard:hunter2@127.0.0.1:${port}/relayguard`;
  const unavailable = code('ERR_STORE_UNAVAILABLE');
  const noPassword = (e: unknown) => unavailable(e) && !(e as Error).message.includes('hunter2') && (e as Error).message.includes(`127.0.0.1:${port}`);
  await assert.rejects(PostgresDirectoryStore.open(url, { connectTimeoutMs: 2000 }), noPassword);
  await assert.rejects(migratePostgres(url), noPassword);
  await assert.rejects(postgresSchemaStatus(url), noPassword);
  // A server that is up but has no such database is just as unusable.
  await assert.rejects(PostgresDirectoryStore.open(pg.url.replace(/\/[a-z_]+$/, '/no_such_db')), code('ERR_STORE_UNAVAILABLE', /no_such_db/));
});
