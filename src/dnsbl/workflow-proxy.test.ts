/**
 * The ORDB's open-proxy path (issue 13): decide() and combineChecks() for proxy results, submissions with checks,
 * listing under open-proxy (127.0.0.3) from safe mode, delisting on a CLOSED retest, the checks column's migration
 * of an older database, and the job queue taking open-proxy listings.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ManualClock } from '../core/clock.ts';
import { JobQueue } from './jobs.ts';
import { ListingStore } from './store.ts';
import { zoneFromStore } from './index.ts';
import {
  checksOf, combineChecks, decide, OrdbWorkflow, ordbEvidence, parseChecks, type DecideContext, type HostTestResult, type ProxyEvidence, type TestCheck,
} from './workflow.ts';

const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const PROXY_EVIDENCE: ProxyEvidence = {
  testedAddress: '192.0.2.80', egressAddress: '192.0.2.81', port: 3128, method: 'http-connect', title: 'HTTP CONNECT to the sink (IPv4)',
  destination: '198.51.100.7:25', reply: 'HTTP/1.1 200 Connection established', sinkLine: 'EHLO rg-0a1b2c3d-1.example.net', attempt: 'P01', openAttempts: ['3128 P01 http-connect', '3128 P04 http-post'],
};
const PROXY_OPEN: HostTestResult = {
  verdict: 'OPEN', proved: true, check: 'proxy', reason: 'proved', detail: 'HTTP/1.1 200 Connection established; the sink saw the connection', mode: 'safe',
  egressAddress: '192.0.2.81', proxy: PROXY_EVIDENCE, report: { schema: 'relayguard-tester/2', checks: ['proxy'] },
};
const PROXY_CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, check: 'proxy', reason: 'refused', detail: 'HTTP/1.1 403 Forbidden', mode: 'safe', report: null };
const PROXY_LIES: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, check: 'proxy', reason: 'lies', detail: 'claimed 200, nothing arrived', mode: 'safe', report: null };
const PROXY_DOWN: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, check: 'proxy', reason: 'unreachable', detail: 'no proxy port answered', mode: 'safe', report: null };
const SMTP_OPEN: HostTestResult = { verdict: 'OPEN', proved: true, check: 'smtp', reason: 'proved', detail: 'probe arrived', mode: 'prove', report: null };
const SMTP_CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, check: 'smtp', reason: 'refused', detail: 'RCPT 554', mode: 'safe', report: null };
const SMTP_DOWN: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, check: 'smtp', reason: 'unreachable', detail: 'no SMTP port answered', mode: 'safe', report: null };
const SMTP_SUSPECT: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, check: 'smtp', reason: 'accepted-not-proved', detail: 'RCPT 250', mode: 'safe', report: null };

const NNTP_EVIDENCE = {
  testedAddress: '192.0.2.119', port: 119, path: 'POST', group: 'local.test', messageId: '<rg-0a1b2c3d-2@example.net>', command: '340 send article',
  posted: '240 article posted', readBack: ['ARTICLE', 'HEAD', 'GROUP/STAT'], pathHeader: 'news.example!not-for-mail', injectionInfo: 'posting-host="192.0.2.9"', cancelled: true,
};
const NNTP_OPEN: HostTestResult = { verdict: 'OPEN', proved: true, check: 'nntp', reason: 'article-read-back', detail: 'read back from local.test', mode: 'prove', nntp: NNTP_EVIDENCE, report: null };
/** Safe mode: POST answered 340 and nothing was sent. */
const NNTP_340: HostTestResult = { verdict: 'INCONCLUSIVE', proved: false, check: 'nntp', reason: 'accepted-not-proved', detail: 'POST 340: would take an article', mode: 'safe', report: null };
const NNTP_CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, check: 'nntp', reason: 'posting-not-permitted', detail: 'POST 440', mode: 'safe', report: null };

const ctx = (over: Partial<DecideContext> = {}): DecideContext => ({
  now: T0, prove: false, attempts: 1, retestIntervalMs: 7 * DAY, retryIntervalMs: HOUR, maxPendingAttempts: 3, ...over,
});

