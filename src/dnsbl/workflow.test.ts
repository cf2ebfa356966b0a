import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import { ListingStore } from './store.ts';
import { buildZone } from './zone.ts';
import { zoneFromStore } from './index.ts';
import { decide, OrdbWorkflow, ordbEvidence, type HostTestResult, type OrdbWorkflowOptions } from './workflow.ts';

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const OPEN: HostTestResult = { verdict: 'OPEN', proved: true, reason: 'proved', detail: 'V02 probe arrived', mode: 'prove', report: { schema: 'relayguard-tester/1', verdict: 'OPEN' } };
const CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554 5.7.1 Relay access denied', report: { verdict: 'CLOSED' } };
const NOT_PROVED: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, reason: 'accepted-not-proved', detail: 'RCPT 250', report: { verdict: 'INCONCLUSIVE' } };
const TARPIT: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, reason: 'timeout', detail: 'no reply', report: null };
const DOWN: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'no-service', detail: 'connection refused', report: null };

/** A workflow over an in-memory store with a scripted tester: answers[ip] is consumed one result per test. */
function setup(answers: Record<string, HostTestResult[]>, options: Partial<OrdbWorkflowOptions> = {}) {
  const clock = new ManualClock(T0);
  const store = ListingStore.open(':memory:', { clock });
  const logger = new MemoryLogger();
  const calls: { ip: string; prove: boolean }[] = [];
  let changes = 0;
  const wf = new OrdbWorkflow({
    store, clock, logger, prove: true, allowNonGlobal: true,
    test: async (ip, { prove }) => {
      calls.push({ ip, prove });
      const next = answers[ip]?.shift();
      if (!next) throw new Error(`no scripted answer for ${ip}`);
      return next;
    },
    onChange: () => { changes++; },
    ...options,
  });
  return { clock, store, logger, calls, wf, changes: () => changes };
}

