/**
 * The ORDB job queue (jobs.ts) and worker (worker.ts) on a real SQLite file: due listings become jobs once; two
 * connections (and four processes racing on one file) never take one job; an expired lease is taken over and the
 * old holder's result is fenced off (applied exactly once); stop() gives running jobs back; the worker applies the
 * workflow's decisions.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListingStore } from './store.ts';
import { JobQueue } from './jobs.ts';
import { OrdbWorker } from './worker.ts';
import { OrdbWorkflow, type HostTestResult, type TestOutcome } from './workflow.ts';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'relayguard-jobs-')); });
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

let n = 0;
function fresh(clock: { now: () => number } = { now: () => Date.now() }): { path: string; store: ListingStore; jobs: JobQueue } {
  const path = join(dir, `jobs-${++n}.db`);
  const store = ListingStore.open(path, { clock });
  return { path, store, jobs: new JobQueue(store, { clock }) };
}

const closed: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554', report: null };
const outcome = (network: string): TestOutcome => ({ network, before: 'pending', after: 'delisted', action: 'not-listed', verdict: 'CLOSED', detail: 'x' });

describe('JobQueue', () => {
  it('queues each due single-address open-relay listing once, and nothing else', () => {
    const t = { v: 1_000_000 };
    const { store, jobs } = fresh({ now: () => t.v });
    store.add({ network: '192.0.2.1', state: 'pending', nextRetest: t.v });
    store.add({ network: '192.0.2.2', nextRetest: t.v - 5 });
    store.add({ network: '192.0.2.3', nextRetest: t.v + 60_000 });
    store.add({ network: '192.0.2.0/28', nextRetest: t.v });
    store.add({ network: '192.0.2.4', category: 'honeypot', nextRetest: t.v });
    store.add({ network: '2001:db8::25', state: 'pending', nextRetest: t.v });
    assert.equal(jobs.enqueueDue(), 3);
    assert.equal(jobs.enqueueDue(), 0, 'idempotent: one open job per address');
    const queued = jobs.list({ state: 'queued' });
    assert.deepEqual(queued.map((j) => `${j.address} ${j.kind}`).sort(), ['192.0.2.1 submit', '192.0.2.2 retest', '2001:db8::25 submit']);
    assert.equal(jobs.enqueue('192.0.2.1', 'retest'), null, 'enqueue() is a no-op while a job is open');
    store.close();
  });

  it('two connections to one file never take the same job; an expired lease is taken over and the old holder is fenced off', () => {
    const t = { v: 5_000_000 };
    const clock = { now: () => t.v };
    const a = fresh(clock);
    const b = { store: ListingStore.open(a.path, { clock }) };
    const jobsB = new JobQueue(b.store, { clock });
    a.store.add({ network: '192.0.2.9', state: 'pending', nextRetest: t.v });
    a.jobs.enqueueDue();
    const [ca] = a.jobs.claim('worker-a', 5, 1000);
    assert.ok(ca);
    assert.equal(ca.tookOverFrom, null);
    assert.deepEqual(jobsB.claim('worker-b', 5, 1000), [], 'held by worker-a');
    t.v += 999;
    assert.ok(a.jobs.heartbeat(ca.lease, 1000), 'renewed before expiry');
    t.v += 999;
    assert.deepEqual(jobsB.claim('worker-b', 5, 1000), [], 'the renewal counts');
    t.v += 1;
    const [cb] = jobsB.claim('worker-b', 5, 1000);
    assert.ok(cb, 'expired: worker-b takes it over');
    assert.equal(cb.tookOverFrom, 'worker-a');
    assert.equal(cb.lease.epoch, ca.lease.epoch + 1);
    assert.equal(cb.job.attempts, 2);
    assert.equal(a.jobs.heartbeat(ca.lease, 1000), false, 'worker-a learns it lost the lease');
    let applied = 0;
    assert.equal(a.jobs.complete(ca.lease, () => { applied++; return outcome('192.0.2.9'); }), false, 'fenced');
    assert.equal(applied, 0);
    assert.equal(a.jobs.release(ca.lease), false, 'nor can it give back what it no longer holds');
    assert.equal(jobsB.complete(cb.lease, () => { applied++; return outcome('192.0.2.9'); }), true);
    assert.equal(jobsB.complete(cb.lease, () => { applied++; return outcome('192.0.2.9'); }), false, 'once');
    assert.equal(applied, 1);
    const done = a.jobs.get(cb.job.id)!;
    assert.equal(done.state, 'done');
    assert.equal(done.leaseOwner, 'worker-b');
    assert.deepEqual((done.result as TestOutcome).action, 'not-listed');
    assert.deepEqual(a.jobs.counts(), { queued: 0, running: 0, done: 1, expired: 0 });
    b.store.close();
    a.store.close();
  });

  it('a result whose apply throws is not recorded and the job stays claimed; release() puts it back without counting the attempt', () => {
    const { store, jobs } = fresh();
    store.add({ network: '192.0.2.10', state: 'pending', nextRetest: Date.now() });
    jobs.enqueueDue();
    const [c] = jobs.claim('w', 1, 60_000);
    assert.throws(() => jobs.complete(c!.lease, () => { throw new Error('boom'); }), /boom/);
    assert.equal(jobs.get(c!.job.id)!.state, 'running', 'rolled back');
    assert.ok(jobs.release(c!.lease));
    const j = jobs.get(c!.job.id)!;
    assert.equal(j.state, 'queued');
    assert.equal(j.attempts, 0);
    assert.equal(j.leaseOwner, null);
    store.close();
  });

  it('four processes claiming from one file at once take every job exactly once', async () => {
    const { path, store, jobs } = fresh();
    const t0 = Date.now();
    store.addMany(Array.from({ length: 400 }, (_, i) => ({ network: `10.${i >> 8}.${i & 255}.1`, state: 'pending' as const, nextRetest: t0 })));
    assert.equal(jobs.enqueueDue(10_000), 400);
    store.close();
    const script = `
      import { ListingStore } from ${JSON.stringify(new URL('./store.ts', import.meta.url).href)};
      import { JobQueue } from ${JSON.stringify(new URL('./jobs.ts', import.meta.url).href)};
      const store = ListingStore.open(process.argv[1]);
      const jobs = new JobQueue(store);
      const mine = [];
      // Start together (a start line in the future), and take a little time per job, as a test would.
      while (Date.now() < Number(process.argv[3])) await new Promise((r) => setTimeout(r, 5));
      for (;;) {
        const got = jobs.claim(process.argv[2], 3, 60000);
        if (got.length === 0) break;
        for (const c of got) {
          mine.push(c.job.id);
          const until = Date.now() + 2;
          while (Date.now() < until) { /* work */ }
          jobs.complete(c.lease, () => ({ by: process.argv[2] }));
        }
      }
      store.close();
      process.stdout.write(JSON.stringify(mine));`;
    const startAt = Date.now() + 2500;
    const run = (name: string): Promise<number[]> => new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, path, name, String(startAt)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as number[]) : reject(new Error(`claimer ${name} exited ${code}: ${err}`))));
    });
    const results = await Promise.all(['p1', 'p2', 'p3', 'p4'].map(run));
    const all = results.flat();
    assert.equal(all.length, 400, 'every job taken');
    assert.equal(new Set(all).size, 400, 'no job taken twice');
    assert.ok(results.filter((r) => r.length > 0).length >= 2, `the claimers raced (${results.map((r) => r.length).join(', ')})`);
    const check = ListingStore.open(path);
    const q = new JobQueue(check);
    assert.deepEqual(q.counts(), { queued: 0, running: 0, done: 400, expired: 0 });
    check.close();
  });
});

describe('test now through the job queue', () => {
  it('claimAddress takes an address\'s job whatever its due time, unless another worker tests it under a live lease', () => {
    const t = { v: 20_000_000 };
    const clock = { now: () => t.v };
    const { store, jobs } = fresh(clock);
    store.add({ network: '192.0.2.50', nextRetest: t.v + 7 * 86_400_000 });
    const a = jobs.claimAddress('admin', '192.0.2.50', 'retest', 1000);
    assert.ok(a !== 'busy');
    assert.equal(a.job.kind, 'retest');
    assert.equal(jobs.claimAddress('other', '192.0.2.50', 'retest', 1000), 'busy');
    t.v += 1001;
    const b = jobs.claimAddress('other', '192.0.2.50', 'retest', 1000);
    assert.ok(b !== 'busy');
    assert.equal(b.tookOverFrom, 'admin');
    assert.equal(b.job.id, a.job.id, 'the same job, not a second one');
    store.close();
  });

  it('testNow runs as the job (even when not due), and is refused with ERR_DNSBL_BUSY while a worker tests the address', async () => {
    const { store, jobs } = fresh();
    let release: (r: HostTestResult) => void = () => {};
    const slowFlow = new OrdbWorkflow({ store, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 }, test: () => new Promise((r) => { release = r; }) });
    slowFlow.submit('127.0.0.51', 't');
    const busyWorker = new OrdbWorker({ jobs, workflow: slowFlow, owner: 'busy' });
    const running = busyWorker.drain();
    await new Promise((r) => setTimeout(r, 20));
    let admin: OrdbWorker | null = null;
    const adminFlow = new OrdbWorkflow({ store, allowNonGlobal: true, test: async () => closed, testNowVia: (a, k) => admin!.runNow(a, k) });
    admin = new OrdbWorker({ jobs, workflow: adminFlow, owner: 'admin' });
    const refused = await adminFlow.testNow('127.0.0.51');
    assert.ok('ok' in refused && refused.code === 'ERR_DNSBL_BUSY', JSON.stringify(refused));
    release(closed);
    assert.equal((await running)[0]!.action, 'not-listed');
    // Listed by hand, retest due in a week: "test now" still runs it, as a job.
    store.add({ network: '127.0.0.52', nextRetest: Date.now() + 7 * 86_400_000 });
    const o = await adminFlow.testNow('127.0.0.52');
    assert.ok(!('ok' in o), JSON.stringify(o));
    assert.equal(o.action, 'delist');
    const [j] = jobs.list({ address: '127.0.0.52' });
    assert.equal(j!.state, 'done');
    assert.equal(j!.leaseOwner, 'admin');
    assert.equal(j!.kind, 'retest');
    await admin.stop();
    await busyWorker.stop();
    store.close();
  });
});

describe('OrdbWorker', () => {
  it('runs the queued tests through the workflow (same decisions), concurrency bounded', async () => {
    const { store, jobs } = fresh();
    const wf = (test: (ip: string) => Promise<HostTestResult>): OrdbWorkflow => new OrdbWorkflow({ store, test, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 } });
    let active = 0;
    let peak = 0;
    const workflow = wf(async () => {
      active++; peak = Math.max(peak, active);
      await new Promise((r) => setTimeout(r, 20));
      active--;
      return closed;
    });
    for (let i = 1; i <= 6; i++) assert.equal((workflow.submit(`127.0.0.${i + 20}`, 'test') as { status: string }).status, 'queued');
    const worker = new OrdbWorker({ jobs, workflow, concurrency: 3, owner: 'w1' });
    const out = await worker.drain();
    assert.equal(out.length, 6);
    assert.ok(out.every((o) => o.action === 'not-listed' && o.after === 'delisted'));
    assert.equal(peak, 3);
    assert.equal(worker.stats().completed, 6);
    assert.deepEqual(jobs.counts(), { queued: 0, running: 0, done: 6, expired: 0 });
    assert.deepEqual(store.history('127.0.0.21').map((h) => h.event), ['submitted', 'delisted']);
    assert.deepEqual(await worker.drain(), [], 'nothing due: no job queued again');
    store.close();
  });

  it('stop() aborts the running tests, records nothing and gives the jobs back', async () => {
    const { store, jobs } = fresh();
    let started = 0;
    const workflow = new OrdbWorkflow({
      store, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 },
      test: (_ip, { signal }) => new Promise((resolve) => {
        started++;
        signal.addEventListener('abort', () => resolve({ verdict: 'INCONCLUSIVE', proved: false, reason: 'aborted', report: null }));
      }),
    });
    workflow.submit('127.0.0.31', 't');
    workflow.submit('127.0.0.32', 't');
    const worker = new OrdbWorker({ jobs, workflow, concurrency: 4, owner: 'w-stop', pollMs: 50 });
    worker.start();
    while (started < 2) await new Promise((r) => setTimeout(r, 10));
    assert.equal(jobs.counts().running, 2);
    await worker.stop();
    assert.deepEqual(jobs.counts(), { queued: 2, running: 0, done: 0, expired: 0 });
    assert.equal(worker.stats().released, 2);
    assert.equal(store.get('127.0.0.31')!.state, 'pending');
    assert.deepEqual(store.history('127.0.0.31').map((h) => h.event), ['submitted'], 'nothing recorded');
    assert.ok(jobs.list({ state: 'queued' }).every((j) => j.attempts === 0));
    store.close();
  });

  it('a worker that lost its lease (stalled past it) aborts its test and records nothing; the new holder records once', async () => {
    const t = { v: 10_000_000 };
    const clock = { now: () => t.v };
    const { store, jobs } = fresh(clock);
    let release: (r: HostTestResult) => void = () => {};
    const slow = new OrdbWorkflow({ store, clock, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 }, test: (_ip, { signal }) => new Promise((resolve) => {
      release = resolve;
      signal.addEventListener('abort', () => resolve({ verdict: 'INCONCLUSIVE', proved: false, reason: 'aborted', report: null }));
    }) });
    slow.submit('127.0.0.41', 't');
    const stalled = new OrdbWorker({ jobs, workflow: slow, owner: 'stalled', leaseMs: 1000, heartbeatMs: 50, pollMs: 1_000_000 });
    const first = stalled.drain();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(jobs.counts().running, 1);
    t.v += 5000; // the stalled worker's lease expires before its next heartbeat is seen
    const other = new OrdbWorker({ jobs, workflow: new OrdbWorkflow({ store, clock, allowNonGlobal: true, test: async () => closed }), owner: 'healthy', leaseMs: 1000 });
    const [o] = await other.drain();
    assert.equal(o!.action, 'not-listed');
    assert.equal(other.stats().takenOver, 1);
    release(closed); // the stalled test ends now (or was aborted by its heartbeat): either way, fenced off
    assert.deepEqual(await first, []);
    assert.equal(stalled.stats().leasesLost, 1);
    assert.deepEqual(store.history('127.0.0.41').map((h) => h.event), ['submitted', 'delisted'], 'applied exactly once');
    store.close();
  });
});
