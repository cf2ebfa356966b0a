/**
 * The contract of AdminStore (admin-accounts.ts) with AdminAccounts over it, as node:test tests registered against
 * any implementation: store/sqlite-admin.test.ts and store/postgres-admin.test.ts call adminContract().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdminAccounts, hashToken, TOKEN_USE_RESOLUTION_MS, type AdminStore } from './admin-accounts.ts';

const FAST = { N: 1024, r: 8, p: 1 };

export interface AdminHarness {
  readonly name: string;
  /** An empty store (a second call: another process's or node's view of the same data, also empty before it). */
  fresh(): Promise<{ store: AdminStore; other(): Promise<AdminStore>; dispose(): Promise<void> }>;
}

export function adminContract(h: AdminHarness): void {
  test(`admin store (${h.name}): add, verify, passwd, remove (tokens go with the admin); tokens stored hashed; audit pages; errors carry codes`, async () => {
    const { store, dispose } = await h.fresh();
    try {
      const a = new AdminAccounts(store, { scrypt: FAST });
      await a.add('alice', 'long enough');
      await assert.rejects(a.add('alice', 'long enough'), { code: 'ERR_ADMIN_EXISTS' });
      await assert.rejects(a.add('bob', 'short'), { code: 'ERR_ADMIN_PASSWORD' });
      await assert.rejects(a.add('<bob>', 'long enough'), { code: 'ERR_ADMIN_NAME' });
      assert.equal(await a.verify('alice', 'long enough'), 'alice');
      assert.equal(await a.verify('alice', 'wrong one'), null);
      assert.equal(await a.verify('nobody', 'long enough'), null);
      await a.setPassword('alice', 'another one');
      assert.equal(await a.verify('alice', 'long enough'), null);
      assert.equal(await a.verify('alice', 'another one'), 'alice');
      await assert.rejects(a.setPassword('nobody', 'another one'), { code: 'ERR_ADMIN_NOT_FOUND' });

      const token = await a.createToken('alice', 'ci');
      assert.match(token, /^rgt_[A-Za-z0-9_-]{43}$/);
      await assert.rejects(a.createToken('alice', 'ci'), { code: 'ERR_ADMIN_TOKEN_EXISTS' });
      await assert.rejects(a.createToken('nobody', 'ci'), { code: 'ERR_ADMIN_NOT_FOUND' });
      assert.deepEqual(await a.authenticateToken(token), { admin: 'alice', name: 'ci' });
      const last = token.at(-1) === 'A' ? 'B' : 'A';
      assert.equal(await a.authenticateToken(`${token.slice(0, -1)}${last}`), null, 'a token one character off');
      assert.equal(await a.authenticateToken('not a token'), null);
      // Only the hash is stored.
      const tokens = await store.listTokens();
      assert.equal(tokens.length, 1);
      assert.ok(tokens[0]!.lastUsedAt !== null);
      assert.equal(JSON.stringify(tokens).includes(token), false);
      assert.deepEqual(await store.useToken(hashToken(token), 1), { admin: 'alice', name: 'ci' });
      // Last use to the minute: a use within TOKEN_USE_RESOLUTION_MS of the recorded one writes nothing.
      const h = hashToken(token);
      await store.useToken(h, 10_000_000);
      await store.useToken(h, 10_000_000 + TOKEN_USE_RESOLUTION_MS - 1);
      assert.equal((await store.listTokens())[0]!.lastUsedAt, 10_000_000);
      await store.useToken(h, 10_000_000 + TOKEN_USE_RESOLUTION_MS);
      assert.equal((await store.listTokens())[0]!.lastUsedAt, 10_000_000 + TOKEN_USE_RESOLUTION_MS);

      await store.appendAudit({ at: 1, actor: 'alice', action: 'queue.hold', target: 'ABC', detail: '{}', clientIp: '127.0.0.1' });
      await store.appendAudit({ at: 2, actor: 'cli', action: 'admin.add', target: 'bob', detail: null, clientIp: null });
      const log = await store.auditLog({ limit: 10 });
      assert.deepEqual(log.map((e) => e.action), ['admin.add', 'queue.hold']);
      assert.deepEqual((await store.auditLog({ limit: 10, beforeId: log[0]!.id })).map((e) => e.action), ['queue.hold']);

      await store.removeAdmin('alice');
      assert.equal(await a.authenticateToken(token), null, 'the token went with its admin');
      await assert.rejects(store.removeAdmin('alice'), { code: 'ERR_ADMIN_NOT_FOUND' });
      await assert.rejects(store.removeToken('alice', 'ci'), { code: 'ERR_ADMIN_TOKEN_NOT_FOUND' });
    } finally {
      await dispose();
    }
  });

  test(`admin store (${h.name}): another process or node sees an admin and a token at once`, async () => {
    const { store, other, dispose } = await h.fresh();
    try {
      const a = new AdminAccounts(store, { scrypt: FAST });
      await a.add('carol', 'long enough');
      const token = await a.createToken('carol', 'deploy');
      const b = new AdminAccounts(await other(), { scrypt: FAST });
      assert.equal(await b.verify('carol', 'long enough'), 'carol');
      assert.deepEqual(await b.authenticateToken(token), { admin: 'carol', name: 'deploy' });
      await assert.rejects(b.add('carol', 'long enough'), { code: 'ERR_ADMIN_EXISTS' });
    } finally {
      await dispose();
    }
  });
}
