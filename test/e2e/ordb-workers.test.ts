/**
 * ORDB tests spread over worker processes (issue 14): four `relayguard dnsbl worker` child processes take a queue of
 * submissions aimed at loopback fake relays (closed relays that greet after a delay, and one tarpit), sharing the
 * listing store's SQLite file. One worker is killed with SIGKILL while it holds leases, another is stopped with
 * SIGTERM mid-test. Then:
 *   - every submission was decided exactly once (one job per address, done; one result event in its history);
 *   - every address not touched by the kill or the stop saw exactly one test's worth of connections;
 *   - the killed worker's jobs were taken over after its lease expired (attempt 2) by another worker;
 *   - the stopped worker gave its running jobs back (exit 0, "released" in its last log line);
 *   - the tarpit ended INCONCLUSIVE at the per-job budget and its job completed (retry scheduled, still pending).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLogger } from '../../src/core/log.ts';
import { createTestHost } from '../../src/cli/ordb-service.ts';
import type { TestOutcome } from '../../src/dnsbl/index.ts';
import { startFakeRelays, type FakeRelays } from '../../src/testing/fake-relays.ts';
import { startWorkerProcess, workerRig, type WorkerProcess, type WorkerRig } from '../../src/testing/ordb-workers.ts';

const CALIBRATION = '127.0.0.100';
const TARPIT = '127.0.0.99';
const TARGETS = Array.from({ length: 40 }, (_, i) => `127.0.0.${101 + i}`);
const DELAY_MS = 150;
const BUDGET_S = 3;

let fakes: FakeRelays;
let rig: WorkerRig;
const workers: WorkerProcess[] = [];

async function until(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  fakes = await startFakeRelays({ addresses: [CALIBRATION, TARPIT, ...TARGETS], delayMs: DELAY_MS, tarpit: [TARPIT] });
  rig = workerRig({ port: fakes.port, dnsbl: { testBudget: `${BUDGET_S}s`, jobLease: '2s', testConcurrency: 2, retryInterval: '1h' } });
});

after(async () => {
  await Promise.all(workers.map((w) => w.stop(2000)));
  rig?.close();
  await fakes?.close();
});

describe('four dnsbl worker processes on one queue', () => {
  let perTest = 0;

  it('calibration: one test of a closed fake relay takes a fixed number of connections', async () => {
    const host = await createTestHost({
      probeDomain: null, sink: { address: '127.0.0.1', port: 0 }, probeWaitMs: 1000, testPorts: [{ port: fakes.port, role: 'mx' }],
      sourceAddress: null, testBudgetMs: 20_000,
    }, new MemoryLogger());
    try {
      const r = await host.test(CALIBRATION, { prove: false, signal: new AbortController().signal });
      assert.equal(r.verdict, 'CLOSED', JSON.stringify(r.detail));
    } finally { await host.close(); }
    perTest = fakes.connections(CALIBRATION);
    assert.ok(perTest >= 1);
  });

  it('every job is done exactly once, through a kill -9 and a SIGTERM mid-test', async (t) => {
    rig.submit([TARPIT, ...TARGETS]);
    assert.equal(rig.jobs.enqueueDue(), TARGETS.length + 1);
    const started = Date.now();
    for (let i = 0; i < 4; i++) workers.push(startWorkerProcess(rig.configPath, ['--poll', '0.2']));
    const [victim, stopped] = workers as [WorkerProcess, WorkerProcess];
    const held = (w: WorkerProcess): string[] => rig.jobs.list({ state: 'running' }).filter((j) => j.leaseOwner?.split(':')[1] === String(w.pid)).map((j) => j.address);

    // kill -9 while it holds leases (mid-test: the fakes greet only after DELAY_MS)
    await until('the victim to hold a lease', () => held(victim).length > 0, 30_000);
    victim.child.kill('SIGKILL');
    assert.equal((await victim.exited).signal, 'SIGKILL');
    const killedHeld = held(victim);
    assert.ok(killedHeld.length > 0);

    // SIGTERM another one while it tests: it gives its jobs back and exits 0
    await until('the second worker to hold a lease', () => held(stopped).length > 0, 30_000);
    const stop = await stopped.stop(15_000);
    assert.equal(stop.code, 0, stopped.stderr());
    const last = stopped.logs.find((l) => l['msg'] === 'dnsbl worker stopped');
    assert.ok(last, 'logged its stop');
    const startedByStopped = new Set(stopped.logs.filter((l) => l['msg'] === 'dnsbl test started').map((l) => String(l['ip'])));
    const doneByStopped = new Set(stopped.logs.filter((l) => l['msg'] === 'dnsbl job done').map((l) => String(l['ip'])));
    const releasedByStopped = [...startedByStopped].filter((a) => !doneByStopped.has(a));
    assert.equal(Number(last['released']), releasedByStopped.length);

    // the two left finish the queue, the killed worker's jobs included once its leases expired
    await until('the queue to drain', () => {
      const c = rig.jobs.counts();
      return c.queued === 0 && c.running === 0 && c.done === TARGETS.length + 1;
    }, 90_000);
    const elapsed = Date.now() - started;

    for (const a of TARGETS) {
      const jobs = rig.jobs.list({ address: a });
      assert.equal(jobs.length, 1, `${a}: one job`);
      const j = jobs[0]!;
      assert.equal(j.state, 'done');
      assert.equal((j.result as TestOutcome).action, 'not-listed', `${a}: ${JSON.stringify(j.result)}`);
      assert.equal(rig.store.get(a)!.state, 'delisted');
      assert.deepEqual(rig.store.history(a).map((h) => h.event), ['submitted', 'delisted'], `${a}: the result applied exactly once`);
      const touched = killedHeld.includes(a) || releasedByStopped.includes(a);
      if (touched) {
        assert.ok(fakes.connections(a) >= perTest, `${a}: re-tested in full after the interruption`);
        assert.notEqual(j.leaseOwner?.split(':')[1], String(victim.pid), `${a}: finished by a live worker`);
      } else {
        assert.equal(fakes.connections(a), perTest, `${a}: tested exactly once (${fakes.connections(a)} connections, one test is ${perTest})`);
      }
    }
    for (const a of killedHeld) {
      if (a === TARPIT) continue;
      assert.equal(rig.jobs.list({ address: a })[0]!.attempts, 2, `${a}: taken over from the killed worker`);
    }
    const owners = new Set(rig.jobs.list({ state: 'done' }).map((j) => j.leaseOwner));
    assert.ok(owners.size >= 2, `the work was spread (${owners.size} workers finished jobs)`);
    const takenOver = workers.slice(2).flatMap((w) => w.logs).filter((l) => l['msg'] === 'dnsbl job taken over');
    assert.equal(takenOver.length, killedHeld.length, 'each of the dead worker\'s jobs taken over once');
    assert.ok(elapsed < 60_000, `took ${elapsed} ms`);
    t.diagnostic(`${TARGETS.length + 1} jobs in ${elapsed} ms; ${perTest} connections per test; killed worker held ${killedHeld.join(' ')}; stopped worker released ${releasedByStopped.join(' ') || 'none'}; ${owners.size} workers finished jobs`);

    // the tarpit: INCONCLUSIVE at the budget, job completed, retry scheduled
    const tj = rig.jobs.list({ address: TARPIT })[0]!;
    assert.equal(tj.state, 'done');
    assert.equal((tj.result as TestOutcome).verdict, 'INCONCLUSIVE');
    assert.equal((tj.result as TestOutcome).action, 'keep-pending');
    const tl = rig.store.get(TARPIT)!;
    assert.equal(tl.state, 'pending');
    assert.ok(tl.nextRetest! > Date.now() + 50 * 60_000, 'retried in an hour, not at once');
    assert.deepEqual(rig.store.history(TARPIT).map((h) => h.event), ['submitted', 'tested']);
  });

  it('the workers left stop cleanly on SIGTERM with nothing held', async () => {
    for (const w of workers.slice(2)) {
      const r = await w.stop(15_000);
      assert.equal(r.code, 0, w.stderr());
    }
    assert.deepEqual(rig.jobs.counts(), { queued: 0, running: 0, done: TARGETS.length + 1, expired: 0 });
  });
});
