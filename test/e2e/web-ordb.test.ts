/**
 * The ORDB's face against a real `relayguard serve` (ORDB in proof mode with its built-in sink for probes.test,
 * the tester speaking from 127.0.0.2; admin web listener and a separate public listener on loopback):
 *
 *   two toy open relays (test/e2e/tester-helpers.ts: they forward what they accept to the sink, adding a Received
 *   header naming the client they saw) on 127.0.0.5 and 127.0.0.6, the first with a greeting of `<script>` and
 *   `"><img onerror>` form; both are submitted through the admin API, proved open and listed;
 *   - the zone's TXT answer (dig) names the lookup page on the public listener, which answers 200 with the evidence
 *     (trick, Received chain, the address the relay saw, the transcript), the hostile greeting escaped;
 *   - an unlisted address: "not listed", and a delisting request for it starts no test;
 *   - 127.0.0.5 is closed, its delisting request (public form, cookie + field token) retests it: delisted, gone
 *     from DNS; 127.0.0.6 still relays: stays listed with new evidence;
 *   - per-address and per-client limits answer 429 with Retry-After;
 *   - every /api/ordb route (from the OpenAPI document the router generates) refuses an anonymous request (401) and
 *     every write made with a session cookie but no CSRF token (403); the admin pages too.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { freePort } from '../../src/testing/ports.ts';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startToyRelay, type ToyRelay } from './tester-helpers.ts';

const execFileAsync = promisify(execFile);
const TESTER = '127.0.0.2';
const RELAY_A = '127.0.0.5';
const RELAY_B = '127.0.0.6';
const UNLISTED = '127.0.0.9';
const HOSTILE = 'relay<script>alert(1)</script>"><img src=x onerror=alert(2)>';

let serve: ServeProcess;
let adminPort = 0;
let publicPort = 0;
let dnsPort = 0;
let token = '';
let relayA: ToyRelay;
let relayB: ToyRelay;
let openA = true;

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }

function http(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string, localAddress?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, ...(localAddress ? { localAddress } : {}) }, (res) => {
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
const api = (method: string, path: string, body?: unknown): Promise<Answer> =>
  http(adminPort, method, path, { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body === undefined ? undefined : JSON.stringify(body));
const pub = (path: string, localAddress?: string): Promise<Answer> => http(publicPort, 'GET', path, {}, undefined, localAddress);

function cli(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = execFile(NODE, [CLI, ...args, '--config', serve.configFile], (err, out, errText) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, out, err: errText }));
    c.stdin?.end(input);
  });
}

async function dig(name: string, type: 'A' | 'TXT'): Promise<string> {
  const { stdout } = await execFileAsync('dig', ['@127.0.0.1', '-p', String(dnsPort), '+short', '+tries=1', '+time=2', name, type], { timeout: 10_000 });
  return stdout.trim();
}

/** The public delisting form's cookie and token, from the lookup page of a listed address. */
async function formFor(ip: string, localAddress?: string): Promise<{ cookie: string; csrf: string }> {
  const page = await pub(`/dnsbl/lookup?ip=${ip}`, localAddress);
  assert.equal(page.status, 200, page.body);
  const cookie = /(rg_ordb_csrf=[^;]+)/.exec([page.headers['set-cookie']].flat().join('\n'));
  const field = /name="_csrf" value="([^"]+)"/.exec(page.body);
  assert.ok(cookie && field, `the lookup page of ${ip} carries the delisting form`);
  return { cookie: cookie[1]!, csrf: field[1]! };
}

function requestDelisting(ip: string, form: { cookie: string; csrf: string }, localAddress?: string): Promise<Answer> {
  return http(publicPort, 'POST', '/dnsbl/delist', { 'content-type': 'application/x-www-form-urlencoded', cookie: form.cookie },
    new URLSearchParams({ ip, _csrf: form.csrf }).toString(), localAddress);
}

