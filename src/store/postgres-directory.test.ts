import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'pg';
import { MemoryLogger } from '../core/log.ts';
import { RelayguardError } from '../core/errors.ts';
import { directoryContract } from '../policy/directory.case.ts';
import type { DirectoryStore } from '../policy/directory.ts';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { openDirectoryStore } from './index.ts';
import { PostgresDirectoryStore } from './postgres-directory.ts';
import { loadMigrations, migrate } from './postgres-schema.ts';

let pg: PostgresInstance;
let admin: Client;

before(async () => {
  pg = await startPostgres(); // fails, naming the Debian package, when postgresql-15 is missing
  admin = new Client(pg.url);
  await admin.connect();
  assert.deepEqual((await migrate(admin)).applied, loadMigrations().map((m) => m.name));
});

after(async () => {
  await admin?.end().catch(() => {});
  await pg?.stop();
});

directoryContract({
  name: 'postgres',
  async fresh(clock) {
    await admin.query('TRUNCATE users, user_addresses, domains, aliases');
    const opened: DirectoryStore[] = [];
    return {
      async open() {
        const s = await PostgresDirectoryStore.open(pg.url, { clock, poolSize: 4 });
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
      },
    };
  },
});

test('postgres directory: openDirectoryStore picks PostgreSQL from the settings', async () => {
  const s = await openDirectoryStore({ sqliteFile: '/nonexistent/never-opened.db', postgres: { url: pg.url, poolSize: 2 } });
  try {
    assert.equal(s.kind, 'postgres');
    assert.deepEqual(await s.listDomains(), []);
  } finally {
    await s.close();
  }
});

test('postgres directory: a pooled connection killed while idle is replaced, and the process lives on', async () => {
  const logger = new MemoryLogger();
  const s = await PostgresDirectoryStore.open(pg.url, { logger, poolSize: 2 });
  try {
    await s.addDomain('idle.example');
    await Promise.all([s.hasDomain('idle.example'), s.hasDomain('idle.example')]); // two connections in the pool
    const killed = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'relayguard' AND pid <> pg_backend_pid()");
    assert.ok(killed.rowCount! >= 1);
    // Whether or not the pool has noticed yet, a read finds a live connection (a dead one costs one retry).
    assert.equal(await s.hasDomain('idle.example'), true, 'the next call gets a fresh connection');
    for (let i = 0; i < 100 && logger.records.length < killed.rowCount!; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(logger.records.some((r) => r.msg === 'postgres connection lost' && r.level === 'warn'), JSON.stringify(logger.records));
    assert.equal(await s.isMailbox('nobody@idle.example'), false);
  } finally {
    await s.removeDomain('idle.example').catch(() => {});
    await s.close();
  }
});

// Last: it stops the server.
test('postgres directory: with the server gone, reads and writes reject with ERR_STORE_UNAVAILABLE, never a wrong answer', async () => {
  const s = await PostgresDirectoryStore.open(pg.url, { poolSize: 2, connectTimeoutMs: 2000 });
  try {
    assert.equal(await s.isMailbox('a@example.org'), false);
    await admin.end();
    await pg.stop();
    const unavailable = (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_STORE_UNAVAILABLE' && !/secret/.test(e.message);
    await assert.rejects(s.isMailbox('a@example.org'), unavailable);
    await assert.rejects(s.lookupAlias('a@example.org'), unavailable);
    await assert.rejects(s.credentials('a'), unavailable);
    await assert.rejects(s.addDomain('example.org'), unavailable);
    await assert.rejects(s.addUser({ name: 'x', passwordHash: 'scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' }), (e) => e instanceof RelayguardError && (e.code === 'ERR_STORE_UNAVAILABLE' || e.code === 'ERR_USER_INVALID'));
    await assert.rejects(PostgresDirectoryStore.open(pg.url.replace('postgres@', 'postgres:secret@'), { connectTimeoutMs: 2000 }), unavailable);
  } finally {
    await s.close();
  }
});
