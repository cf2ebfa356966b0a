import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auditStoreContract } from './audit-store.case.ts';
import { SqliteAuditStore, sqliteAuditPath } from './sqlite-audit.ts';

auditStoreContract({
  name: 'sqlite',
  async fresh(keep) {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-audit-store-'));
    const store = new SqliteAuditStore<any>(sqliteAuditPath(dir), { keep });
    return { store, async dispose() { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
  },
});

test('audit store (sqlite): dataDir/audit.db, mode 0600, shared by two handles (serve and the CLI)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-audit-store-'));
  try {
    const a = new SqliteAuditStore<any>(sqliteAuditPath(dir));
    const b = new SqliteAuditStore<any>(sqliteAuditPath(dir));
    await a.save({ node: 'n', startedAt: 1, exitCode: 0, status: 'ok', checks: [] });
    assert.equal((await b.list('n', 1))[0].startedAt, 1);
    assert.equal(statSync(join(dir, 'audit.db')).mode & 0o777, 0o600);
    await a.close();
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
