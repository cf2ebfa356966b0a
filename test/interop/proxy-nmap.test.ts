/**
 * nmap's http-open-proxy and socks-open-proxy side by side with relayguard's open-proxy battery, on the same
 * loopback servers in the same run: real squid, tinyproxy and danted, and scripted fakes that lie. The test
 * pins where the two agree and where they differ (and the report's table explains why): nmap decides from the
 * proxy's reply (a 200 to CONNECT, a SOCKS "granted", a page pattern), relayguard only from arrival at its sink.
 * nmap's targets are redirected to loopback (src/testing/nmap-proxy.ts): nothing leaves the machine.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ProxySink, testProxyTarget, type ProxyTargetResult } from '../../src/tester/proxy/index.ts';
import { startFakeProxy, type FakeProxyBehavior } from '../../src/testing/fake-proxy.ts';
import { NMAP, nmapSays, runNmapProxyScripts, startNmapRig, NMAP_DNS, type NmapProxyResult, type NmapRig } from '../../src/testing/nmap-proxy.ts';
import { DANTED, SQUID, TINYPROXY, startDante, startSquid, startTinyproxy } from '../../src/testing/proxy-peers.ts';
import { requirePeer } from './peers.ts';

const OUTSIDE = '127.0.0.2';
let sink: ProxySink;
let rig: NmapRig;

before(async () => {
  for (const [p, pkg] of [[NMAP, 'nmap'], [SQUID, 'squid'], [TINYPROXY, 'tinyproxy'], [DANTED, 'dante-server']] as const) requirePeer(p, pkg);
  rig = await startNmapRig();
  sink = await ProxySink.start({ listen: [
    { address: '127.0.0.1', port: 0, kind: 'mail' }, { address: '::1', port: 0, kind: 'mail' }, { address: '127.0.0.1', port: 0, kind: 'control' },
  ] });
});
after(async () => { await sink?.close(); await rig?.close(); });

interface Target { address: string; port: number; stop(): Promise<void> }
interface Case {
  readonly name: string;
  readonly start: () => Promise<Target>;
  readonly source: string;
  /** What nmap says (nmapSays), and relayguard's verdict and reason. */
  readonly nmap: RegExp;
  readonly relayguard: readonly [string, string];
  readonly why: string;
  /** nmap's target page by IP (for a proxy that would resolve names with the system resolver). */
  readonly url?: 'ip';
}

const fake = (behavior: FakeProxyBehavior) => async (): Promise<Target> => {
  const f = await startFakeProxy({ behavior });
  return { address: f.address, port: f.port, stop: () => f.close() };
};

/**
 * What nmap says of a real open proxy varies from run to run: its GET probe fetches a page through the proxy within
 * nmap's own timeout (squid resolving the name through the fake DNS), so under load it reports CONNECTION alone,
 * GET alone, or nothing. Its answer is recorded in the table; the verdict asserted is relayguard's.
 */
const NMAP_SAYS_OPEN_OR_TIMED_OUT = /^(http: Methods supported:( (GET|HEAD|CONNECTION))+|nothing \(not open\))$/;