describe('decide() with proxy results', () => {
  it('a proved open proxy is listed under open-proxy, from safe mode too (proof by arrival needs no message)', () => {
    const d = decide('pending', PROXY_OPEN, ctx({ prove: false }));
    assert.equal(d.action, 'list');
    assert.equal(d.state, 'listed');
    assert.equal(d.category, 'open-proxy');
    assert.equal(d.nextRetest, T0 + 7 * DAY);
    assert.match(d.detail, /open proxy, proved by arrival/);
  });

  it('a retest that finds the proxy CLOSED delists it; one still open stays listed under open-proxy', () => {
    assert.equal(decide('listed', PROXY_CLOSED, ctx()).action, 'delist');
    assert.equal(decide('listed', PROXY_CLOSED, ctx()).state, 'delisted');
    const still = decide('listed', PROXY_OPEN, ctx());
    assert.equal(still.action, 'keep-listed');
    assert.equal(still.category, 'open-proxy');
  });

  it('INCONCLUSIVE (a proxy that lies, or no port answering) keeps the current state, with a retry', () => {
    for (const r of [PROXY_LIES, PROXY_DOWN]) {
      const p = decide('pending', r, ctx({ attempts: 1 }));
      assert.equal(p.action, 'keep-pending', r.reason);
      assert.equal(p.nextRetest, T0 + HOUR);
      assert.equal(p.category, undefined);
      const l = decide('listed', r, ctx());
      assert.equal(l.action, 'keep-listed', r.reason);
      assert.equal(l.state, 'listed');
      assert.equal(l.nextRetest, T0 + 7 * DAY);
      assert.equal(l.category, undefined, 'the category is left as it was');
    }
    assert.equal(decide('pending', PROXY_LIES, ctx({ attempts: 3 })).action, 'park', 'parked for a human after maxPendingAttempts');
  });

  it('a proxy OPEN without arrival (never produced by the battery, but not trusted either) is not listed', () => {
    const d = decide('pending', { ...PROXY_OPEN, proved: false }, ctx());
    assert.notEqual(d.action, 'list');
    assert.equal(d.state, 'pending');
  });

  it('an smtp result (or one without check, from before checks) still lists under open-relay', () => {
    assert.equal(decide('pending', SMTP_OPEN, ctx({ prove: true })).category, 'open-relay');
    const { check: _c, ...old } = SMTP_OPEN;
    assert.equal(decide('pending', old, ctx({ prove: true })).category, 'open-relay');
  });
});

describe('decide() with nntp results', () => {
  it('an article read back lists the server under open-nntp', () => {
    const d = decide('pending', NNTP_OPEN, ctx());
    assert.equal(d.action, 'list');
    assert.equal(d.category, 'open-nntp');
    assert.match(d.detail, /test article read back/);
  });

  it('a safe-mode 340 never lists: parked in safe mode, retried then parked in proof mode', () => {
    const safe = decide('pending', NNTP_340, ctx({ prove: false }));
    assert.equal(safe.action, 'park');
    assert.equal(safe.state, 'pending');
    assert.match(safe.flagged ?? '', /no test article was read back/);
    for (let attempts = 1; attempts <= 4; attempts++) {
      const p = decide('pending', NNTP_340, ctx({ prove: true, attempts }));
      assert.notEqual(p.action, 'list', `attempt ${attempts}`);
      assert.equal(p.state, 'pending');
    }
    // an OPEN the check never produces without a read-back is not trusted either
    assert.notEqual(decide('pending', { ...NNTP_OPEN, proved: false }, ctx()).action, 'list');
  });

  it('a listed open Usenet server that refuses posting on retest is delisted; a 340 keeps it listed', () => {
    assert.equal(decide('listed', NNTP_CLOSED, ctx()).action, 'delist');
    assert.equal(decide('listed', NNTP_340, ctx()).action, 'keep-listed');
  });
});

