import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countersContract } from '../policy/counters.case.ts';
import type { CounterStore } from '../policy/counters.ts';
import { SharedAuthThrottle } from '../policy/shared-auth-throttle.ts';
import { freePort } from '../testing/ports.ts';
import { PostgresCounterStore } from './postgres-counters.ts';
import { SqliteCounterStore } from './sqlite-counters.ts';
import { migratedPostgres } from '../testing/postgres-migrated.ts';

const db = migratedPostgres();

countersContract({
  name: 'postgres',
  async fresh() {
    await db.admin.query('TRUNCATE rate_counters');
    const opened: CounterStore[] = [];
    return {
      async open() {
        const s = await PostgresCounterStore.open(db.pg.url, { poolSize: 4 });
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
      },
    };
  },
});

test('postgres counters: an unreachable server rejects with ERR_STORE_UNAVAILABLE', async () => {
  const port = await freePort();
  await assert.rejects(PostgresCounterStore.open(`postgresql://postgres@127.0.0.1:${port}/relayguard`, { connectTimeoutMs: 1000 }), (e: Error & { code?: string }) => e.code === 'ERR_STORE_UNAVAILABLE');
});

function quantiles(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): string => (s[Math.min(s.length - 1, Math.floor(s.length * p))]! * 1000).toFixed(0);
  return `p50 ${q(0.5)} us, p99 ${q(0.99)} us`;
}

// Measurement (printed to the test log; asserts only a generous ceiling): what one shared-counter event costs,
// on this machine's private PostgreSQL (fsync on; the table is UNLOGGED) and on the SQLite file, sequentially
// (latency) and with 16 in flight (throughput of one node's pool).
test('postgres counters: cost of one event (measurement)', async () => {
  await db.admin.query('TRUNCATE rate_counters');
  const store = await PostgresCounterStore.open(db.pg.url, { poolSize: 8 });
  const sqliteDir = (await import('node:fs')).mkdtempSync((await import('node:path')).join((await import('node:os')).tmpdir(), 'relayguard-bench-'));
  const sqlite = new SqliteCounterStore(`${sqliteDir}/counters.db`);
  try {
    const now = Date.now();
    for (let i = 0; i < 200; i++) await store.take(`auth:warm${i % 50}`, { now: now + i, windowMs: 60_000, limit: 10 }); // prepare, warm the pool
    const lines: string[] = [];
    for (const [name, s] of [['postgres', store], ['sqlite file', sqlite]] as const) {
      const seq: number[] = [];
      for (let i = 0; i < 2000; i++) {
        const t = performance.now();
        await s.take(`auth:10.0.${i % 200}.${i % 7}`, { now: now + i, windowMs: 60_000, limit: 10 });
        seq.push(performance.now() - t);
      }
      const throttle = new SharedAuthThrottle({ store: s, maxFailures: 1_000_000 });
      const ok: number[] = [];
      for (let i = 0; i < 1000; i++) {
        const t = performance.now();
        await throttle.acquire(`10.1.${i % 200}.1`);
        await throttle.recordSuccess(`10.1.${i % 200}.1`);
        ok.push(performance.now() - t);
      }
      const n = 8000;
      const t0 = performance.now();
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < n) { const i = next++; await s.take(`auth:10.2.${i % 1000}.1`, { now: now + i, windowMs: 60_000, limit: 10 }); }
      }));
      const rate = n / ((performance.now() - t0) / 1000);
      lines.push(`${name}: take ${quantiles(seq)}; AUTH success (take + refund) ${quantiles(ok)}; 16 in flight: ${rate.toFixed(0)} events/s`);
      assert.ok(seq.sort((a, b) => a - b)[1000]! < 50, `${name}: median take under 50 ms`);
    }
    console.log(`# shared counters cost: ${lines.join(' | ')}`);
  } finally {
    await store.close();
    await sqlite.close();
    (await import('node:fs')).rmSync(sqliteDir, { recursive: true, force: true });
  }
});
