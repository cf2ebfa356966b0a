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
import { loadMigrations } from '../store/index.ts';

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
  const names = loadMigrations().map((m) => m.name);
  const n = names.length;
  let r = await cli(['db', 'status', '--config', config]);
  assert.equal(r.code, 1);
  assert.ok(r.out.includes(`schema version 0, this relayguard needs ${n}: run "relayguard db migrate" (pending: ${names.join(', ')})`), r.out);
  r = await cli(['db', 'migrate', '--config', config]);
  assert.deepEqual(r, { code: 0, out: `${shown}: schema migrated from version 0 to ${n} (applied ${names.join(', ')})\n`, err: '' });
  r = await cli(['db', 'migrate', '--config', config]);
  assert.deepEqual(r, { code: 0, out: `${shown}: schema is current (version ${n}), nothing to apply\n`, err: '' });
  r = await cli(['db', 'status', '--config', config, '--json']);
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.out), { store: 'postgres', database: shown, state: 'current', current: n, expected: n, pending: [] });
  const c = new Client(url);
  await c.connect();
  try {
    assert.deepEqual((await c.query('SELECT version, name FROM schema_migrations ORDER BY version')).rows, names.map((name, i) => ({ version: i + 1, name })));
    await c.query(`INSERT INTO schema_migrations (version, name, checksum) VALUES (${n + 1}, '${String(n + 1).padStart(3, '0')}_newer', 'x')`);
  } finally {
    await c.end();
  }
  r = await cli(['db', 'migrate', '--config', config]);
  assert.equal(r.code, 2);
  assert.match(r.err, new RegExp(`schema is at version ${n + 1}, newer than this relayguard knows \\(${n}\\).*\\[ERR_STORE_SCHEMA_NEWER\\]`));
  r = await cli(['db', 'status', '--config', config]);
  assert.equal(r.code, 1);
  assert.ok(r.out.includes(`schema version ${n + 1} is newer than this relayguard knows (${n}): upgrade relayguard`), r.out);
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
