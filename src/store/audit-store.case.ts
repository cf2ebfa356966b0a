/**
 * The contract of the self-audit history stores (sqlite-audit.ts, postgres-audit.ts): reports come back as saved,
 * newest first, per node or for every node; the newest `keep` per node are kept.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditReportStore, StoredAuditReport } from './sqlite-audit.ts';

interface Report extends StoredAuditReport {
  readonly checks: readonly { check: string; findings: readonly { check: string; subject: string; severity: string; summary: string; detail?: Record<string, unknown> }[] }[];
}

const report = (node: string, startedAt: number, exitCode = 0): Report => ({
  node, startedAt, exitCode, status: exitCode === 0 ? 'ok' : 'critical',
  checks: [{ check: 'blocklist', findings: [{ check: 'blocklist.listed', subject: `198.51.100.${startedAt % 250} in z`, severity: 'critical', summary: 'listed: "quoted" \u00e9 <tag>', detail: { codes: ['127.0.0.2'], n: startedAt } }] }],
});

export function auditStoreContract(o: { name: string; fresh(keep: number): Promise<{ store: AuditReportStore<Report>; dispose(): Promise<void> }> }): void {
  test(`audit store (${o.name}): reports round-trip, newest first, per node`, async () => {
    const { store, dispose } = await o.fresh(100);
    try {
      await store.save(report('a', 1));
      await store.save(report('b', 2, 1));
      await store.save(report('a', 3, 1));
      assert.deepEqual((await store.list('a', 10)).map((r) => r.startedAt), [3, 1]);
      assert.deepEqual((await store.list(null, 10)).map((r) => [r.node, r.startedAt]), [['a', 3], ['b', 2], ['a', 1]]);
      assert.deepEqual((await store.list('a', 1))[0], report('a', 3, 1));
      assert.deepEqual(await store.list('nobody', 5), []);
    } finally {
      await dispose();
    }
  });

  test(`audit store (${o.name}): keeps the newest reports of each node`, async () => {
    const { store, dispose } = await o.fresh(3);
    try {
      for (let i = 1; i <= 6; i++) await store.save(report('a', i));
      await store.save(report('b', 100));
      assert.deepEqual((await store.list('a', 10)).map((r) => r.startedAt), [6, 5, 4]);
      assert.deepEqual((await store.list('b', 10)).map((r) => r.startedAt), [100]);
    } finally {
      await dispose();
    }
  });
}
