import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLogger } from '../core/log.ts';
import { RelayguardError } from '../core/errors.ts';
import { ERR_STORE_UNAVAILABLE, type DirectoryStore } from '../policy/directory.ts';
import { hashPassword } from '../policy/password.ts';
import { SqliteDirectoryStore } from '../store/index.ts';
import { ERR_DIRECTORY_REFRESH, openDirectoryView } from './directory-view.ts';

/** A store whose reads fail while `down` (a database that went away). */
function flaky(store: DirectoryStore): { store: DirectoryStore; setDown(d: boolean): void } {
  let down = false;
  const fail = (): never => { throw new RelayguardError(ERR_STORE_UNAVAILABLE, 'PostgreSQL is unavailable: connect ECONNREFUSED'); };
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'sync') return undefined; // as a network store: no synchronous reads
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return async (...args: unknown[]) => { if (down) fail(); return (v as (...a: unknown[]) => unknown).apply(target, args); };
    },
  });
  return { store: wrapped, setDown: (d) => { down = d; } };
}

test('directory view: answers from memory, sees its own writes at once and other writers at the next check', async () => {
  const backing = new SqliteDirectoryStore(':memory:');
  const other = backing; // one connection: the version still moves with every write through the store
  const logger = new MemoryLogger();
  const view = await openDirectoryView(backing, { logger, refreshMs: 60_000 });
  try {
    const hash = await hashPassword('pw', { N: 1024, r: 8, p: 1 });
    await view.store.addUser({ name: 'Ann@Example.org', passwordHash: hash, addresses: ['@corp.example'] });
    await view.store.addDomain('example.org');
    await view.store.addAlias('team@example.org', ['ann@example.org']);
    assert.equal(view.isMailbox('ANN@example.org.'), true, 'normalized as the store does');
    assert.equal(view.isMailbox('x@corp.example'), false, 'a domain wildcard is not a mailbox');
    assert.deepEqual([...view.domains()], ['example.org']);
    assert.deepEqual(view.lookupAlias('team@example.org'), [{ address: 'ann@example.org', remote: false }]);
    await other.setDisabled('ann@example.org', true); // not through the view
    assert.equal(view.isMailbox('ann@example.org'), false, 'SQLite: seen by the next lookup (a disabled user has no mailbox)');
  } finally {
    view.stop();
    await backing.close();
  }
});

test('directory view: a store without synchronous reads (a network store) is re-read at the next check', async () => {
  const backing = new SqliteDirectoryStore(':memory:');
  const network = new Proxy(backing, {
    get(t, p, r) {
      if (p === 'sync') return undefined;
      const v = Reflect.get(t, p, r) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  }) as DirectoryStore;
  const view = await openDirectoryView(network, { logger: new MemoryLogger(), refreshMs: 60_000 });
  try {
    await backing.addDomain('example.org'); // another writer
    assert.deepEqual([...view.domains()], [], 'not seen before a check');
    await view.refresh();
    assert.deepEqual([...view.domains()], ['example.org']);
    let changes = 0;
    view.onChange(() => { changes++; });
    await view.refresh();
    assert.equal(changes, 0, 'an unchanged version reads nothing');
    await view.store.addDomain('other.example'); // through the view: at once
    assert.deepEqual([...view.domains()], ['example.org', 'other.example']);
    assert.equal(changes, 1);
  } finally {
    view.stop();
    await backing.close();
  }
});

test('directory view: a failing refresh keeps the last good copy, logs one error with a code, and recovers by itself', async () => {
  const backing = new SqliteDirectoryStore(':memory:');
  const f = flaky(backing);
  const logger = new MemoryLogger();
  const view = await openDirectoryView(f.store, { logger, refreshMs: 20 });
  try {
    await backing.addDomain('kept.example');
    await view.refresh();
    assert.deepEqual([...view.domains()], ['kept.example']);
    f.setDown(true);
    await backing.addDomain('late.example');
    await new Promise((r) => setTimeout(r, 150)); // several refresh intervals
    assert.deepEqual([...view.domains()], ['kept.example'], 'the last good copy');
    const errors = logger.records.filter((r) => r.msg === 'directory refresh failed');
    assert.equal(errors.length, 1, 'one event per outage');
    assert.equal(errors[0]!.level, 'error');
    assert.equal(errors[0]!.fields.err_code, ERR_DIRECTORY_REFRESH);
    assert.equal(errors[0]!.fields.cause_code, ERR_STORE_UNAVAILABLE);
    f.setDown(false);
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual([...view.domains()].sort(), ['kept.example', 'late.example']);
    assert.equal(logger.records.filter((r) => r.msg === 'directory refresh recovered').length, 1);
  } finally {
    view.stop();
    await backing.close();
  }
});
