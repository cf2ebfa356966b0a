import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { directoryContract } from '../policy/directory.case.ts';
import type { DirectoryStore } from '../policy/directory.ts';
import { readRecipientSnapshot } from '../policy/directory.ts';
import { hashPassword } from '../policy/password.ts';
import { openDirectoryStore } from './index.ts';
import { SqliteDirectoryStore } from './sqlite-directory.ts';

const FAST = { N: 1024, r: 8, p: 1 };

directoryContract({
  name: 'sqlite',
  async fresh(clock) {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
    const file = join(dir, 'relayguard.db');
    const opened: DirectoryStore[] = [];
    return {
      async open() {
        const s = new SqliteDirectoryStore(file, { clock });
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});

/**
 * relayguard.db as relayguard wrote it before the DirectoryStore port (policy/users.ts UserStore and
 * policy/aliases.ts AliasStore, since removed): the tables they created, verbatim, as a fixture for existing files.
 */
const PRE_PORT_SCHEMA = `
  CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS user_addresses (name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, address TEXT NOT NULL, PRIMARY KEY (name, address));
  CREATE INDEX IF NOT EXISTS user_addresses_by_address ON user_addresses(address);
  CREATE TABLE IF NOT EXISTS domains (domain TEXT PRIMARY KEY NOT NULL, created_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS aliases (address TEXT NOT NULL, target TEXT NOT NULL, remote INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, PRIMARY KEY (address, target));
`;

test('sqlite directory: a relayguard.db written before the port keeps working, and stays readable the old way', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    const hash = await hashPassword('pw', FAST);
    const old = new DatabaseSync(file);
    old.exec(PRE_PORT_SCHEMA);
    old.prepare('INSERT INTO users VALUES (?, ?, ?, 0)').run('old@example.org', hash, 1_600_000_000_000);
    old.prepare('INSERT INTO user_addresses VALUES (?, ?)').run('old@example.org', 'old@example.org');
    old.prepare('INSERT INTO user_addresses VALUES (?, ?)').run('old@example.org', '@old.example');
    old.prepare('INSERT INTO domains VALUES (?, ?)').run('example.org', 1_600_000_000_000);
    old.prepare('INSERT INTO aliases VALUES (?, ?, 0, ?)').run('team@example.org', 'old@example.org', 1_600_000_000_000);
    old.close();

    const s = await openDirectoryStore({ sqliteFile: file, postgres: null });
    assert.equal(s.kind, 'sqlite');
    assert.equal(await s.isMailbox('OLD@example.org'), true);
    assert.equal(await s.owns('old@example.org', 'x@old.example'), true);
    assert.deepEqual(await s.listDomains(), ['example.org']);
    assert.deepEqual(await s.lookupAlias('team@example.org'), [{ address: 'old@example.org', remote: false }]);
    assert.deepEqual(await s.getUser('old@example.org'), { name: 'old@example.org', createdAt: 1_600_000_000_000, disabled: false, addresses: ['@old.example', 'old@example.org'] });
    await s.addUser({ name: 'new', passwordHash: hash, addresses: ['new@example.org'] });
    await s.addAlias('fwd@example.org', ['far@remote.test'], { remote: true });
    await s.close();

    // The rows the port wrote are in the old tables' shape (an older relayguard reading the file sees them).
    const back = new DatabaseSync(file);
    assert.deepEqual({ ...back.prepare('SELECT name, password_hash, disabled FROM users WHERE name = ?').get('new') }, { name: 'new', password_hash: hash, disabled: 0 });
    assert.deepEqual(back.prepare('SELECT address FROM user_addresses WHERE name = ?').all('new').map((r) => r['address']), ['new@example.org']);
    assert.deepEqual({ ...back.prepare('SELECT target, remote FROM aliases WHERE address = ?').get('fwd@example.org') }, { target: 'far@remote.test', remote: 1 });
    const tables = back.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all().map((r) => r['name']);
    assert.deepEqual(tables, ['aliases', 'directory_version', 'domains', 'user_addresses', 'users'], 'only the change counter is added');
    back.close();
    assert.equal(statSync(file).mode & 0o077, 0, 'relayguard.db is private (password hashes)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sqlite directory: the version follows the directory tables only, not other tables of relayguard.db (ORDB listings)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    const s = new SqliteDirectoryStore(file);
    const other = new DatabaseSync(file); // another process: the CLI, the ORDB store
    other.exec('PRAGMA busy_timeout = 5000; CREATE TABLE listings (network TEXT)');
    const v0 = s.sync.version();
    other.exec("INSERT INTO listings VALUES ('192.0.2.0/24')");
    assert.equal(s.sync.version(), v0, 'a commit to another table is not a directory change');
    other.exec("INSERT INTO domains (domain, created_at) VALUES ('example.org', 0)");
    const v1 = s.sync.version();
    assert.notEqual(v1, v0, 'a write by another connection (an older relayguard too: triggers)');
    other.exec("UPDATE users SET disabled = 1 WHERE name = 'nobody'"); // no row: no change
    assert.equal(s.sync.version(), v1);
    await s.addAlias('a@example.org', ['b@example.org']);
    assert.notEqual(s.sync.version(), v1, 'a write through the store itself');
    assert.deepEqual([...s.sync.snapshot().domains], ['example.org']);
    other.close();
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sqlite directory: a shared connection is not closed by close()', async () => {
  const db = new DatabaseSync(':memory:');
  const s = new SqliteDirectoryStore(db);
  await s.addDomain('example.org');
  await s.close();
  assert.equal(db.isOpen, true);
  assert.deepEqual(db.prepare('SELECT domain FROM domains').all().map((r) => r['domain']), ['example.org']);
  db.close();
});

test('sqlite directory: the store read per call against the in-memory copy the RCPT path uses (printed, not asserted)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    const port = new SqliteDirectoryStore(file);
    const hash = await hashPassword('pw', FAST);
    await port.addUsers(Array.from({ length: 2000 }, (_, i) => ({ name: `user${i}@example.org`, passwordHash: hash, addresses: [`alt${i}@example.org`] })));
    for (let i = 0; i < 500; i++) await port.addAlias(`list${i}@example.org`, [`user${i}@example.org`, `user${i + 1}@example.org`]);
    const t0 = performance.now();
    const snap = await readRecipientSnapshot(port);
    const snapshotMs = performance.now() - t0;
    const N = 20_000;
    const time = async (f: (i: number) => unknown): Promise<number> => {
      for (let i = 0; i < 1000; i++) await f(i);
      const start = performance.now();
      for (let i = 0; i < N; i++) await f(i);
      return ((performance.now() - start) / N) * 1000;
    };
    const address = (i: number): string => (i % 2 === 0 ? `alt${i % 2000}@example.org` : `missing${i}@example.org`);
    const key = (i: number): string => (i % 2 === 0 ? `list${i % 500}@example.org` : `missing${i}@example.org`);
    const rows = [
      ['isMailbox', await time((i) => snap.mailboxes.has(address(i))), await time((i) => port.isMailbox(address(i)))],
      ['lookupAlias', await time((i) => snap.aliases.get(key(i))), await time((i) => port.lookupAlias(key(i)))],
    ] as const;
    for (const [what, copy, store] of rows) {
      const line = `sqlite ${what}: in-memory copy ${copy.toFixed(2)} us, SqliteDirectoryStore (awaited) ${store.toFixed(1)} us per call (${N} calls); the copy of 2000 users and 1000 aliases read in ${snapshotMs.toFixed(1)} ms`;
      t.diagnostic(line);
      process.stderr.write(`# latency ${line}\n`);
    }
    await port.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sqlite directory: two threads racing on one file: each user is created once, the loser gets ERR_USER_EXISTS', async () => {
  const { Worker } = await import('node:worker_threads');
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    new SqliteDirectoryStore(file).close(); // tables exist before the race
    const hash = await hashPassword('pw', FAST);
    const gate = new Int32Array(new SharedArrayBuffer(4));
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      (async () => {
        const { SqliteDirectoryStore } = await import(workerData.module);
        const s = new SqliteDirectoryStore(workerData.file);
        parentPort.postMessage('ready');
        Atomics.wait(workerData.gate, 0, 0);
        const out = [];
        for (let j = 0; j < 40; j++) {
          const i = workerData.tag === 'a' ? j : 39 - j; // opposite orders: the threads meet on the same names
          try { await s.addUser({ name: 'racer' + i, passwordHash: workerData.hash, addresses: [workerData.tag + i + '@example.org'] }); out[i] = 'ok'; }
          catch (e) { out[i] = e.code ?? String(e); }
        }
        await s.close();
        parentPort.postMessage(out);
      })();
    `;
    const module = new URL('./sqlite-directory.ts', import.meta.url).href;
    const workers = ['a', 'b'].map((tag) => new Worker(code, { eval: true, workerData: { module, file, hash, gate, tag } }));
    const results = workers.map((w) => new Promise<string[]>((resolve, reject) => {
      w.on('message', (m) => { if (Array.isArray(m)) resolve(m as string[]); });
      w.on('error', reject);
    }));
    await Promise.all(workers.map((w) => new Promise((r) => w.once('message', r))));
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    const [a, b] = await Promise.all(results);
    for (let i = 0; i < 40; i++) {
      assert.deepEqual([a![i], b![i]].sort(), ['ERR_USER_EXISTS', 'ok'], `racer${i}: ${a![i]} / ${b![i]}`);
    }
    const s = new SqliteDirectoryStore(file);
    for (let i = 0; i < 40; i++) {
      const winner = a![i] === 'ok' ? 'a' : 'b';
      assert.deepEqual((await s.getUser(`racer${i}`))?.addresses, [`${winner}${i}@example.org`]);
    }
    await s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
