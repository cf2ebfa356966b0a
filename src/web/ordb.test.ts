/**
 * The ORDB web module in-process (startWeb with an in-memory admin store, a real ListingStore and OrdbWorkflow, a
 * scripted tester): the admin API (lookup, listings with filters and paging, entry, submit, retest with wait,
 * delist, exclude/unexclude, every write audited, 400 naming the field, 404, 503 without an ORDB), the public
 * lookup (HTML and JSON, escaping of a hostile transcript), the delisting request (CSRF, only listed addresses,
 * per-client and per-address limits with 429 + Retry-After) and its status page, and the evidence view model.
 */
import { queueCounts } from '../queue/index.ts';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MemoryLogger } from '../core/log.ts';
import { CATEGORIES, ListingStore, OrdbWorkflow, type HostTestResult } from '../dnsbl/index.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminResult } from '../queue/index.ts';
import { SqliteAdminStore } from '../store/sqlite-admin.ts';
import { RelayMetrics } from './metrics.ts';
import { ORDB_CSRF_COOKIE, ordbWebModule, type OrdbAccess } from './ordb.ts';
import { evidenceView } from './ordb-evidence.ts';
import { reverse } from './ordb-pages.ts';
import { startWeb, type RunningWeb } from './server.ts';
import { clientKey, WindowLimiter } from './window-limiter.ts';

const HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>';
const none: AdminResult = { changed: [], unchanged: [], missing: [] };

let web: RunningWeb;
let adminStore: SqliteAdminStore;
let store: ListingStore;
let workflow: OrdbWorkflow;
let available = true;
let token = '';
const script: HostTestResult[] = [];
const tested: string[] = [];

/** A tester report as the real tester writes it, with a hostile banner and transcript. */
function openReport(ip: string): unknown {
  return {
    schema: 'relayguard-tester/1', mode: 'prove', verdict: 'OPEN',
    targets: [{
      address: ip, verdict: 'OPEN',
      ports: [{
        port: 25, role: 'mx', verdict: 'OPEN',
        transports: [{
          transport: 'plain', verdict: 'OPEN',
          session: { banner: { code: 220, enhanced: null, text: `${HOSTILE} ESMTP` } },
          tricks: [
            { id: 'V01', title: 'plain relay', verdict: 'CLOSED', connection: 0, mailFrom: '<a@b>', rcptTo: ['<x@probe.test>'], replies: { mail: null, rcpt: [], data: null, dot: null }, proof: null },
            {
              id: 'V02', title: `percent hack ${HOSTILE}`, verdict: 'OPEN', connection: 1, mailFrom: '<relaytest@probe.test>', rcptTo: ['<x%probe.test@target>'],
              replies: { mail: { code: 250, enhanced: '2.1.0', text: 'Ok' }, rcpt: [{ code: 250, enhanced: '2.1.5', text: HOSTILE }], data: { code: 354, enhanced: null, text: 'go' }, dot: { code: 250, enhanced: '2.0.0', text: 'queued' } },
              proof: { arrived: true, received: [`Received: from tester (${HOSTILE} [127.0.0.2]) by relay`], relaySawClient: '127.0.0.2', sentFrom: '127.0.0.2', deliveredBy: ip, latencyMs: 42 },
            },
          ],
          transcripts: [
            { connection: 0, localAddress: '127.0.0.2', startedAt: '2026-12-03T10:00:00.000Z', lines: [{ t: 0, dir: 'S', line: '220 first' }] },
            { connection: 1, localAddress: '127.0.0.2', startedAt: '2026-12-03T10:00:01.000Z', lines: [{ t: 0, dir: 'S', line: `220 ${HOSTILE}` }, { t: 3, dir: 'C', line: `EHLO ${HOSTILE}` }] },
          ],
        }],
      }],
    }],
  };
}
const OPEN = (ip: string): HostTestResult => ({ verdict: 'OPEN', proved: true, reason: 'proved', detail: 'V02: the probe arrived', mode: 'prove', report: openReport(ip) });
const CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554 5.7.1 Relay access denied', mode: 'prove', report: { schema: 'relayguard-tester/1', targets: [] } };