describe('OrdbWorkflow.submit', () => {
  it('queues a new address as pending, due at once, with the submitter in the history', () => {
    const { wf, store, changes } = setup({});
    const r = wf.submit('192.0.2.25', 'web:198.51.100.9');
    assert.ok(r.ok);
    assert.equal(r.status, 'queued');
    const l = store.get('192.0.2.25')!;
    assert.equal(l.state, 'pending');
    assert.equal(l.nextRetest, T0);
    assert.equal(ordbEvidence(l)!.submittedBy, 'web:198.51.100.9');
    assert.deepEqual(store.history('192.0.2.25').map((h) => [h.event, h.detail]), [['submitted', 'submitted by web:198.51.100.9']]);
    assert.equal(changes(), 1);
    const again = wf.submit('192.0.2.25', 'someone-else');
    assert.ok(again.ok && again.status === 'already-pending');
  });

  it('already listed (alone or inside a listed network): a no-op', () => {
    const { wf, store } = setup({});
    store.add({ network: '192.0.2.0/24' });
    store.add({ network: '198.51.100.1' });
    const a = wf.submit('192.0.2.9', 'x');
    assert.ok(a.ok && a.status === 'already-listed');
    assert.equal(a.listing!.network, '192.0.2.0/24');
    const b = wf.submit('198.51.100.1', 'x');
    assert.ok(b.ok && b.status === 'already-listed');
    assert.equal(store.get('192.0.2.9'), null);
  });

  it('excluded addresses (configured or in the store) are refused with ERR_DNSBL_EXCLUDED and never stored', () => {
    const { wf, store } = setup({}, { excluded: ['203.0.113.0/24'] });
    store.exclude('198.51.100.0/24', { reason: 'our own network' });
    const a = wf.submit('203.0.113.5', 'x');
    assert.ok(!a.ok);
    assert.equal(a.code, 'ERR_DNSBL_EXCLUDED');
    assert.match(a.message, /203\.0\.113\.0\/24.*never tested or listed/);
    const b = wf.submit('198.51.100.77', 'x');
    assert.ok(!b.ok && b.code === 'ERR_DNSBL_EXCLUDED');
    assert.match(b.message, /our own network/);
    assert.equal(store.get('203.0.113.5'), null);
    assert.equal(store.get('198.51.100.77'), null);
  });

  it('refuses malformed input, networks, non-global addresses and the RFC 5782 test points', () => {
    const { wf } = setup({}, { allowNonGlobal: false, rateLimit: { perSubmitterPerHour: 0 } });
    const code = (ip: string): string | null => { const r = wf.submit(ip, 'x'); return r.ok ? null : r.code; };
    assert.equal(code('999.1.1.1'), 'ERR_DNSBL_NETWORK');
    assert.equal(code('mail.example.org'), 'ERR_DNSBL_NETWORK');
    assert.equal(code('192.0.2.0/24'), 'ERR_DNSBL_NOT_HOST');
    assert.equal(code('10.1.2.3'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('127.0.0.5'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('::1'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('fe80::1'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('192.0.2.25'), 'ERR_DNSBL_NOT_GLOBAL', 'documentation space');
    assert.equal(code('2001:db8::25'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('100.64.0.1'), 'ERR_DNSBL_NOT_GLOBAL');
    assert.equal(code('8.8.4.4'), null);
    assert.equal(code('2001:4860::25'), null);
    const lab = setup({}, { allowNonGlobal: true }).wf;
    assert.ok(lab.submit('127.0.0.5', 'x').ok);
    const tp = lab.submit('127.0.0.2', 'x');
    assert.ok(!tp.ok && tp.code === 'ERR_DNSBL_NOT_GLOBAL', 'test points never, even in a lab');
    assert.ok(lab.submit('::ffff:192.0.2.44', 'x').ok, 'IPv4-mapped is stored as IPv4');
  });

  it('rate limits per submitter per hour (sliding), others unaffected', () => {
    const { wf, clock, logger } = setup({}, { rateLimit: { perSubmitterPerHour: 3 } });
    for (let i = 1; i <= 3; i++) { assert.ok(wf.submit(`192.0.2.${i}`, 'alice').ok); clock.advance(60_000); }
    const r = wf.submit('192.0.2.4', 'alice');
    assert.ok(!r.ok);
    assert.equal(r.code, 'ERR_DNSBL_RATE_LIMIT');
    assert.equal(r.retryAfterMs, HOUR - 3 * 60_000);
    assert.ok(wf.submit('192.0.2.4', 'bob').ok);
    clock.advance(HOUR - 3 * 60_000 + 1);
    assert.ok(wf.submit('192.0.2.5', 'alice').ok, 'the oldest submission left the window');
    assert.ok(logger.records.some((x) => x.msg === 'dnsbl submission rate limited'));
  });
});

describe('OrdbWorkflow.runDue', () => {
  it('OPEN with proof: listed with the evidence, retest scheduled; appears in the zone', async () => {
    const { wf, store, calls } = setup({ '192.0.2.25': [OPEN] }, { retestIntervalMs: 7 * DAY });
    wf.submit('192.0.2.25', 'x');
    const out = await wf.runDue();
    assert.deepEqual(calls, [{ ip: '192.0.2.25', prove: true }]);
    assert.equal(out.length, 1);
    assert.equal(out[0]!.action, 'list');
    const l = store.get('192.0.2.25')!;
    assert.equal(l.state, 'listed');
    assert.equal(l.lastTested, T0);
    assert.equal(l.nextRetest, T0 + 7 * DAY);
    assert.equal(l.timesListed, 1);
    const ev = ordbEvidence(l)!;
    assert.equal(ev.proved, true);
    assert.deepEqual(ev.report, OPEN.report);
    assert.equal(ev.attempts, 1);
    const zone = zoneFromStore(store, { apex: 'relays.test' });
    assert.equal(zone.lookupName('25.2.0.192.relays.test').kind, 'listed');
    assert.deepEqual(store.history('192.0.2.25').map((h) => h.event), ['submitted', 'listed']);
    assert.deepEqual(await wf.runDue(), [], 'nothing else due');
  });

  it('safe mode: relaying accepted but not proved is never listed; it stays pending, flagged, parked for a human', async () => {
    const { wf, store, calls } = setup({ '192.0.2.26': [NOT_PROVED, { ...OPEN, proved: false }] }, { prove: false });
    wf.submit('192.0.2.26', 'x');
    const [o] = await wf.runDue();
    assert.equal(calls[0]!.prove, false);
    assert.equal(o!.action, 'park');
    const l = store.get('192.0.2.26')!;
    assert.equal(l.state, 'pending');
    assert.equal(l.nextRetest, null);
    assert.match(ordbEvidence(l)!.flagged!, /safe mode.*not listed automatically/);
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).lookupName('26.2.0.192.relays.test').kind, 'nxdomain');
    // even a tester claiming OPEN without proof does not list
    wf.scheduleRetest('192.0.2.26');
    const [o2] = await wf.runDue();
    assert.equal(o2!.action, 'park');
    assert.equal(store.get('192.0.2.26')!.state, 'pending');
  });

  it('proof mode, probe never arrived (DB-06): not listed, retried, then parked and flagged', async () => {
    const { wf, store, clock } = setup({ '192.0.2.27': [NOT_PROVED, NOT_PROVED, NOT_PROVED] }, { retryIntervalMs: HOUR, maxPendingAttempts: 3 });
    wf.submit('192.0.2.27', 'x');
    assert.equal((await wf.runDue())[0]!.action, 'keep-pending');
    assert.equal(store.get('192.0.2.27')!.nextRetest, T0 + HOUR);
    assert.deepEqual(await wf.runDue(), [], 'not due yet');
    clock.advance(HOUR);
    assert.equal((await wf.runDue())[0]!.action, 'keep-pending');
    clock.advance(HOUR);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'park');
    const l = store.get('192.0.2.27')!;
    assert.equal(l.state, 'pending');
    assert.equal(l.nextRetest, null);
    assert.equal(ordbEvidence(l)!.attempts, 3);
    assert.match(ordbEvidence(l)!.flagged!, /probe never arrived/);
    assert.equal(l.timesListed, 0);
  });

  it('CLOSED at the first test: not listed (state delisted, test in the history)', async () => {
    const { wf, store } = setup({ '192.0.2.28': [CLOSED] });
    wf.submit('192.0.2.28', 'x');
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'not-listed');
    const l = store.get('192.0.2.28')!;
    assert.equal(l.state, 'delisted');
    assert.equal(l.timesListed, 0);
    assert.match(store.history('192.0.2.28').at(-1)!.detail!, /tested closed, not listed/);
    const again = wf.submit('192.0.2.28', 'x');
    assert.ok(again.ok && again.status === 'queued', 'a tested-closed host may be submitted again');
    assert.equal(ordbEvidence(store.get('192.0.2.28')!)!.attempts, 0);
  });

  it('INCONCLUSIVE pending: kept pending and retried later', async () => {
    const { wf, store } = setup({ '192.0.2.29': [TARPIT] });
    wf.submit('192.0.2.29', 'x');
    assert.equal((await wf.runDue())[0]!.action, 'keep-pending');
    assert.equal(store.get('192.0.2.29')!.state, 'pending');
  });

  it('retest of a listed host: CLOSED delists; INCONCLUSIVE or unreachable keeps it listed (and keeps the proof)', async () => {
    const { wf, store, clock } = setup({ '192.0.2.30': [OPEN, TARPIT, DOWN, OPEN, CLOSED] }, { retestIntervalMs: DAY });
    wf.submit('192.0.2.30', 'x');
    await wf.runDue();
    for (const expected of ['keep-listed', 'keep-listed', 'keep-listed']) {
      clock.advance(DAY);
      const [o] = await wf.runDue();
      assert.equal(o!.action, expected);
      assert.equal(store.get('192.0.2.30')!.state, 'listed');
    }
    assert.equal(ordbEvidence(store.get('192.0.2.30')!)!.proved, true, 'the proof stays on show');
    clock.advance(DAY);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'delist');
    const l = store.get('192.0.2.30')!;
    assert.equal(l.state, 'delisted');
    assert.equal(l.nextRetest, null);
    assert.equal(ordbEvidence(l)!.verdict, 'CLOSED');
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).lookupName('30.2.0.192.relays.test').kind, 'nxdomain');
    assert.deepEqual(store.history('192.0.2.30').map((h) => h.event), ['submitted', 'listed', 'tested', 'tested', 'tested', 'delisted']);
  });

  it('H1: a retest that reads "554 ... Client host [X] blocked using <zone>" is INCONCLUSIVE client-blocked: still listed, flagged, the reason in the history', async () => {
    const blockedText = '554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using ordb.test';
    const BLOCKED: HostTestResult = {
      verdict: 'INCONCLUSIVE', proved: false, reason: 'client-blocked', mode: 'prove',
      detail: `port 25: plain: RCPT ${blockedText} (the tester's address is on a blocklist)`, report: { verdict: 'INCONCLUSIVE', reason: 'client-blocked' },
    };
    const { wf, store } = setup({ '192.0.2.32': [OPEN, BLOCKED] });
    wf.submit('192.0.2.32', 'x');
    await wf.runDue();
    assert.equal(store.get('192.0.2.32')!.state, 'listed');
    const d = wf.requestDelisting('192.0.2.32', 'owner@example.org');
    assert.ok(d.ok, JSON.stringify(d));
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'keep-listed', o!.detail);
    assert.equal(o!.verdict, 'INCONCLUSIVE');
    const l = store.get('192.0.2.32')!;
    assert.equal(l.state, 'listed');
    assert.ok(l.nextRetest !== null, 'retested again later');
    assert.match(ordbEvidence(l)!.flagged ?? '', /client-blocked/);
    assert.equal(ordbEvidence(l)!.proved, true, 'the proof that listed it stays on show');
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).lookupName('32.2.0.192.relays.test').kind, 'listed');
    const last = store.history('192.0.2.32').at(-1)!;
    assert.equal(last.state, 'listed');
    assert.match(last.detail ?? '', /INCONCLUSIVE \(client-blocked\)/);
    assert.ok((last.detail ?? '').includes(blockedText), last.detail ?? '');
    assert.doesNotMatch(store.history('192.0.2.32').map((h) => h.event).join(' '), /delisted/);
  });

  it('requestDelisting: immediate retest of a listed host; refused for unknown, network and manual honeypot listings; rate limited', async () => {
    const { wf, store, clock } = setup({ '192.0.2.31': [OPEN, CLOSED] }, { rateLimit: { perSubmitterPerHour: 2 } });
    wf.submit('192.0.2.31', 'x');
    await wf.runDue();
    clock.advance(HOUR);
    assert.deepEqual(await wf.runDue(), [], 'not due');
    const r = wf.requestDelisting('192.0.2.31', 'owner');
    assert.ok(r.ok);
    assert.equal(store.get('192.0.2.31')!.nextRetest, T0 + HOUR);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'delist');
    store.add({ network: '198.51.100.0/24' });
    store.add({ network: '203.0.113.9', category: 'honeypot' });
    const codes = ['192.0.2.31', '198.51.100.4', '203.0.113.9', 'junk'].map((ip) => { const x = wf.requestDelisting(ip, 'other'); return x.ok ? 'ok' : x.code; });
    assert.deepEqual(codes.slice(0, 2), ['ERR_DNSBL_NOT_LISTED', 'ERR_DNSBL_NOT_TESTABLE']);
    assert.equal(codes[2], 'ERR_DNSBL_RATE_LIMIT', 'third request of "other" within the hour');
    const h = wf.requestDelisting('203.0.113.9', 'third');
    assert.ok(!h.ok && h.code === 'ERR_DNSBL_NOT_TESTABLE');
  });

  it('a host excluded while pending is never tested; a tester exception is an inconclusive test', async () => {
    const { wf, store, calls } = setup({});
    wf.submit('192.0.2.40', 'x');
    wf.submit('192.0.2.41', 'x');
    store.exclude('192.0.2.40');
    const out = await wf.runDue();
    assert.deepEqual(calls.map((c) => c.ip), ['192.0.2.41']);
    const by = Object.fromEntries(out.map((o) => [o.network, o]));
    assert.equal(by['192.0.2.41']!.action, 'keep-pending');
    assert.match(ordbEvidence(store.get('192.0.2.41')!)!.detail!, /tester failed: no scripted answer/);
    assert.equal(store.get('192.0.2.40')!.state, 'excluded');
  });

  it('a result that arrives after the entry changed (removed by an admin) is not recorded', async () => {
    let release!: (r: HostTestResult) => void;
    const clock = new ManualClock(T0);
    const store = ListingStore.open(':memory:', { clock });
    const wf = new OrdbWorkflow({ store, clock, prove: true, allowNonGlobal: true, test: () => new Promise((r) => { release = r; }) });
    wf.submit('192.0.2.50', 'x');
    const run = wf.runDue();
    await new Promise((r) => setImmediate(r));
    store.delist('192.0.2.50', { detail: 'admin' });
    release(OPEN);
    const [o] = await run;
    assert.equal(o!.action, 'skipped');
    assert.equal(store.get('192.0.2.50')!.state, 'delisted');
  });

  it('one test at a time per address; concurrency bounded; stop() aborts and records nothing', async () => {
    const clock = new ManualClock(T0);
    const store = ListingStore.open(':memory:', { clock });
    let active = 0;
    let peak = 0;
    const signals: AbortSignal[] = [];
    const wf = new OrdbWorkflow({
      store, clock, prove: true, concurrency: 2, allowNonGlobal: true,
      test: (_ip, { signal }) => {
        active++; peak = Math.max(peak, active); signals.push(signal);
        return new Promise((resolve) => signal.addEventListener('abort', () => { active--; resolve(TARPIT); }));
      },
    });
    for (let i = 1; i <= 5; i++) wf.submit(`192.0.2.${60 + i}`, `s${i}`);
    const run = wf.runDue();
    const again = wf.runDue();
    assert.equal(run, again, 'overlapping runs share one');
    const now = wf.testNow('192.0.2.61');
    await new Promise((r) => setImmediate(r));
    assert.equal(peak, 2);
    await wf.stop();
    assert.deepEqual(await run, (await run).filter((o) => o.action === 'skipped'));
    const n = await now;
    assert.ok('action' in n && n.action === 'skipped');
    assert.ok(signals.every((s) => s.aborted));
    assert.equal(store.list({ state: 'pending' }).every((l) => l.lastTested === null), true);
  });
});