const CASES: Case[] = [
  { name: 'squid, http_access allow all', start: () => startSquid({ mode: 'open', dnsServer: NMAP_DNS }), source: OUTSIDE,
    // nmap's GET probe needs squid to fetch its page (name via the fake DNS) within nmap's own timeout: under load it
    // sometimes reports CONNECTION alone (seen once in a full run); either way nmap says open, as relayguard does.
    nmap: NMAP_SAYS_OPEN_OR_TIMED_OUT, relayguard: ['OPEN', 'proved'],
    why: 'agree; relayguard also proves CONNECT to a mail port over IPv4 and IPv6 and POST with an SMTP body, nmap tests CONNECT to port 80 only' },
  { name: 'squid, Debian default rules, client outside', start: () => startSquid({ mode: 'default', dnsServer: NMAP_DNS }), source: OUTSIDE,
    nmap: /^nothing \(not open\)$/, relayguard: ['CLOSED', 'refused'],
    why: 'agree; relayguard says why (403 for every method)' },
  { name: 'squid, Debian default rules, client on localhost', start: () => startSquid({ mode: 'default', dnsServer: NMAP_DNS }), source: '127.0.0.1',
    nmap: NMAP_SAYS_OPEN_OR_TIMED_OUT, relayguard: ['OPEN', 'proved'],
    why: 'agree: default squid trusts localhost ("http_access allow localhost"); CONNECT only to 443' },
  { name: 'tinyproxy, Allow 127.0.0.0/8', start: () => startTinyproxy({ mode: 'open' }), source: OUTSIDE, url: 'ip',
    nmap: NMAP_SAYS_OPEN_OR_TIMED_OUT, relayguard: ['OPEN', 'proved'],
    why: 'agree' },
  { name: 'tinyproxy, Allow 127.0.0.1 only', start: () => startTinyproxy({ mode: 'closed' }), source: OUTSIDE, url: 'ip',
    nmap: /^nothing \(not open\)$/, relayguard: ['CLOSED', 'refused'],
    why: 'agree' },
  { name: 'danted, socksmethod none', start: () => startDante({ mode: 'open' }), source: OUTSIDE,
    nmap: /^socks: open \(socks4, socks5\)$/, relayguard: ['OPEN', 'proved'],
    why: 'agree; relayguard adds SOCKS5 to IPv6 and by name, and finds SOCKS4a refused' },
  { name: 'danted, socksmethod username', start: () => startDante({ mode: 'username' }), source: OUTSIDE,
    nmap: /^nothing \(not open\)$/, relayguard: ['CLOSED', 'auth-required'],
    why: 'agree on "not open"; nmap offers only "no auth" and prints nothing, relayguard offers both and reports that username/password is required' },
  { name: 'fake: CONNECT 200, then silence', start: fake('claims-200'), source: OUTSIDE,
    nmap: /^http: Methods supported: CONNECTION$/, relayguard: ['INCONCLUSIVE', 'lies'],
    why: 'DIFFER: nmap trusts the 200 to CONNECT; nothing ever reached relayguard\'s sink' },
  { name: 'fake: CONNECT 200 into its own fake SMTP server', start: fake('connect-back'), source: OUTSIDE,
    nmap: /^http: Methods supported: CONNECTION$/, relayguard: ['INCONCLUSIVE', 'lies'],
    why: 'DIFFER: nmap trusts the 200; relayguard sees a banner that is not its sink\'s (no nonce) and never talks to it' },
  { name: 'fake: SOCKS "granted", then silence', start: fake('socks-claims'), source: OUTSIDE,
    nmap: /^nothing \(not open\)$/, relayguard: ['INCONCLUSIVE', 'lies'],
    why: 'DIFFER: nmap needs its page pattern through the tunnel and stays silent; relayguard reports the false grant as a lie' },
  { name: 'fake: Wingate telnet gateway', start: fake('wingate'), source: OUTSIDE,
    nmap: /^nothing \(not open\)$/, relayguard: ['OPEN', 'proved'],
    why: 'DIFFER: nmap has no telnet-gateway probe' },
  { name: 'fake: 407 Proxy Authentication Required', start: fake('http-auth'), source: OUTSIDE,
    nmap: /^nothing \(not open\)$/, relayguard: ['CLOSED', 'auth-required'],
    why: 'agree on "not open"; relayguard names the reason' },
];

interface Row { name: string; nmap: NmapProxyResult; rg: ProxyTargetResult; rgMs: number; why: string }
const rows = new Map<string, Row>();

async function runCase(c: Case): Promise<void> {
  const target = await c.start();
  try {
    const nmap = await runNmapProxyScripts(target.address, target.port, { ...(c.source === '127.0.0.1' ? {} : { sourceAddress: c.source }), ...(c.url ? { url: c.url } : {}) });
    const t0 = Date.now();
    const rg = await testProxyTarget({ input: target.address, address: target.address, family: 4 }, {
      ports: [target.port], sink, testerDomain: 'probe.test', sourceAddress: c.source, budgetMs: 30_000, timeouts: { step: 8000 },
    });
    rows.set(c.name, { name: c.name, nmap, rg, rgMs: Date.now() - t0, why: c.why });
  } finally { await target.stop(); }
}

describe('nmap http-open-proxy / socks-open-proxy vs relayguard, same servers, same run', () => {
  before(async () => {
    // nmap waits out its socket timeouts (about 20 s on an HTTP port): run the cases three at a time (more made
    // nmap's own reads time out on a loaded 2-core machine)
    let next = 0;
    const errors: unknown[] = [];
    await Promise.all([0, 1, 2].map(async () => {
      while (next < CASES.length) {
        const c = CASES[next++]!;
        await runCase(c).catch((e: unknown) => { errors.push(e); });
      }
    }));
    if (errors.length > 0) throw errors[0];
  });

  for (const c of CASES) {
    it(c.name, () => {
      const r = rows.get(c.name)!;
      assert.match(nmapSays(r.nmap), c.nmap, `nmap said: ${nmapSays(r.nmap)}\n${r.nmap.stdout}`);
      assert.deepEqual([r.rg.verdict, r.rg.reason], c.relayguard, r.rg.detail);
    });
  }

  it('prints the comparison table', (t) => {
    const lines = ['| server (tester from) | nmap http-open-proxy + socks-open-proxy | relayguard | why |', '|---|---|---|---|'];
    for (const c of CASES) {
      const r = rows.get(c.name)!;
      lines.push(`| ${r.name} (${c.source}) | ${nmapSays(r.nmap)} | ${r.rg.verdict} ${r.rg.reason} | ${r.why} |`);
    }
    for (const l of lines) t.diagnostic(l);
    assert.equal(rows.size, CASES.length);
  });
});