function http(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: web.admin.port, method, path, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(b); } catch { /* HTML */ }
        resolve({ status: res.statusCode!, headers: res.headers, body: b, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
const api = (method: string, path: string, body?: unknown) => http(method, path, { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body === undefined ? undefined : JSON.stringify(body));

before(async () => {
  adminStore = new SqliteAdminStore(':memory:');
  const admins = new AdminAccounts(adminStore, { scrypt: { N: 1024, r: 8, p: 1 } });
  await admins.add('alice', 'long enough');
  token = await admins.createToken('alice', 'ci');
  store = ListingStore.open(':memory:');
  workflow = new OrdbWorkflow({
    store, prove: true, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 100 },
    test: async (ip) => {
      tested.push(ip);
      const r = script.shift();
      if (!r) throw new Error('no scripted result');
      return r;
    },
  });
  const access: OrdbAccess = {
    zone: 'relays.test', ttlSeconds: 60, retestIntervalMs: 7 * 86_400_000, proofMode: true, configExcluded: ['198.51.100.0/24'],
    store, workflow, rebuild: () => {},
  };
  store.exclude('198.51.100.0/24', { detail: 'config' });
  web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics: new RelayMetrics('n1', { processMetrics: false }), admins,
    queue: { list: async () => [], get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none, counts: async () => queueCounts([], 0) },
    checks: {}, admin: { address: '127.0.0.1', port: 0 }, public: null, tls: null,
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 50, loginFailureWindowMs: 60_000,
    modules: [ordbWebModule({
      ordb: () => (available ? access : null), categories: CATEGORIES, evidenceUrl: 'http://127.0.0.1/dnsbl/lookup?ip=$',
      limits: { lookupsPerMinute: 30, delistingPerClientPerHour: 4, delistingPerAddressPerHour: 1 },
    })],
  });
});

after(async () => {
  await web?.close();
  await workflow?.stop();
  store?.close();
  await adminStore?.close();
});

async function list(ip: string): Promise<void> {
  const s = await api('POST', '/api/ordb/submissions', { ip });
  assert.equal(s.status, 200, s.body);
  assert.equal(s.json.status, 'queued');
  script.push(OPEN(ip));
  const r = await api('POST', '/api/ordb/retest', { ip, wait: true });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.listing.state, 'listed', r.body);
}

/** The public form: GET the lookup page for the cookie and the token. */
async function formToken(ip: string): Promise<{ cookie: string; csrf: string }> {
  const page = await http('GET', `/dnsbl/lookup?ip=${ip}`);
  assert.equal(page.status, 200);
  const cookie = /rg_ordb_csrf=([^;]+)/.exec([page.headers['set-cookie']].flat().join('\n'));
  const field = /name="_csrf" value="([^"]+)"/.exec(page.body);
  assert.ok(cookie && field, 'the lookup page of a listed address has the delisting form');
  return { cookie: `${ORDB_CSRF_COOKIE}=${cookie[1]}`, csrf: field[1]! };
}

function delist(ip: string, t: { cookie: string; csrf: string }) {
  return http('POST', '/dnsbl/delist', { 'content-type': 'application/x-www-form-urlencoded', cookie: t.cookie }, new URLSearchParams({ ip, _csrf: t.csrf }).toString());
}

