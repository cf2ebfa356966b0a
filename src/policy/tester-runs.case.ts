/**
 * The contract of TesterRunStore (tester-runs.ts) as node:test tests registered against any implementation:
 * store/sqlite-tester-runs.test.ts and store/postgres-tester-runs.test.ts call testerRunContract().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NewTesterRun, TesterRunStore } from './tester-runs.ts';

export interface TesterRunHarness {
  readonly name: string;
  /** An empty store. */
  fresh(): Promise<{ store: TesterRunStore; dispose(): Promise<void> }>;
}

const T0 = 1_780_000_000_000;

function run(i: number, over: Partial<NewTesterRun> = {}): NewTesterRun {
  return {
    id: i.toString(16).padStart(16, '0'), node: i % 2 === 0 ? 'n1' : 'n2', actor: 'alice', target: `mx${i}.example.test`,
    options: { ports: [{ port: 25, role: 'mx' }], mode: 'safe', tricks: null }, addresses: ['192.0.2.1', '2001:db8::1'], createdAt: T0 + i * 1000, ...over,
  };
}

const REPORT = { schema: 'relayguard-tester/1', verdict: 'CLOSED', targets: [{ address: '192.0.2.1', ports: [], note: '<script>"x"</script> \u00e9 \u2028' }] };

export function testerRunContract(h: TesterRunHarness): void {
  test(`tester runs (${h.name}): create, finish once, get with the report, list newest first with paging and state`, async () => {
    const { store, dispose } = await h.fresh();
    try {
      for (let i = 1; i <= 7; i++) await store.create(run(i));
      await assert.rejects(store.create(run(3)), 'a duplicate id is refused');
      const created = await store.get(run(1).id);
      assert.ok(created);
      assert.equal(created.state, 'running');
      assert.equal(created.report, null);
      assert.equal(created.verdict, null);
      assert.equal(created.finishedAt, null);
      assert.deepEqual(created.options, run(1).options);
      assert.deepEqual(created.addresses, run(1).addresses);
      assert.equal(created.createdAt, T0 + 1000);

      assert.equal(await store.finish(run(1).id, { state: 'done', verdict: 'CLOSED', exitCode: 0, error: null, report: REPORT, finishedAt: T0 + 5000 }), true);
      assert.equal(await store.finish(run(1).id, { state: 'failed', verdict: null, exitCode: null, error: 'late', report: null, finishedAt: T0 + 6000 }), false, 'a finished run never changes');
      assert.equal(await store.finish('ffffffffffffffff', { state: 'failed', verdict: null, exitCode: null, error: 'x', report: null, finishedAt: T0 }), false);
      assert.equal(await store.finish(run(2).id, { state: 'failed', verdict: null, exitCode: null, error: 'resolver down', report: null, finishedAt: T0 + 7000 }), true);
      const done = await store.get(run(1).id);
      assert.equal(done?.state, 'done');
      assert.equal(done?.verdict, 'CLOSED');
      assert.equal(done?.exitCode, 0);
      assert.equal(done?.finishedAt, T0 + 5000);
      assert.deepEqual(done?.report, REPORT);
      assert.equal((await store.get(run(2).id))?.error, 'resolver down');
      assert.equal(await store.get('0123456789abcdef'), null);

      const all = await store.list({ limit: 100 });
      assert.deepEqual(all.map((r) => r.id), [7, 6, 5, 4, 3, 2, 1].map((i) => run(i).id));
      assert.ok(all.every((r, i) => i === 0 || r.seq < all[i - 1]!.seq));
      assert.ok(!('report' in all[0]!) || (all[0] as { report?: unknown }).report === undefined, 'list leaves the reports out');
      const page1 = await store.list({ limit: 3 });
      const page2 = await store.list({ limit: 3, before: page1.at(-1)!.seq });
      const page3 = await store.list({ limit: 3, before: page2.at(-1)!.seq });
      assert.deepEqual([...page1, ...page2, ...page3].map((r) => r.id), all.map((r) => r.id));
      assert.deepEqual((await store.list({ limit: 10, state: 'done' })).map((r) => r.id), [run(1).id]);
      assert.equal((await store.list({ limit: 10, state: 'running' })).length, 5);
    } finally {
      await dispose();
    }
  });

  test(`tester runs (${h.name}): abortRunning marks only the node's running runs; prune keeps the newest and every running run`, async () => {
    const { store, dispose } = await h.fresh();
    try {
      for (let i = 1; i <= 6; i++) await store.create(run(i));
      await store.finish(run(2).id, { state: 'done', verdict: 'OPEN', exitCode: 1, error: null, report: REPORT, finishedAt: T0 + 9000 });
      assert.equal(await store.abortRunning('n1', 'serve stopped during the run', T0 + 10_000), 2, 'runs 4 and 6 of n1 (2 is done)');
      const four = await store.get(run(4).id);
      assert.equal(four?.state, 'aborted');
      assert.equal(four?.error, 'serve stopped during the run');
      assert.equal(four?.finishedAt, T0 + 10_000);
      assert.equal((await store.get(run(2).id))?.state, 'done');
      assert.equal((await store.get(run(3).id))?.state, 'running', 'another node\'s run is left alone');
      assert.equal(await store.abortRunning('n1', 'again', T0), 0);

      // Newest 2 kept; of the older ones, the finished are deleted and the running (1, 3, 5 of n2) stay.
      assert.equal(await store.prune(2), 2);
      assert.deepEqual((await store.list({ limit: 10 })).map((r) => r.id), [6, 5, 3, 1].map((i) => run(i).id));
      assert.equal(await store.prune(100), 0);
    } finally {
      await dispose();
    }
  });
}
