/**
 * Open proxies in the ORDB (issue 13) against a real `relayguard serve` (dnsbl enabled, safe mode: no probe domain;
 * the proxy sink on loopback, the default):
 *   - a loopback fake open HTTP proxy (src/testing/fake-proxy.ts) on 127.0.0.7 whose outgoing connections leave from
 *     127.0.0.8 is submitted with `relayguard dnsbl submit --check proxy` and tested through the admin API: listed
 *     under open-proxy, proved by arrival at the sink from safe mode;
 *   - dig shows 127.0.0.3 and the "Open proxy" TXT with the evidence link; the public lookup page and its JSON show
 *     the method, the tested and the egress address and the proxy's reply;
 *   - a fake open SOCKS proxy on 127.0.0.10 is submitted through the API with checks ['smtp', 'proxy'] and testNow:
 *     no SMTP answers there, the proxy is proved: listed under open-proxy;
 *   - the HTTP proxy is closed (the same port now answers 403) and a retest delists it: gone from DNS;
 *   - an unknown check is refused (API 400 ERR_DNSBL_CHECK / CLI usage error);
 *   - the default (loopback) proxy sink is never offered to a remote proxy: the test stops before any connection.
 * Loopback only: the fakes listen on and forward to 127/8 only.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort } from '../../src/testing/ports.ts';
import { startFakeProxy, type FakeProxy } from '../../src/testing/fake-proxy.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';
import { createTestHost } from '../../src/cli/ordb-service.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';

const execFileAsync = promisify(execFile);
const HTTP_PROXY = '127.0.0.7';
const EGRESS = '127.0.0.8';
const SOCKS_PROXY = '127.0.0.10';

let web: WebServe;
let dnsPort = 0;
let proxyPort = 0;
let httpProxy: FakeProxy | null = null;
let socksProxy: FakeProxy | null = null;

async function dig(name: string, type: 'A' | 'TXT'): Promise<string> {
  const { stdout } = await execFileAsync('dig', ['@127.0.0.1', '-p', String(dnsPort), '+short', '+tries=1', '+time=2', name, type], { timeout: 10_000 });
  return stdout.trim();
}

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  proxyPort = await freePort();
  httpProxy = await startFakeProxy({ behavior: 'http-open', address: HTTP_PROXY, port: proxyPort, egressAddress: EGRESS });
  socksProxy = await startFakeProxy({ behavior: 'socks-open', address: SOCKS_PROXY, port: proxyPort });
  web = await startWebServe({
    token: true,
    config: {
      dnsbl: {
        enabled: true, zone: 'proxies.test', listen: { address: '127.0.0.1', port: 0 }, ttl: 1,
        allowPrivateTargets: true, schedulerInterval: 0, testBudget: '30s', proxyPorts: [proxyPort],
      },
      web: { public: { address: '127.0.0.1', port: 0 } },
    },
  });
  const dnsLine = web.serve.logs.find((l) => l['msg'] === 'dnsbl listening');
  assert.ok(dnsLine, 'serve logs where the zone is served');
  dnsPort = Number(dnsLine['port']);
});

after(async () => {
  await web?.stop();
  await Promise.all([httpProxy?.close(), socksProxy?.close()]);
});

describe('open proxies in the ORDB against relayguard serve', () => {
  it('dnsbl submit --check proxy; the test proves the proxy by arrival at the sink (safe mode) and lists it under open-proxy', { timeout: 120_000 }, async () => {
    const sub = await web.cli(['dnsbl', 'submit', HTTP_PROXY, '--check', 'proxy', '--json']);
    assert.equal(sub.code, 0, sub.err);
    assert.equal(JSON.parse(sub.out).status, 'queued');
    const r = await web.api('/api/ordb/retest', { method: 'POST', body: { ip: HTTP_PROXY, wait: true } });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.outcome.action, 'list', r.body);
    const l = r.json.listing;
    assert.equal(l.state, 'listed');
    assert.equal(l.category, 'open-proxy');
    assert.equal(l.code, '127.0.0.3');
    assert.equal(l.evidence.check, 'proxy');
    assert.equal(l.evidence.mode, 'safe');
    assert.equal(l.evidence.proved, true);
    assert.equal(l.evidence.proxy.testedAddress, HTTP_PROXY);
    assert.equal(l.evidence.proxy.egressAddress, EGRESS, 'the sink saw the connection come from the proxy\'s egress address');
    assert.equal(l.evidence.proxy.port, proxyPort);
    assert.match(l.evidence.proxy.reply ?? '', /^HTTP\/1\.[01] 200|^stopped reading/);
    assert.match(l.evidence.proxy.sinkLine, /rg-[0-9a-f]{8}-/);
    // the tester never connected the proxy to anything but the sink; every proved attempt is named
    assert.match(l.evidence.proxy.attempt, /^P0\d$/, 'an HTTP attempt proved it');
    assert.ok(l.evidence.proxy.openAttempts.every((a: string) => new RegExp(`^${proxyPort} P0\\d http-`).test(a)), l.evidence.proxy.openAttempts.join());
    const started = web.serve.logs.find((x) => x['msg'] === 'dnsbl test started' && x['ip'] === HTTP_PROXY);
    assert.deepEqual(started?.['checks'], ['proxy']);
  });

  it('DNS answers 127.0.0.3 with the "Open proxy" TXT linking the evidence', async () => {
    const name = `7.0.0.127.proxies.test`;
    assert.equal(await until(async () => (await dig(name, 'A')) || undefined, 'the listing in DNS', 15_000), '127.0.0.3');
    const txt = await dig(name, 'TXT');
    assert.match(txt, /^"Open proxy, see http:\/\/[^"]*\/dnsbl\/lookup\?ip=127\.0\.0\.7"$/);
  });

  it('the public lookup page and its JSON show the method, the tested and the egress address and the proxy\'s reply', async () => {
    assert.ok(web.publicBase);
    const json = await (await fetch(`${web.publicBase}/dnsbl/lookup.json?ip=${HTTP_PROXY}`)).json() as any;
    const ev = json.listing?.evidence ?? json.effective?.evidence ?? json.evidence;
    assert.ok(ev, JSON.stringify(json).slice(0, 800));
    assert.equal(ev.proxy.egressAddress, EGRESS);
    const page = await fetch(`${web.publicBase}/dnsbl/lookup?ip=${HTTP_PROXY}`);
    assert.equal(page.status, 200);
    const body = await page.text();
    assert.match(body, /Proof: the proxy connected us to our sink/);
    assert.match(body, /open proxy \(the proxy is asked to connect to our sink\)/);
    assert.ok(body.includes(ev.proxy.method), `the method ${ev.proxy.method} is shown`);
    assert.ok(body.includes(`<code>${HTTP_PROXY}</code> port ${proxyPort}`), 'the tested address and port');
    assert.ok(body.includes(`<code>${EGRESS}</code> (not the tested address`), 'the egress address, flagged as different');
    const reply = (ev.proxy.reply as string).replace(/&/g, '&#38;').replace(/</g, '&#60;').replace(/>/g, '&#62;').replace(/"/g, '&#34;').replace(/'/g, '&#39;');
    assert.ok(body.includes(`<code>${reply}</code>`), `the proxy's reply line ${ev.proxy.reply}`);
  });

  it('API submissions with checks [smtp, proxy] and testNow: no SMTP there, the SOCKS proxy is proved and listed', { timeout: 120_000 }, async () => {
    const bad = await web.api('/api/ordb/submissions', { method: 'POST', body: { ip: SOCKS_PROXY, checks: ['gopher'] } });
    assert.equal(bad.status, 400, bad.body);
    const s = await web.api('/api/ordb/submissions', { method: 'POST', body: { ip: SOCKS_PROXY, checks: ['smtp', 'proxy'], testNow: true } });
    assert.equal(s.status, 200, s.body);
    assert.equal(s.json.status, 'queued');
    const entry = await until(async () => {
      const e = await web.api(`/api/ordb/entry?network=${SOCKS_PROXY}`);
      return e.json?.state === 'listed' ? e.json : undefined;
    }, 'the SOCKS proxy listed', 90_000);
    assert.equal(entry.category, 'open-proxy');
    assert.deepEqual(entry.evidence.checks.map((c: any) => [c.check, c.verdict]), [['smtp', 'INCONCLUSIVE'], ['proxy', 'OPEN']]);
    assert.match(entry.evidence.proxy.method, /SOCKS/);
    assert.equal(await dig('10.0.0.127.proxies.test', 'A'), '127.0.0.3');
  });

  it('the HTTP proxy is closed (its port now answers 403): a retest delists it, and DNS forgets it', { timeout: 120_000 }, async () => {
    await httpProxy!.close();
    httpProxy = await startFakeProxy({ behavior: 'http-forbidden', address: HTTP_PROXY, port: proxyPort });
    const r = await web.api('/api/ordb/retest', { method: 'POST', body: { ip: HTTP_PROXY, wait: true } });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.outcome.action, 'delist', r.body);
    assert.equal(r.json.listing.state, 'delisted');
    assert.equal(r.json.listing.evidence.verdict, 'CLOSED');
    await until(async () => ((await dig('7.0.0.127.proxies.test', 'A')) === '' ? true : undefined), 'the delisting in DNS', 15_000);
    const page = await (await fetch(`${web.publicBase}/dnsbl/lookup?ip=${HTTP_PROXY}`)).text();
    assert.doesNotMatch(page, /Proof: the proxy connected us/, 'the closed proxy\'s page no longer claims a proof');
  });

  it('a loopback sink address is never given to a remote proxy: INCONCLUSIVE no-probe-address, nothing sent', async () => {
    const host = await createTestHost({
      probeDomain: null, sink: { address: '127.0.0.1', port: 0 }, probeWaitMs: 1000, testPorts: [], sourceAddress: null, testBudgetMs: 10_000,
      proxyPorts: [proxyPort],
    }, NULL_LOGGER);
    try {
      const r = await host.test('192.0.2.80', { prove: false, signal: new AbortController().signal, check: 'proxy' });
      assert.equal(r.verdict, 'INCONCLUSIVE');
      assert.equal(r.reason, 'no-probe-address');
      assert.match(r.detail ?? '', /dnsbl\.proxyProbeAddress/);
      assert.equal(r.report, null, 'no run was started');
    } finally { await host.close(); }
  });

  it('the CLI refuses an unknown check before storing anything', async () => {
    const r = await web.cli(['dnsbl', 'submit', '127.0.0.11', '--check', 'gopher']);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--check takes smtp, proxy, nntp/);
    const e = await web.api('/api/ordb/entry?network=127.0.0.11');
    assert.equal(e.status, 404);
  });
});