describe('admin API', () => {
  it('submit + retest (wait) lists a proved relay; lookup, entry and listings show it with evidence and history', async () => {
    await list('127.0.0.10');
    const l = await api('GET', '/api/ordb/lookup?ip=127.0.0.10');
    assert.equal(l.status, 200);
    assert.equal(l.json.listed, true);
    assert.equal(l.json.effective.network, '127.0.0.10');
    assert.equal(l.json.effective.evidence.trick.id, 'V02');
    assert.equal(l.json.effective.rawEvidence.report.schema, 'relayguard-tester/1');
    assert.deepEqual(l.json.effective.history.map((h: any) => h.event), ['submitted', 'updated', 'listed']);
    const e = await api('GET', '/api/ordb/entry?network=127.0.0.10');
    assert.equal(e.status, 200);
    assert.equal(e.json.rawEvidence.schema, 'relayguard-ordb-evidence/1');
    assert.equal(e.json.evidence.proof.relaySawClient, '127.0.0.2');
    const all = await api('GET', '/api/ordb/listings?state=listed');
    assert.deepEqual(all.json.listings.map((x: any) => x.network), ['127.0.0.10']);
    assert.equal(all.json.listings[0].evidence.trick.id, 'V02');
    assert.equal(all.json.listings[0].rawEvidence, undefined, 'the list stays compact');
    assert.equal(all.json.listings[0].history.length, 3);
    const none = await api('GET', `/api/ordb/listings?since=${Date.now() + 60_000}`);
    assert.deepEqual(none.json.listings, []);
    const ex = await api('GET', '/api/ordb/listings?state=excluded&category=open-relay&limit=1');
    assert.equal(ex.json.listings.length, 1);
    assert.equal(ex.json.more, false);
  });

  it('bad input is 400 naming the field; an unknown address is 404', async () => {
    const bad = await api('GET', '/api/ordb/lookup?ip=not-an-ip');
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /"ip"/);
    const badState = await api('GET', '/api/ordb/listings?state=bogus');
    assert.equal(badState.status, 400);
    assert.match(badState.json.error.message, /"state"/);
    const badBody = await api('POST', '/api/ordb/exclude', { network: '10.0.0.1/8' });
    assert.equal(badBody.status, 400, badBody.body);
    assert.match(badBody.json.error.message, /"network"/);
    assert.equal((await api('GET', '/api/ordb/entry?network=192.0.2.99')).status, 404);
    assert.equal((await api('POST', '/api/ordb/delist', { network: '192.0.2.99' })).status, 404);
    assert.equal((await api('POST', '/api/ordb/retest', { ip: '192.0.2.99' })).status, 404);
    const lookup = await api('GET', '/api/ordb/lookup?ip=192.0.2.99');
    assert.equal(lookup.status, 200);
    assert.equal(lookup.json.listed, false);
  });

  it('delist, exclude and unexclude change the store and are audited; a configured exclusion is not lifted', async () => {
    await list('127.0.0.11');
    const d = await api('POST', '/api/ordb/delist', { network: '127.0.0.11', reason: 'owner fixed it' });
    assert.equal(d.status, 200, d.body);
    assert.equal(d.json.state, 'delisted');
    const x = await api('POST', '/api/ordb/exclude', { network: '127.0.0.11', reason: 'ours' });
    assert.equal(x.json.state, 'excluded');
    const refused = await api('POST', '/api/ordb/submissions', { ip: '127.0.0.11' });
    assert.equal(refused.status, 409);
    assert.equal(refused.json.error.code, 'ERR_DNSBL_EXCLUDED');
    const u = await api('POST', '/api/ordb/unexclude', { network: '127.0.0.11' });
    assert.equal(u.json.state, 'delisted');
    const cfg = await api('POST', '/api/ordb/unexclude', { network: '198.51.100.0/24' });
    assert.equal(cfg.status, 409);
    assert.equal(cfg.json.error.code, 'ERR_ORDB_CONFIG_EXCLUDED');
    const audit = await api('GET', '/api/audit?limit=20');
    const actions = audit.json.entries.map((e: any) => `${e.action} ${e.target}`);
    for (const a of ['ordb.delist 127.0.0.11', 'ordb.exclude 127.0.0.11', 'ordb.unexclude 127.0.0.11', 'ordb.submit 127.0.0.11', 'ordb.retest 127.0.0.10']) {
      assert.ok(actions.includes(a), `${a} in ${actions.join(', ')}`);
    }
    assert.ok(audit.json.entries.every((e: any) => e.actor === 'alice (token ci)'));
  });

  it('503 ERR_ORDB_UNAVAILABLE when the ORDB does not run; the public page says so too', async () => {
    available = false;
    try {
      const r = await api('GET', '/api/ordb/summary');
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'ERR_ORDB_UNAVAILABLE');
      assert.equal((await http('GET', '/dnsbl/lookup?ip=127.0.0.10')).status, 503);
    } finally {
      available = true;
    }
  });
});

