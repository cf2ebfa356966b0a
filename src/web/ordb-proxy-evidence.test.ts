/**
 * The evidence of an open-proxy listing on the ORDB pages: evidenceView() reads the workflow's proxy evidence (and
 * survives junk), evidenceSection() shows the method, the tested and the egress address, the proxy's reply and the
 * sink's line, escaped.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Listing } from '../dnsbl/index.ts';
import { evidenceView } from './ordb-evidence.ts';
import { evidenceSection } from './ordb-pages.ts';

const HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>';
const base: Listing = {
  id: 1, network: '192.0.2.80', family: 4, prefix: 32, state: 'listed', category: 'open-proxy', code: '127.0.0.3', reason: null,
  firstSeen: 0, lastTested: 0, nextRetest: null, timesListed: 1, updatedAt: 0, checks: ['proxy'], evidence: null,
};
const evidence = (proxy: unknown, extra: Record<string, unknown> = {}): Listing => ({
  ...base,
  evidence: {
    schema: 'relayguard-ordb-evidence/1', submittedBy: 'x', submittedAt: null, attempts: 1, testedAt: '2026-01-15T12:00:00.000Z', mode: 'safe',
    verdict: 'OPEN', reason: 'proved', detail: 'd', proved: true, flagged: null, report: { schema: 'relayguard-tester/2', targets: [], proxies: [] },
    check: 'proxy', proxy, ...extra,
  },
});

describe('open-proxy evidence on the ORDB pages', () => {
  it('shows the method, the tested and the egress address, the reply and the sink line', () => {
    const v = evidenceView(evidence({
      testedAddress: '192.0.2.80', egressAddress: '192.0.2.81', port: 3128, method: 'socks5', attempt: 'S03', title: 'SOCKS5 CONNECT by IPv4',
      destination: '198.51.100.7:25', reply: 'SOCKS5 granted (0x00)', sinkLine: 'EHLO rg-0a1b2c3d-1.example.net', openAttempts: ['3128 S03 socks5', '3128 S01 socks4'],
    }, { checks: [{ check: 'smtp', verdict: 'INCONCLUSIVE', reason: 'unreachable', proved: false, detail: null }, { check: 'proxy', verdict: 'OPEN', reason: 'proved', proved: true, detail: null }] }))!;
    assert.equal(v.check, 'proxy');
    assert.equal(v.proxy?.method, 'SOCKS5');
    assert.deepEqual(v.checks.map((c) => c.check), ['smtp', 'proxy']);
    const out = evidenceSection(v).toString();
    assert.match(out, /Proof: the proxy connected us to our sink/);
    assert.match(out, /<td>SOCKS5 \(<code>S03<\/code>: SOCKS5 CONNECT by IPv4\)<\/td>/);
    assert.match(out, /<code>192\.0\.2\.80<\/code> port 3128/);
    assert.match(out, /<code>192\.0\.2\.81<\/code> \(not the tested address/);
    assert.match(out, /<code>SOCKS5 granted \(0x00\)<\/code>/);
    assert.match(out, /<code>198\.51\.100\.7:25<\/code>/);
    assert.match(out, /smtp INCONCLUSIVE \(unreachable\), proxy OPEN \(proved\)/);
    assert.match(out, /<code>3128 S01 socks4<\/code>/);
  });

  it('escapes what the proxy said and what arrived', () => {
    const v = evidenceView(evidence({
      testedAddress: '192.0.2.80', egressAddress: HOSTILE, port: 8080, method: HOSTILE, title: HOSTILE, destination: HOSTILE, reply: `HTTP/1.1 200 ${HOSTILE}`, sinkLine: HOSTILE, openAttempts: [HOSTILE],
    }))!;
    const out = evidenceSection(v).toString();
    assert.ok(!out.includes('<script>'), 'no raw script tag');
    assert.ok(!out.includes('<img'), 'no raw img tag');
    assert.ok(out.includes('<code>HTTP/1.1 200 &#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(2)&#62;</code>'), 'the reply, escaped');
  });

  it('junk proxy evidence gives no proxy part, never a throw; relay evidence has none either', () => {
    assert.equal(evidenceView(evidence('nonsense'))!.proxy, null);
    const odd = evidenceView(evidence({ method: 7, port: 'x', openAttempts: 'y' }))!;
    assert.equal(odd.proxy?.method, '?');
    assert.equal(odd.proxy?.port, null);
    assert.deepEqual(odd.proxy?.openAttempts, []);
    assert.doesNotThrow(() => evidenceSection(odd).toString());
    const relay = evidenceView({ ...base, category: 'open-relay', evidence: { schema: 'relayguard-ordb-evidence/1', proved: true, report: null } })!;
    assert.equal(relay.check, 'smtp');
    assert.equal(relay.proxy, null);
    assert.doesNotMatch(evidenceSection(relay).toString(), /Proof: the proxy/);
  });
});
