import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { AliasStore } from '../policy/aliases.ts';
import { directoryContract } from '../policy/directory.case.ts';
import type { DirectoryStore } from '../policy/directory.ts';
import { UserStore } from '../policy/users.ts';
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

test('sqlite directory: a data directory written by UserStore and AliasStore keeps working, both ways', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    const users = new UserStore(file, { scrypt: FAST });
    const aliases = new AliasStore(file);
    await users.add('old@example.org', 'pw', { addresses: ['@old.example'] });
    users.addDomain('example.org');
    aliases.add('team@example.org', ['old@example.org']);
    users.close();
    aliases.close();

    const s = await openDirectoryStore({ sqliteFile: file, postgres: null });
    assert.equal(s.kind, 'sqlite');
    assert.equal(await s.isMailbox('OLD@example.org'), true);
    assert.equal(await s.owns('old@example.org', 'x@old.example'), true);
    assert.deepEqual(await s.listDomains(), ['example.org']);
    assert.deepEqual(await s.lookupAlias('team@example.org'), [{ address: 'old@example.org', remote: false }]);
    await s.addUser({ name: 'new', passwordHash: (await s.credentials('old@example.org'))!.passwordHash, addresses: ['new@example.org'] });
    await s.addAlias('fwd@example.org', ['far@remote.test'], { remote: true });
    await s.close();

    const back = new UserStore(file, { scrypt: FAST });
    const backAliases = new AliasStore(file);
    assert.equal(await back.authenticate('new', 'pw'), true, 'the old store reads what the port wrote');
    assert.equal(back.isMailbox('new@example.org'), true);
    assert.deepEqual(backAliases.lookup('fwd@example.org'), [{ address: 'far@remote.test', remote: true }]);
    back.close();
    backAliases.close();
    assert.equal(statSync(file).mode & 0o077, 0, 'relayguard.db is private (password hashes)');
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

test('sqlite directory: latency against the synchronous stores it replaces (printed, not asserted)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-dir-'));
  try {
    const file = join(dir, 'relayguard.db');
    const port = new SqliteDirectoryStore(file);
    const hash = await (await import('../policy/password.ts')).hashPassword('pw', FAST);
    await port.addUsers(Array.from({ length: 2000 }, (_, i) => ({ name: `user${i}@example.org`, passwordHash: hash, addresses: [`alt${i}@example.org`] })));
    for (let i = 0; i < 500; i++) await port.addAlias(`list${i}@example.org`, [`user${i}@example.org`, `user${i + 1}@example.org`]);
    const users = new UserStore(file);
    const aliases = new AliasStore(file);
    const N = 20_000;
    const time = async (f: (i: number) => unknown): Promise<number> => {
      for (let i = 0; i < 1000; i++) await f(i);
      const t0 = performance.now();
      for (let i = 0; i < N; i++) await f(i);
      return ((performance.now() - t0) / N) * 1000;
    };
    const address = (i: number): string => (i % 2 === 0 ? `alt${i % 2000}@example.org` : `missing${i}@example.org`);
    const key = (i: number): string => (i % 2 === 0 ? `list${i % 500}@example.org` : `missing${i}@example.org`);
    const rows = [
      ['isMailbox', await time((i) => users.isMailbox(address(i))), await time((i) => port.isMailbox(address(i)))],
      ['lookupAlias', await time((i) => aliases.lookup(key(i))), await time((i) => port.lookupAlias(key(i)))],
    ] as const;
    for (const [what, sync, async] of rows) {
      const line = `sqlite ${what}: UserStore/AliasStore (sync) ${sync.toFixed(1)} us, SqliteDirectoryStore (awaited) ${async.toFixed(1)} us per call (${N} calls)`;
      t.diagnostic(line);
      process.stderr.write(`# latency ${line}\n`);
    }
    users.close();
    aliases.close();
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
    const hash = await (await import('../policy/password.ts')).hashPassword('pw', FAST);
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