describe('public pages', () => {
  it('lookup of a listed address: since, category, evidence; hostile banner, reply, Received and transcript render as text', async () => {
    const r = await http('GET', '/dnsbl/lookup?ip=127.0.0.10');
    assert.equal(r.status, 200);
    assert.match(r.body, /127\.0\.0\.10 is listed<\/strong> in relays\.test/);
    assert.match(r.body, /V02/);
    assert.match(r.body, /The relay saw the tester as<\/th><td><code>127\.0\.0\.2/);
    assert.ok(!r.body.includes('<script>alert'), 'no live script');
    assert.ok(!r.body.includes('<img src=x'), 'no live img');
    assert.ok(r.body.includes('&#34;&#62;&#60;img src=x onerror=alert(1)&#62;&#60;script&#62;alert(2)&#60;/script&#62;'), 'the hostile text is shown escaped');
    assert.match(String(r.headers['content-security-policy']), /script-src 'self'/);
    const j = await http('GET', '/dnsbl/lookup.json?ip=127.0.0.10');
    assert.equal(j.json.listed, true);
    assert.equal(j.json.query, '10.0.0.127.relays.test');
    assert.equal(j.json.evidence.proof.relaySawClient, '127.0.0.2');
    assert.equal(j.json.evidence.report.schema, 'relayguard-tester/1');
    const n = await http('GET', '/dnsbl/lookup.json?ip=192.0.2.50');
    assert.equal(n.json.listed, false);
    assert.equal(n.json.listing, null);
    assert.equal((await http('GET', '/dnsbl/lookup.json?ip=%3Cscript%3E')).status, 400);
    const policy = await http('GET', '/dnsbl/policy');
    assert.equal(policy.status, 200);
    for (const c of Object.values(CATEGORIES)) assert.ok(policy.body.includes(c.code));
    assert.match(policy.body, /TTL of 60 seconds/);
  });

  it('a delisting request needs the form token, never tests an unlisted address, and a closed host ends delisted', async () => {
    const t = await formToken('127.0.0.10');
    const noToken = await http('POST', '/dnsbl/delist', { 'content-type': 'application/x-www-form-urlencoded' }, 'ip=127.0.0.10');
    assert.equal(noToken.status, 403);
    const before = tested.length;
    const unlisted = await delist('192.0.2.77', t);
    assert.equal(unlisted.status, 404);
    const delisted = await delist('127.0.0.11', t); // in the store, delisted
    assert.equal(delisted.status, 409);
    assert.equal(tested.length, before, 'no test started for an address that is not listed');
    script.push(CLOSED);
    const r = await delist('127.0.0.10', t);
    assert.equal(r.status, 303, r.body);
    const loc = String(r.headers['location']);
    assert.match(loc, /^\/dnsbl\/delist\/status\?ip=127\.0\.0\.10&at=\d+$/);
    let s;
    for (let i = 0; i < 50; i++) {
      s = await http('GET', loc.replace('/status?', '/status.json?'));
      if (s.json.phase === 'done') break;
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(s!.json.phase, 'done');
    assert.equal(s!.json.listed, false);
    assert.equal(s!.json.listing.state, 'delisted');
    const page = await http('GET', loc);
    assert.match(page.body, /127\.0\.0\.10 is delisted/);
    assert.equal(page.headers['refresh'], undefined);
    // listed once per address per hour: a second request for the same (re-listed) address is 429
    script.push(OPEN('127.0.0.10'));
    await api('POST', '/api/ordb/submissions', { ip: '127.0.0.10', testNow: true });
    for (let i = 0; i < 50 && store.get('127.0.0.10')!.state !== 'listed'; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(store.get('127.0.0.10')!.state, 'listed');
    const again = await delist('127.0.0.10', t);
    assert.equal(again.status, 429);
    assert.ok(Number(again.headers['retry-after']) > 0);
  });

  it('an address inside a listed network: listed as part of it, no delisting form, and a request for it starts no test', async () => {
    store.add({ network: '192.0.2.0/24', reason: 'operator listing' });
    const r = await http('GET', '/dnsbl/lookup?ip=192.0.2.5');
    assert.match(r.body, /192\.0\.2\.5 is listed<\/strong> in relays\.test \(as part of 192\.0\.2\.0\/24\)/);
    assert.ok(!r.body.includes('name="_csrf"'));
    assert.match(r.body, /write to the operator/);
    const t = await formToken('127.0.0.10');
    const before = tested.length;
    const refused = await delist('192.0.2.5', t);
    assert.equal(refused.status, 409);
    assert.equal(tested.length, before);
    const v6 = await http('GET', '/dnsbl/lookup.json?ip=2001:DB8::1');
    assert.equal(v6.json.address, '2001:db8::1');
    assert.equal(v6.json.query, `${reverse('2001:db8::1')}.relays.test`);
    assert.equal(reverse('2001:db8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2');
  });

  it('per-client limit: past web.ordb.delistingPerClientPerHour every request is 429 with Retry-After', async () => {
    const t = await formToken('127.0.0.10');
    let last;
    for (let i = 0; i < 5; i++) last = await delist('192.0.2.1', t);
    assert.equal(last!.status, 429);
    assert.ok(Number(last!.headers['retry-after']) > 3000);
  });
});

describe('pieces', () => {
  it('evidenceView picks the proved trick and its connection\'s transcript; junk evidence gives null or empty parts', () => {
    const base = { id: 1, network: '192.0.2.1', family: 4, prefix: 32, state: 'listed', category: 'open-relay', code: '127.0.0.2', reason: null, firstSeen: 0, lastTested: 0, nextRetest: null, timesListed: 1, updatedAt: 0, checks: null } as const;
    const v = evidenceView({ ...base, evidence: { schema: 'relayguard-ordb-evidence/1', testedAt: 'x', proved: true, report: openReport('192.0.2.1') } })!;
    assert.equal(v.trick!.id, 'V02');
    assert.equal(v.transcript!.lines[0]!.line, `220 ${HOSTILE}`);
    assert.deepEqual(v.trick!.replies, ['MAIL 250 2.1.0 Ok', `RCPT 250 2.1.5 ${HOSTILE}`, 'DATA 354 go', 'end of data 250 2.0.0 queued']);
    assert.equal(evidenceView({ ...base, evidence: { any: 'thing' } }), null);
    const junk = evidenceView({ ...base, evidence: { schema: 'relayguard-ordb-evidence/1', report: { targets: [{ ports: 'x' }, null] } } })!;
    assert.equal(junk.trick, null);
    assert.equal(junk.transcript, null);
  });

  it('WindowLimiter and clientKey', () => {
    const l = new WindowLimiter({ limit: 2, windowMs: 1000 });
    assert.ok(l.take('a', 0).ok && l.take('a', 10).ok);
    const no = l.take('a', 500);
    assert.ok(!no.ok && no.retryAfterMs === 500);
    assert.ok(l.take('a', 1001).ok);
    assert.equal(clientKey('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  });
});