describe('combineChecks()', () => {
  it('one check: the result itself', () => {
    assert.equal(combineChecks([PROXY_CLOSED], null), PROXY_CLOSED);
  });

  it('any proved OPEN wins: a host without SMTP but with an open proxy is an open proxy', () => {
    const r = combineChecks([SMTP_DOWN, PROXY_OPEN], null);
    assert.equal(r.check, 'proxy');
    assert.equal(r.verdict, 'OPEN');
    assert.equal(r.proxy, PROXY_EVIDENCE);
    assert.deepEqual(r.checks?.map((c) => [c.check, c.verdict, c.reason]), [['smtp', 'INCONCLUSIVE', 'unreachable'], ['proxy', 'OPEN', 'proved']]);
    assert.match(r.detail ?? '', /^proxy: .*also smtp INCONCLUSIVE \(unreachable\)/);
  });

  it('both proved: open-relay first for a pending entry, the listed category\'s own check for a listed one', () => {
    assert.equal(combineChecks([SMTP_OPEN, PROXY_OPEN], null).check, 'smtp');
    assert.equal(combineChecks([SMTP_OPEN, PROXY_OPEN], 'open-proxy').check, 'proxy');
  });

  it('a listed entry is judged by its own check: an open proxy found closed is delisted though SMTP did not answer', () => {
    const r = combineChecks([SMTP_DOWN, PROXY_CLOSED], 'open-proxy');
    assert.equal(r.check, 'proxy');
    assert.equal(decide('listed', r, ctx()).action, 'delist');
    // and an open relay is not delisted because its proxy check is closed
    const relay = combineChecks([SMTP_DOWN, PROXY_CLOSED], 'open-relay');
    assert.equal(relay.check, 'smtp');
    assert.equal(decide('listed', relay, ctx()).action, 'keep-listed');
  });

  it('pending: CLOSED only when every check is; a suspect before an inconclusive', () => {
    assert.equal(combineChecks([SMTP_CLOSED, PROXY_CLOSED], null).verdict, 'CLOSED');
    assert.equal(decide('pending', combineChecks([SMTP_CLOSED, PROXY_CLOSED], null), ctx()).action, 'not-listed');
    assert.equal(combineChecks([SMTP_CLOSED, PROXY_LIES], null).reason, 'lies');
    assert.equal(decide('pending', combineChecks([SMTP_CLOSED, PROXY_LIES], null), ctx()).action, 'keep-pending');
    assert.equal(combineChecks([SMTP_SUSPECT, PROXY_LIES], null).reason, 'accepted-not-proved');
  });
});

describe('parseChecks() / checksOf()', () => {
  it('known names only, each once, in battery order; default smtp', () => {
    assert.deepEqual(parseChecks(undefined), ['smtp']);
    assert.deepEqual(parseChecks(['proxy', 'SMTP', 'proxy']), ['smtp', 'proxy']);
    assert.deepEqual(parseChecks(['nntp', 'proxy']), ['proxy', 'nntp']);
    assert.equal(parseChecks(['imap']), null);
    assert.equal(parseChecks(['smtp', 'x']), null);
  });

  it('an entry without checks runs its category\'s own', () => {
    assert.deepEqual(checksOf({ checks: null, category: 'open-relay' }), ['smtp']);
    assert.deepEqual(checksOf({ checks: null, category: 'open-proxy' }), ['proxy']);
    assert.deepEqual(checksOf({ checks: ['smtp', 'proxy'], category: 'open-relay' }), ['smtp', 'proxy']);
  });
});

/** A workflow over an in-memory store whose tester answers per check from a script. */
function setup(script: Partial<Record<TestCheck, HostTestResult[]>>) {
  const clock = new ManualClock(T0);
  const store = ListingStore.open(':memory:', { clock });
  const calls: TestCheck[] = [];
  const wf = new OrdbWorkflow({
    store, clock, prove: false, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 },
    test: async (_ip, { check }) => {
      const c = check ?? 'smtp';
      calls.push(c);
      const next = script[c]?.shift();
      if (!next) throw new Error(`no scripted ${c} answer`);
      return next;
    },
  });
  return { clock, store, wf, calls };
}