describe('decide', () => {
  const ctx = { now: T0, prove: true, attempts: 1, retestIntervalMs: DAY, retryIntervalMs: HOUR, maxPendingAttempts: 3 };
  it('only proof lists; only a refusing host is delisted', () => {
    assert.equal(decide('pending', OPEN, ctx).action, 'list');
    assert.equal(decide('pending', { ...OPEN, proved: false }, ctx).action, 'keep-pending');
    assert.equal(decide('pending', DOWN, ctx).action, 'keep-pending', 'unreachable is not closed');
    assert.equal(decide('listed', DOWN, ctx).action, 'keep-listed');
    assert.equal(decide('listed', CLOSED, ctx).action, 'delist');
    assert.equal(decide('listed', { ...CLOSED, reason: 'deferred' }, ctx).action, 'delist');
    assert.equal(decide('pending', TARPIT, { ...ctx, attempts: 3 }).action, 'park');
  });
  it('a refusal of the tester (client-blocked, control-refused) never delists, even when a tester calls it CLOSED', () => {
    for (const reason of ['client-blocked', 'control-refused']) {
      assert.equal(decide('listed', { ...CLOSED, reason }, ctx).action, 'keep-listed', reason);
      assert.equal(decide('listed', { ...TARPIT, reason }, ctx).action, 'keep-listed', reason);
      assert.equal(decide('pending', { ...CLOSED, reason }, ctx).action, 'keep-pending', reason);
    }
    assert.match(decide('listed', { ...TARPIT, reason: 'client-blocked' }, ctx).flagged ?? '', /client-blocked/);
  });
  it('zone built from the store agrees with the store after listing', () => {
    const z = buildZone([{ network: '192.0.2.1' }], { apex: 'relays.test' });
    assert.equal(z.lookupName('1.2.0.192.relays.test').kind, 'listed');
  });
});
