/**
 * `relayguard db migrate|status` through main(), as the command line runs them, against a private PostgreSQL 15
 * (src/testing/postgres.ts) and against the embedded default.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { main } from './main.ts';

let pg: PostgresInstance;
const dirs: string[] = [];

before(async () => { pg = await startPostgres(); });
after(async () => {
  await pg?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function configFile(yaml: string): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'relayguard-db-cli-')));
  dirs.push(dir);
  const file = join(dir, 'relayguard.yaml');
  writeFileSync(file, `dataDir: ./data\n${yaml}`);
  return file;
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const line = (s: string): string => (s.endsWith('\n') ? s : `${s}\n`);
  const code = await main(['-q', ...args], { out: (s) => out.push(line(s)), err: (s) => err.push(line(s)) });
  return { code, out: out.join(''), err: err.join('') };
}

test('db migrate: the embedded SQLite default has nothing to migrate', async () => {
  const config = configFile('');
  assert.deepEqual(await cli(['db', 'migrate', '--config', config]), { code: 0, out: 'embedded SQLite: nothing to migrate\n', err: '' });
  const status = await cli(['db', 'status', '--config', config, '--json']);
  assert.equal(status.code, 0);
  assert.deepEqual(JSON.parse(status.out), { store: 'sqlite' });
});

test('db migrate: creates the schema on PostgreSQL once; status says old, then current', async () => {
  const url = await pg.createDatabase('cli_migrate');
  const config = configFile(`store:\n  postgres:\n    url: ${url}\n`);
  const shown = url.replace(/\/$/, '');
  let r = await cli(['db', 'status', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.out, /schema version 0, this relayguard needs 5: run "relayguard db migrate" \(pending: 001_directory, 002_queue, 003_directory_changes, 004_counters, 005_admin\)/);
  r = await cli(['db', 'migrate', '--config', config]);
  assert.deepEqual(r, { code: 0, out: `${shown}: schema migrated from version 0 to 5 (applied 001_directory, 002_queue, 003_directory_changes, 004_counters, 005_admin)\n`, err: '' });
  r = await cli(['db', 'migrate', '--config', config]);
  assert.deepEqual(r, { code: 0, out: `${shown}: schema is current (version 5), nothing to apply\n`, err: '' });
  r = await cli(['db', 'status', '--config', config, '--json']);
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.out), { store: 'postgres', database: shown, state: 'current', current: 5, expected: 5, pending: [] });
  const c = new Client(url);
  await c.connect();
  try {
    assert.deepEqual((await c.query('SELECT version, name FROM schema_migrations ORDER BY version')).rows, [{ version: 1, name: '001_directory' }, { version: 2, name: '002_queue' }, { version: 3, name: '003_directory_changes' }, { version: 4, name: '004_counters' }, { version: 5, name: '005_admin' }]);
    await c.query("INSERT INTO schema_migrations (version, name, checksum) VALUES (6, '006_newer', 'x')");
  } finally {
    await c.end();
  }
  r = await cli(['db', 'migrate', '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.err, /schema is at version 6, newer than this relayguard knows \(5\).*\[ERR_STORE_SCHEMA_NEWER\]/);
  r = await cli(['db', 'status', '--config', config]);
  assert.equal(r.code, 1);
  assert.match(r.out, /schema version 6 is newer than this relayguard knows \(5\): upgrade relayguard/);
});

test('db migrate: an unreachable database exits 2 with ERR_STORE_UNAVAILABLE and no password', async () => {
  const config = configFile(`store:\n  postgres:\n    url: postgresql://relayguard:hunter2@127.0.0.1:1/relayguard\n`);
  const r = await cli(['db', 'migrate', '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.err, /Cannot use PostgreSQL at postgresql:\/\/relayguard@127\.0\.0\.1:1\/relayguard: .*\[ERR_STORE_UNAVAILABLE\]/);
  assert.doesNotMatch(r.err + r.out, /hunter2/);
});

test('db migrate: a database that does not exist exits 2 with ERR_STORE_UNAVAILABLE', async () => {
  const config = configFile(`store:\n  postgres:\n    url: ${pg.url.replace(/\/[a-z_]+$/, '/no_such_db')}\n`);
  const r = await cli(['db', 'migrate', '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.err, /no_such_db.*does not exist.*\[ERR_STORE_UNAVAILABLE\]/);
});

test('db: a bad store.postgres.url is a configuration error', async () => {
  const config = configFile('store:\n  postgres:\n    url: mysql://x\n');
  const r = await cli(['db', 'migrate', '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.err, /store\.postgres\.url/);
});