describe('OrdbWorkflow with the proxy check', () => {
  it('submit --check proxy: stored with the entry, tested with the proxy battery, listed as open-proxy (127.0.0.3, "Open proxy" TXT) with the evidence; a CLOSED retest delists', async () => {
    const { wf, store, clock, calls } = setup({ proxy: [PROXY_OPEN, PROXY_LIES, PROXY_CLOSED] });
    const s = wf.submit('192.0.2.80', 'web:203.0.113.9', { checks: ['proxy'] });
    assert.ok(s.ok && s.status === 'queued');
    assert.deepEqual(store.get('192.0.2.80')!.checks, ['proxy']);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'list');
    assert.deepEqual(calls, ['proxy'], 'only the check asked for ran');
    const l = store.get('192.0.2.80')!;
    assert.equal(l.state, 'listed');
    assert.equal(l.category, 'open-proxy');
    assert.equal(l.code, '127.0.0.3');
    const ev = ordbEvidence(l)!;
    assert.equal(ev.check, 'proxy');
    assert.equal(ev.mode, 'safe');
    assert.deepEqual(ev.proxy, PROXY_EVIDENCE);
    const zone = zoneFromStore(store, { apex: 'relays.test', evidenceUrl: 'http://ordb.test/dnsbl/lookup?ip=$' });
    const hit = zone.lookupName('80.2.0.192.relays.test');
    assert.equal(hit.kind, 'listed');
    assert.ok(hit.kind === 'listed');
    assert.equal(hit.code, '127.0.0.3');
    assert.equal(hit.txt, 'Open proxy, see http://ordb.test/dnsbl/lookup?ip=192.0.2.80');

    // a retest that cannot tell keeps it listed, with the proof on show
    clock.advance(7 * DAY);
    const [keep] = await wf.runDue();
    assert.equal(keep!.action, 'keep-listed');
    assert.equal(store.get('192.0.2.80')!.state, 'listed');
    assert.deepEqual(ordbEvidence(store.get('192.0.2.80')!)!.proxy, PROXY_EVIDENCE, 'the proving evidence is kept');

    // a delisting request: retest now, found closed, delisted
    const req = wf.requestDelisting('192.0.2.80', 'owner');
    assert.ok(req.ok);
    const [del] = await wf.runDue();
    assert.equal(del!.action, 'delist');
    assert.equal(store.get('192.0.2.80')!.state, 'delisted');
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).lookupName('80.2.0.192.relays.test').kind, 'nxdomain');
    assert.deepEqual(calls, ['proxy', 'proxy', 'proxy']);
  });

  it('checks nntp: a read-back lists under open-nntp (127.0.0.5, "Open Usenet (NNTP) server") with the article as evidence', async () => {
    const { wf, store, calls } = setup({ nntp: [NNTP_OPEN] });
    assert.ok(wf.submit('192.0.2.119', 'x', { checks: ['nntp'] }).ok);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'list');
    assert.deepEqual(calls, ['nntp']);
    const l = store.get('192.0.2.119')!;
    assert.equal(l.category, 'open-nntp');
    assert.equal(l.code, '127.0.0.5');
    assert.deepEqual(ordbEvidence(l)!.nntp, NNTP_EVIDENCE);
    const hit = zoneFromStore(store, { apex: 'relays.test', evidenceUrl: null }).lookupName('119.2.0.192.relays.test');
    assert.ok(hit.kind === 'listed');
    assert.equal(hit.code, '127.0.0.5');
    assert.equal(hit.txt, 'Open Usenet (NNTP) server');
  });

  it('checks nntp in safe mode: a 340 leaves the entry pending, flagged, out of the zone', async () => {
    const { wf, store } = setup({ nntp: [NNTP_340] });
    assert.ok(wf.submit('192.0.2.120', 'x', { checks: ['nntp'] }).ok);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'park');
    const l = store.get('192.0.2.120')!;
    assert.equal(l.state, 'pending');
    assert.equal(ordbEvidence(l)!.nntp, undefined);
    assert.equal(zoneFromStore(store, { apex: 'relays.test' }).lookupName('120.2.0.192.relays.test').kind, 'nxdomain');
  });

  it('checks smtp,proxy: both run; the proved proxy lists the host although it has no SMTP service', async () => {
    const { wf, store, calls } = setup({ smtp: [SMTP_DOWN], proxy: [PROXY_OPEN] });
    assert.ok(wf.submit('192.0.2.81', 'x', { checks: ['proxy', 'smtp'] }).ok);
    const [o] = await wf.runDue();
    assert.equal(o!.action, 'list');
    assert.deepEqual(calls, ['smtp', 'proxy']);
    const l = store.get('192.0.2.81')!;
    assert.equal(l.category, 'open-proxy');
    assert.deepEqual(ordbEvidence(l)!.checks?.map((c) => c.check), ['smtp', 'proxy']);
  });

  it('refuses unknown checks (ERR_DNSBL_CHECK); a second submission of a pending address adds its checks', () => {
    const { wf, store, clock } = setup({});
    const bad = wf.submit('192.0.2.82', 'x', { checks: ['gopher'] });
    assert.ok(!bad.ok && bad.code === 'ERR_DNSBL_CHECK');
    assert.equal(store.get('192.0.2.82'), null);
    assert.ok(wf.submit('192.0.2.82', 'x').ok);
    assert.equal(store.get('192.0.2.82')!.checks?.join(), 'smtp');
    store.update('192.0.2.82', { nextRetest: null }); // parked
    clock.advance(HOUR);
    const again = wf.submit('192.0.2.82', 'y', { checks: ['proxy'] });
    assert.ok(again.ok && again.status === 'already-pending');
    assert.deepEqual(store.get('192.0.2.82')!.checks, ['smtp', 'proxy']);
    assert.equal(store.get('192.0.2.82')!.nextRetest, T0 + HOUR, 'due at once, parked or not');
    const same = wf.submit('192.0.2.82', 'z', { checks: ['proxy'] });
    assert.ok(same.ok && same.status === 'already-pending');
    assert.deepEqual(store.history('192.0.2.82').map((h) => h.event), ['submitted', 'updated', 'updated'], 'nothing new asked: no change');
  });

  it('an open-proxy listing can be retested by the administrator; a honeypot listing cannot', async () => {
    const { wf, store } = setup({ proxy: [PROXY_CLOSED] });
    store.add({ network: '192.0.2.83', category: 'open-proxy' });
    store.add({ network: '192.0.2.84', category: 'honeypot' });
    assert.ok(wf.scheduleRetest('192.0.2.83').ok);
    const h = wf.scheduleRetest('192.0.2.84');
    assert.ok(!h.ok && h.code === 'ERR_DNSBL_NOT_TESTABLE');
    const o = await wf.testNow('192.0.2.83');
    assert.ok('action' in o && o.action === 'delist', 'a manual open-proxy listing without checks is retested with the proxy check');
  });
});

