import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testerRunContract } from '../policy/tester-runs.case.ts';
import { SqliteTesterRunStore, sqliteTesterRunsPath } from './sqlite-tester-runs.ts';

testerRunContract({
  name: 'sqlite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-tester-runs-'));
    const store = new SqliteTesterRunStore(sqliteTesterRunsPath(dir));
    return { store, async dispose() { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
  },
});

test('tester runs (sqlite): its own file dataDir/tester-runs.db, mode 0600; runs survive a reopen', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-tester-runs-'));
  try {
    const s = new SqliteTesterRunStore(sqliteTesterRunsPath(dir));
    await s.create({ id: 'a'.repeat(16), node: 'n', actor: 'alice', target: 'x.test', options: {}, addresses: ['192.0.2.1'], createdAt: 1 });
    await s.close();
    assert.equal(statSync(join(dir, 'tester-runs.db')).mode & 0o777, 0o600);
    const again = new SqliteTesterRunStore(sqliteTesterRunsPath(dir));
    assert.equal((await again.get('a'.repeat(16)))?.target, 'x.test');
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
