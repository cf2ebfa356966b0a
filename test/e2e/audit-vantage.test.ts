/**
 * The local vantage point against the assembled receive path (what serve runs) on IPv4 and IPv6 loopback: the
 * source addresses it picks stand for strangers (127.0.0.2, ::1 when untrusted); a listener it has no untrusted
 * source for is reported untested (unreachable), never closed; safe mode still reports a relay that accepts a
 * stranger's relay recipients as open.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { LocalVantage, chooseSourceAddress, chooseSourceAddress6, relayCheck, type RelayTarget } from '../../src/audit/index.ts';

const harnesses: Harness[] = [];
after(async () => { await Promise.all(harnesses.map((h) => h.close())); });

async function relay(trustedNetworks: string[]): Promise<Harness> {
  const h = await startRelay({
    trustedNetworks,
    config: {
      listeners: [
        { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'none' },
        { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
        { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, tls: 'implicit' },
        { name: 'mx6', role: 'mx', address: '::1', port: 0, tls: 'none' },
      ],
    },
  });
  harnesses.push(h);
  return h;
}

async function audit(h: Harness) {
  const targets: RelayTarget[] = h.receive.server.listeners.map((l) => ({ listener: l.name, role: l.role, tls: l.tls, address: l.address, port: l.port }));
  const check = relayCheck({
    targets: () => targets,
    vantage: () => new LocalVantage({
      sourceAddress: chooseSourceAddress(h.config), sourceAddress6: chooseSourceAddress6(h.config), probeDomain: null,
      sink: { address: '127.0.0.1', port: 0 }, probeWaitMs: 0, hostName: 'mx.local.test', domain: 'local.test', budgetMs: 60_000,
      timeouts: { connect: 2000, greeting: 5000, command: 5000 },
    }),
  });
  const findings = await check.run({ signal: new AbortController().signal, now: Date.now });
  return Object.fromEntries(findings.map((f) => [String(f.detail?.['listener']), f]));
}

test('IPv4 and IPv6 listeners closed, tested from 127.0.0.2 and ::1', async () => {
  const f = await audit(await relay(['127.0.0.1/32']));
  assert.equal(f['mx']!.check, 'relay.closed', JSON.stringify(f['mx']));
  assert.equal(f['mx']!.detail!['from'], '127.0.0.2');
  assert.equal(f['submission']!.check, 'relay.closed');
  assert.equal(f['submissions']!.check, 'relay.closed');
  assert.equal(f['mx6']!.check, 'relay.closed', JSON.stringify(f['mx6']));
  assert.equal(f['mx6']!.detail!['from'], '::1');
});

test('::1 trusted: the IPv6 listener is reported untested, not closed', async () => {
  const f = await audit(await relay(['127.0.0.1/32', '::1/128']));
  assert.equal(f['mx']!.check, 'relay.closed');
  assert.equal(f['mx6']!.check, 'relay.inconclusive');
  assert.equal(f['mx6']!.severity, 'unreachable');
  assert.match(f['mx6']!.summary, /no untrusted IPv6 source address/);
});

test('::/0 trusted: the IPv6 listener accepts a stranger\'s relay recipients; safe mode reports it open (unproved)', async () => {
  const f = await audit(await relay(['127.0.0.1/32', '::/0']));
  assert.equal(f['mx']!.check, 'relay.closed');
  assert.equal(f['mx6']!.check, 'relay.open', JSON.stringify(f['mx6']));
  assert.equal(f['mx6']!.severity, 'critical');
  assert.equal(f['mx6']!.detail!['mode'], 'safe');
  assert.match(f['mx6']!.summary, /safe mode: set audit\.relay\.probeDomain to prove it/);
});
