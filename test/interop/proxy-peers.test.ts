/**
 * The open-proxy battery against real proxies from Debian, started here on loopback with their own configs in
 * temp dirs (src/testing/proxy-peers.ts): squid open (`http_access allow all`) and with Debian's default access
 * rules, tinyproxy open and closed, dante's danted open (SOCKS4/5) and with username/password only. Every OPEN
 * is checked against the sink's own record (tag, egress address); every CLOSED names the proxy's refusal.
 * The tester connects from 127.0.0.2 (an "outside" client) unless a case says otherwise.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ProxySink, testProxyTarget, type ProxyTargetResult } from '../../src/tester/proxy/index.ts';
import { DANTED, SQUID, TINYPROXY, startDante, startSquid, startTinyproxy, type ProxyPeer } from '../../src/testing/proxy-peers.ts';
import { requirePeer } from './peers.ts';

const OUTSIDE = '127.0.0.2';
let sink: ProxySink;

before(async () => {
  requirePeer(SQUID, 'squid');
  requirePeer(TINYPROXY, 'tinyproxy');
  requirePeer(DANTED, 'dante-server');
  sink = await ProxySink.start({ listen: [
    { address: '127.0.0.1', port: 0, kind: 'mail' }, { address: '::1', port: 0, kind: 'mail' }, { address: '127.0.0.1', port: 0, kind: 'control' },
  ] });
});
after(async () => { await sink?.close(); });

async function battery(peer: ProxyPeer, sourceAddress = OUTSIDE): Promise<ProxyTargetResult> {
  return testProxyTarget({ input: peer.address, address: peer.address, family: 4 }, {
    ports: [peer.port], sink, testerDomain: 'probe.test', sourceAddress, budgetMs: 30_000, timeouts: { step: 5000 },
  });
}

function verdicts(r: ProxyTargetResult): Record<string, string> {
  return Object.fromEntries(r.ports[0]!.attempts.map((a) => [a.id, `${a.verdict} ${a.reason}`]));
}

/** Every OPEN attempt is in the sink's own record, from the egress address the report gives. */
function assertProved(r: ProxyTargetResult): void {
  for (const a of r.ports[0]!.attempts.filter((x) => x.verdict === 'OPEN')) {
    const seen = sink.arrivalsFor(a.proof!.tag);
    assert.ok(seen.length > 0, `${a.id}: the sink has no record of ${a.proof!.tag}`);
    assert.equal(seen[0]!.peerAddress, a.proof!.egressAddress);
  }
}

async function withPeer<T>(start: () => Promise<ProxyPeer>, fn: (p: ProxyPeer) => Promise<T>): Promise<T> {
  const peer = await start();
  try { return await fn(peer); } catch (err) { (err as Error).message += `\n${peer.log()}`; throw err; } finally { await peer.stop(); }
}

describe('squid', () => {
  it('open (http_access allow all): OPEN, CONNECT to port 25 over IPv4 and IPv6, POST, GET, control, proved by arrival', async () => {
    await withPeer(() => startSquid({ mode: 'open' }), async (peer) => {
      const r = await battery(peer);
      const v = verdicts(r);
      assert.equal(r.verdict, 'OPEN', JSON.stringify(v));
      for (const id of ['P01', 'P02', 'P03', 'P04', 'P05']) assert.equal(v[id], 'OPEN proved', `${id}: ${JSON.stringify(v)}`);
      for (const id of ['S01', 'S03', 'T01']) assert.match(v[id]!, /^N\/A/);
      assert.ok(r.egress.includes('127.0.0.1') && r.egress.includes('::1'), String(r.egress));
      assertProved(r);
    });
  });

  it('Debian default access rules, tester outside: CLOSED refused (403), nothing reaches the sink', async () => {
    await withPeer(() => startSquid({ mode: 'default' }), async (peer) => {
      const r = await battery(peer);
      assert.deepEqual([r.verdict, r.reason], ['CLOSED', 'refused'], JSON.stringify(verdicts(r)));
      assert.match(r.ports[0]!.detail, /403/);
      assert.deepEqual(r.egress, []);
    });
  });

  it('Debian default access rules, tester on localhost: squid trusts localhost, so GET and POST reach the sink (its test port is above 1024, a Safe_port; port 25 would be denied); CONNECT only to 443', async () => {
    await withPeer(() => startSquid({ mode: 'default' }), async (peer) => {
      const r = await battery(peer, '127.0.0.1');
      const v = verdicts(r);
      assert.equal(r.verdict, 'OPEN');
      assert.equal(v.P01, 'CLOSED refused', 'CONNECT only to SSL_ports (443)');
      assert.equal(v.P04, 'OPEN proved');
      assert.equal(v.P05, 'OPEN proved');
      assertProved(r);
    });
  });
});

describe('tinyproxy', () => {
  it('open (Allow 127.0.0.0/8): OPEN by CONNECT, POST and GET, proved', async () => {
    await withPeer(() => startTinyproxy({ mode: 'open' }), async (peer) => {
      const r = await battery(peer);
      const v = verdicts(r);
      assert.equal(r.verdict, 'OPEN');
      for (const id of ['P01', 'P02', 'P03', 'P04', 'P05']) assert.equal(v[id], 'OPEN proved', `${id}: ${JSON.stringify(v)}`);
      assertProved(r);
    });
  });

  it('closed (Allow 127.0.0.1 only, tester 127.0.0.2): CLOSED refused (403 Access denied)', async () => {
    await withPeer(() => startTinyproxy({ mode: 'closed' }), async (peer) => {
      const r = await battery(peer);
      assert.deepEqual([r.verdict, r.reason], ['CLOSED', 'refused'], JSON.stringify(verdicts(r)));
      assert.deepEqual(r.egress, []);
    });
  });
});

describe('dante (danted)', () => {
  it('open (socksmethod none): SOCKS4 and SOCKS5 (IPv4, IPv6, by name, control) OPEN, proved; SOCKS4a refused', async () => {
    await withPeer(() => startDante({ mode: 'open' }), async (peer) => {
      const r = await battery(peer);
      const v = verdicts(r);
      assert.equal(r.verdict, 'OPEN');
      for (const id of ['S01', 'S03', 'S04', 'S05', 'S06']) assert.equal(v[id], 'OPEN proved', `${id}: ${JSON.stringify(v)}`);
      assert.equal(v.S02, 'CLOSED refused', 'dante does not resolve SOCKS4a names');
      for (const id of ['P01', 'P04', 'T01']) assert.match(v[id]!, /^N\/A/);
      assert.deepEqual([...r.ports[0]!.protocols].sort(), ['socks4', 'socks5']);
      assertProved(r);
    });
  });

  it('username/password only (socksmethod username): CLOSED auth-required, SOCKS5 offers method 0x02', async () => {
    await withPeer(() => startDante({ mode: 'username' }), async (peer) => {
      const r = await battery(peer);
      assert.deepEqual([r.verdict, r.reason], ['CLOSED', 'auth-required'], JSON.stringify(verdicts(r)));
      const s03 = r.ports[0]!.attempts.find((a) => a.id === 'S03')!;
      assert.match(s03.reply ?? '', /method 0x02/);
      assert.deepEqual(r.egress, []);
    });
  });
});