async function waitDone(location: string): Promise<any> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const s = await pub(location.replace('/status?', '/status.json?'));
    assert.equal(s.status, 200, s.body);
    if (s.json.phase === 'done') return s.json;
    if (Date.now() > deadline) throw new Error(`the retest did not finish: ${s.body.slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const testsStarted = (ip: string): number => serve.logs.filter((l) => l['msg'] === 'dnsbl test started' && l['ip'] === ip).length;

before(async () => {
  const sinkPort = await freePort();
  const smtpPort = await freePort();
  adminPort = await freePort();
  publicPort = await freePort();
  relayA = await startToyRelay({ address: RELAY_A, port: smtpPort, hostname: HOSTILE, accept: () => openA, nextHop: { host: '127.0.0.1', port: sinkPort } });
  relayB = await startToyRelay({ address: RELAY_B, port: smtpPort, accept: () => true, nextHop: { host: '127.0.0.1', port: sinkPort } });
  serve = await startServe({
    config: {
      trustedNetworks: ['127.0.0.1/32'],
      dnsbl: {
        zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1,
        probeDomain: 'probes.test', sink: { address: '127.0.0.1', port: sinkPort }, probeWait: '5s',
        testPorts: [smtpPort], sourceAddress: TESTER, allowPrivateTargets: true, testBudget: '90s', schedulerInterval: 0,
      },
      web: {
        enabled: true, port: adminPort, public: { address: '127.0.0.1', port: publicPort },
        ordb: { lookupsPerMinute: 1000, delistingPerClientPerHour: 3, delistingPerAddressPerHour: 1 },
      },
    },
  });
  const dnsLine = serve.logs.find((l) => l['msg'] === 'dnsbl listening');
  assert.ok(dnsLine, 'serve logs where the zone is served');
  dnsPort = Number(dnsLine['port']);
  const add = await cli(['admin', 'add', 'alice', '--password-stdin'], 'correct horse battery\n');
  assert.equal(add.code, 0, add.err);
  const tok = await cli(['admin', 'token', 'add', 'ci', '--admin', 'alice']);
  assert.equal(tok.code, 0, tok.err);
  token = tok.out.trim();
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await Promise.all([relayA?.close(), relayB?.close()]);
});

describe('ORDB web pages against relayguard serve', () => {
  it('two open relays are submitted through the admin API, proved open by the tester and listed', { timeout: 240_000 }, async (t) => {
    for (const ip of [RELAY_A, RELAY_B]) {
      const s = await api('POST', '/api/ordb/submissions', { ip });
      assert.equal(s.status, 200, s.body);
      assert.equal(s.json.status, 'queued');
      const r = await api('POST', '/api/ordb/retest', { ip, wait: true });
      assert.equal(r.status, 200, r.body);
      assert.equal(r.json.listing.state, 'listed', JSON.stringify(r.json.outcome));
      assert.equal(r.json.listing.evidence.proved, true);
      // the evidence (the tester's report with every transcript) stays far below the store's 4 MB limit
      const size = JSON.stringify(r.json.listing.rawEvidence).length;
      t.diagnostic(`evidence of ${ip}: ${size} bytes`);
      assert.ok(size < 1_000_000, `${size} bytes`);
    }
    const l = await api('GET', '/api/ordb/listings?state=listed');
    assert.deepEqual(l.json.listings.map((x: any) => x.network).sort(), [RELAY_A, RELAY_B]);
    assert.ok(relayA.forwarded.length > 0 && relayB.forwarded.length > 0, 'the probes went through the toy relays');
  });

  it('the TXT answer names the lookup page on the public listener, which answers 200 with the evidence, hostile text escaped', async () => {
    const txt = await dig(`5.0.0.127.relays.test`, 'TXT');
    const url = /(http:\/\/[^\s"]+)/.exec(txt)?.[1];
    assert.ok(url, `a URL in the TXT answer: ${txt}`);
    assert.equal(url, `http://127.0.0.1:${publicPort}/dnsbl/lookup?ip=${RELAY_A}`);
    assert.equal(await dig(`5.0.0.127.relays.test`, 'A'), '127.0.0.2');
    const u = new URL(url);
    const page = await http(Number(u.port), 'GET', `${u.pathname}${u.search}`);
    assert.equal(page.status, 200);
    assert.match(page.body, new RegExp(`${RELAY_A.replace(/\./g, '\\.')} is listed</strong> in relays\\.test since \\d{4}-`));
    assert.match(page.body, /Open relay \(category open-relay, answer 127\.0\.0\.2\)/);
    assert.match(page.body, /<h4>The trick that got through<\/h4>/);
    assert.match(page.body, /The relay saw the tester as<\/th><td><code>127\.0\.0\.2<\/code>/);
    assert.match(page.body, /Received chain of the probe/);
    assert.match(page.body, /<pre class="received">from \S+ \(\S+ \[127\.0\.0\.2\]\) by toy\.relay\.test/);
    assert.match(page.body, /<pre class="transcript">/);
    assert.match(page.body, / ms C: MAIL FROM:/);
    // the hostile greeting is in the evidence, as text
    assert.ok(page.body.includes('relay&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(2)&#62;'), 'the greeting shown escaped');
    assert.ok(!page.body.includes('<script>alert') && !page.body.includes('<img src=x'), 'nothing of it is live markup');
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
    const json = await pub(`/dnsbl/lookup.json?ip=${RELAY_A}`);
    assert.equal(json.json.listed, true);
    assert.equal(json.json.listing.category, 'open-relay');
    assert.equal(json.json.evidence.proved, true);
    assert.equal(json.json.evidence.proof.relaySawClient, TESTER);
    assert.ok(json.json.evidence.proof.received.length >= 1);
    assert.equal(json.json.evidence.report.targets[0].address, RELAY_A);
    assert.ok(json.json.evidence.transcript.lines.some((l: any) => l.dir === 'S' && l.line.includes('<script>')), 'the JSON keeps the raw text');
    // the CSS the page links is served on the public listener too
    assert.equal((await pub('/assets/app.css')).status, 200);
  });

  it('an unlisted address: not listed (HTML and JSON); its delisting request is refused and starts no test', async () => {
    const page = await pub(`/dnsbl/lookup?ip=${UNLISTED}`);
    assert.equal(page.status, 200);
    assert.match(page.body, /127\.0\.0\.9 is not listed<\/strong>/);
    assert.ok(!page.body.includes('name="_csrf"'), 'no delisting form');
    const json = await pub(`/dnsbl/lookup.json?ip=${UNLISTED}`);
    assert.deepEqual([json.json.listed, json.json.listing, json.json.evidence], [false, null, null]);
    const form = await formFor(RELAY_B, '127.0.0.4');
    const r = await requestDelisting(UNLISTED, form, '127.0.0.4');
    assert.equal(r.status, 404);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(testsStarted(UNLISTED), 0, 'the public pages never test an address that is not listed');
    const admin = await api('GET', `/api/ordb/entry?network=${UNLISTED}`);
    assert.equal(admin.status, 404, 'not even a pending entry was created');
    const noCsrf = await http(publicPort, 'POST', '/dnsbl/delist', { 'content-type': 'application/x-www-form-urlencoded', cookie: form.cookie }, `ip=${RELAY_B}`);
    assert.equal(noCsrf.status, 403);
  });

  it('the public listener serves no admin route', async () => {
    for (const path of ['/api/ordb/summary', '/ordb', '/api/openapi.json', '/metrics']) {
      assert.equal((await pub(path)).status, 404, path);
    }
  });

  it('relay A is closed; its delisting request retests it: delisted, gone from DNS, the status page says so', { timeout: 180_000 }, async () => {
    openA = false;
    const before = testsStarted(RELAY_A);
    const form = await formFor(RELAY_A);
    const r = await requestDelisting(RELAY_A, form);
    assert.equal(r.status, 303, r.body);
    const location = String(r.headers['location']);
    assert.match(location, /^\/dnsbl\/delist\/status\?ip=127\.0\.0\.5&at=\d+$/);
    const running = await pub(location);
    assert.equal(running.status, 200);
    const status = await waitDone(location);
    assert.equal(status.listed, false);
    assert.equal(status.listing.state, 'delisted');
    assert.equal(status.evidence.verdict, 'CLOSED');
    assert.equal(testsStarted(RELAY_A), before + 1);
    assert.ok(status.history.some((h: any) => h.event === 'delisted'), JSON.stringify(status.history));
    const page = await pub(location);
    assert.match(page.body, /127\.0\.0\.5 is delisted\./);
    assert.equal(page.headers['refresh'], undefined, 'a finished status page stops reloading');
    assert.equal(await dig('5.0.0.127.relays.test', 'A'), '');
    const lookup = await pub(`/dnsbl/lookup?ip=${RELAY_A}`);
    assert.match(lookup.body, /127\.0\.0\.5 is not listed<\/strong> in relays\.test\. It was delisted on/);
    // delisted now: a further request starts nothing
    const again = await requestDelisting(RELAY_A, form);
    assert.equal(again.status, 409);
    assert.equal(testsStarted(RELAY_A), before + 1);
  });

  it('relay B still relays: its delisting request keeps it listed with the new evidence; a second request for it is 429', { timeout: 180_000 }, async () => {
    const old = (await pub(`/dnsbl/lookup.json?ip=${RELAY_B}`)).json.evidence.testedAt;
    const form = await formFor(RELAY_B);
    const r = await requestDelisting(RELAY_B, form);
    assert.equal(r.status, 303, r.body);
    const status = await waitDone(String(r.headers['location']));
    assert.equal(status.listed, true);
    assert.equal(status.listing.state, 'listed');
    assert.equal(status.evidence.verdict, 'OPEN');
    assert.equal(status.evidence.proved, true);
    assert.ok(status.evidence.testedAt > old, `new evidence: ${status.evidence.testedAt} after ${old}`);
    const page = await pub(String(r.headers['location']));
    assert.match(page.body, /127\.0\.0\.6 stays listed\./);
    assert.match(await dig('6.0.0.127.relays.test', 'A'), /^127\.0\.0\.2$/);
    const limited = await requestDelisting(RELAY_B, form);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers['retry-after']) > 60, `Retry-After ${limited.headers['retry-after']}`);
  });

  it('per client: past delistingPerClientPerHour every request from that address is 429 with Retry-After', async () => {
    const form = await formFor(RELAY_B, '127.0.0.7');
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await requestDelisting(UNLISTED, form, '127.0.0.7')).status);
    assert.deepEqual(codes, [404, 404, 404, 429]);
    const last = await requestDelisting(RELAY_B, form, '127.0.0.7');
    assert.equal(last.status, 429);
    assert.ok(Number(last.headers['retry-after']) > 60);
  });

  it('every ORDB admin route refuses an anonymous request (401) and a cookie write without the CSRF token (403)', async () => {
    const doc = await api('GET', '/api/openapi.json');
    assert.equal(doc.status, 200);
    const routes = Object.entries(doc.json.paths as Record<string, Record<string, unknown>>)
      .filter(([p]) => p.startsWith('/api/ordb'))
      .flatMap(([p, ops]) => Object.entries(ops).map(([m, op]) => ({
        method: m.toUpperCase(), path: p,
        // the query parameters the document says each route takes, filled with a listed address
        query: ((op as { parameters?: { name: string; in: string }[] }).parameters ?? []).filter((x) => x.in === 'query' && (x.name === 'ip' || x.name === 'network')).map((x) => `${x.name}=${RELAY_B}`).join('&'),
      })));
    assert.deepEqual(routes.map((r) => `${r.method} ${r.path}`).sort(), [
      'GET /api/ordb/entry', 'GET /api/ordb/listings', 'GET /api/ordb/lookup', 'GET /api/ordb/summary',
      'POST /api/ordb/delist', 'POST /api/ordb/exclude', 'POST /api/ordb/retest', 'POST /api/ordb/submissions', 'POST /api/ordb/unexclude',
    ]);
    assert.ok(doc.json.paths['/api/ordb/submissions'].post.requestBody.content['application/json'].schema.properties.ip, 'the zod schema is in the document');
    assert.ok(doc.json.paths['/api/ordb/listings'].get.parameters.some((p: any) => p.name === 'state'));
    // a session cookie from the login form
    const login = await http(adminPort, 'GET', '/login');
    const lc = /rg_login_csrf=([^;]+)/.exec([login.headers['set-cookie']].flat().join('\n'))![1]!;
    const r = await http(adminPort, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${lc}` },
      new URLSearchParams({ name: 'alice', password: 'correct horse battery', _csrf: lc }).toString());
    assert.equal(r.status, 303);
    const session = /(rg_session=[^;]+)/.exec([r.headers['set-cookie']].flat().join('\n'))![1]!;
    const body = JSON.stringify({ ip: RELAY_B, network: RELAY_B });
    for (const route of routes) {
      const url = route.query ? `${route.path}?${route.query}` : route.path;
      const anon = await http(adminPort, route.method, url, route.method === 'GET' ? {} : { 'content-type': 'application/json' }, route.method === 'GET' ? undefined : body);
      assert.equal(anon.status, 401, `${route.method} ${route.path} anonymous: ${anon.body}`);
      const withCookie = await http(adminPort, route.method, url, { cookie: session, ...(route.method === 'GET' ? {} : { 'content-type': 'application/json' }) }, route.method === 'GET' ? undefined : body);
      if (route.method === 'GET') assert.equal(withCookie.status, 200, `${route.method} ${route.path} with the session: ${withCookie.body}`);
      else assert.equal(withCookie.status, 403, `${route.method} ${route.path} without CSRF: ${withCookie.body}`);
    }
    assert.equal((await api('GET', `/api/ordb/entry?network=${RELAY_B}`)).json.state, 'listed', 'nothing was changed by the refused writes');
    // the admin pages
    assert.equal((await http(adminPort, 'GET', '/ordb')).status, 303, 'anonymous: to the login');
    const pageAnon = await http(adminPort, 'POST', '/ordb/action', { 'content-type': 'application/x-www-form-urlencoded' }, `action=delist&network=${RELAY_B}`);
    assert.equal(pageAnon.status, 401);
    const pageNoCsrf = await http(adminPort, 'POST', '/ordb/action', { 'content-type': 'application/x-www-form-urlencoded', cookie: session }, `action=delist&network=${RELAY_B}`);
    assert.equal(pageNoCsrf.status, 403);
    const ordbPage = await http(adminPort, 'GET', '/ordb', { cookie: session });
    assert.equal(ordbPage.status, 200);
    assert.match(ordbPage.body, /<a href="\/ordb">ORDB<\/a>/);
    assert.match(ordbPage.body, /href="\/ordb\/entry\?network=127\.0\.0\.6"/);
    const entry = await http(adminPort, 'GET', `/ordb/entry?network=${RELAY_A}`, { cookie: session });
    assert.equal(entry.status, 200);
    assert.ok(!entry.body.includes('<script>alert'), 'the admin page escapes the evidence too');
    const csrf = /name="_csrf" value="([^"]+)"/.exec(entry.body)![1]!;
    const exclude = await http(adminPort, 'POST', '/ordb/action', { 'content-type': 'application/x-www-form-urlencoded', cookie: session },
      new URLSearchParams({ action: 'exclude', network: RELAY_A, reason: 'lab', _csrf: csrf }).toString());
    assert.equal(exclude.status, 303);
    assert.equal((await api('GET', `/api/ordb/entry?network=${RELAY_A}`)).json.state, 'excluded');
    const audit = await api('GET', '/api/audit?limit=50');
    assert.ok(audit.json.entries.some((e: any) => e.action === 'ordb.exclude' && e.target === RELAY_A && e.actor === 'alice'));
    assert.ok(audit.json.entries.some((e: any) => e.action === 'ordb.submit' && e.target === RELAY_B && e.actor === 'alice (token ci)'));
  });
});

