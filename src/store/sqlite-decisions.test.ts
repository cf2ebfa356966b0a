import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decisionContract } from '../policy/decisions.case.ts';
import { SqliteDecisionStore, ThreadedSqliteDecisionStore, sqliteDecisionsPath } from './sqlite-decisions.ts';

decisionContract({
  name: 'sqlite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-decisions-'));
    const store = new SqliteDecisionStore(sqliteDecisionsPath(dir));
    return { store, async dispose() { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
  },
});

decisionContract({
  name: 'sqlite in a worker thread',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-decisions-'));
    const store = new ThreadedSqliteDecisionStore(sqliteDecisionsPath(dir));
    return { store, async dispose() { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
  },
});

test('decision store (sqlite thread): errors come back with their code; after close, calls reject', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-decisions-'));
  try {
    const s = new ThreadedSqliteDecisionStore(sqliteDecisionsPath(dir));
    // A NOT NULL column left null: the insert fails in the thread, the batch is not half-written.
    const bad = { at: 1, node: 'n', sessionId: null, clientIp: '127.0.0.2', listener: null, helo: null, user: null, mailFrom: null, rcpt: 'a@b', action: 'reject', rule: 'r', reason: null, reply: null };
    await assert.rejects(s.append([bad, { ...bad, rcpt: null as unknown as string }]), (e: Error & { code?: string }) => typeof e.code === 'string' && /NOT NULL/i.test(e.message));
    assert.equal((await s.search({ limit: 10 })).length, 0);
    await s.close();
    await assert.rejects(s.search({ limit: 1 }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('decision store (sqlite): its own file dataDir/decisions.db, mode 0600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-decisions-'));
  try {
    const s = new SqliteDecisionStore(sqliteDecisionsPath(dir));
    await s.close();
    assert.equal(statSync(join(dir, 'decisions.db')).mode & 0o777, 0o600);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