describe('store and job queue', () => {
  it('a database from before the checks column opens: the column is added, old rows read as null (their category\'s check)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rg-ordb-migrate-'));
    try {
      const path = join(dir, 'relayguard.db');
      const old = new DatabaseSync(path);
      old.exec(`CREATE TABLE dnsbl_listings (id INTEGER PRIMARY KEY, network TEXT NOT NULL UNIQUE, family INTEGER NOT NULL CHECK (family IN (4, 6)),
        prefix INTEGER NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'listed', 'delisted', 'excluded')), category TEXT NOT NULL,
        code TEXT NOT NULL, reason TEXT, first_seen INTEGER NOT NULL, last_tested INTEGER, next_retest INTEGER, evidence TEXT,
        times_listed INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL)`);
      old.prepare(`INSERT INTO dnsbl_listings (network, family, prefix, state, category, code, first_seen, times_listed, updated_at)
        VALUES ('192.0.2.90', 4, 32, 'listed', 'open-relay', '127.0.0.2', 1, 1, 1)`).run();
      old.close();
      const store = ListingStore.open(path);
      try {
        const l = store.get('192.0.2.90')!;
        assert.equal(l.state, 'listed');
        assert.equal(l.checks, null);
        const p = store.add({ network: '192.0.2.91', state: 'pending', checks: ['smtp', 'proxy'] });
        assert.deepEqual(p.checks, ['smtp', 'proxy']);
        assert.deepEqual(store.update('192.0.2.90', { checks: ['proxy'] }).checks, ['proxy']);
      } finally { store.close(); }
      const again = ListingStore.open(path); // opening twice does not add the column twice
      assert.deepEqual(again.get('192.0.2.91')!.checks, ['smtp', 'proxy']);
      again.close();
    } finally { rmSync(dir, { recursive: true, force: true }); }
  });

  it('enqueueDue takes due open-proxy listings, not honeypot ones', () => {
    const clock = new ManualClock(T0);
    const store = ListingStore.open(':memory:', { clock });
    store.add({ network: '192.0.2.95', category: 'open-proxy', nextRetest: T0 });
    store.add({ network: '192.0.2.96', category: 'honeypot', nextRetest: T0 });
    store.add({ network: '192.0.2.97', state: 'pending', checks: ['proxy'], nextRetest: T0 });
    const jobs = new JobQueue(store, { clock });
    assert.equal(jobs.enqueueDue(), 2);
    assert.deepEqual(jobs.list().map((j) => j.address).sort(), ['192.0.2.95', '192.0.2.97']);
    store.close();
  });
});
