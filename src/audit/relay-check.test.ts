import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../config/load.ts';
import { chooseSourceAddress, connectAddress, relayCheck, relayFinding, targetsOf, type RelayTarget, type Vantage, type VantageOutcome } from './relay-check.ts';

const cfg = (input: Record<string, unknown>) => parseConfig({ hostname: 'mx.example.org', ...input }, { baseDir: '/srv' });
const target: RelayTarget = { listener: 'mx', role: 'mx', tls: 'starttls', address: '127.0.0.1', port: 2525 };

test('source address: a loopback address outside the deliberately trusted (loopback or private) networks', () => {
  assert.equal(chooseSourceAddress(cfg({ trustedNetworks: ['127.0.0.1/32'] })), '127.0.0.2');
  assert.equal(chooseSourceAddress(cfg({ trustedNetworks: ['127.0.0.0/31', '127.0.0.2/32', '::1/128'] })), '127.0.0.3');
  // the hazard itself (public space) does not make 127.0.0.2 trusted on purpose: it stands for any stranger
  assert.equal(chooseSourceAddress(cfg({ trustedNetworks: ['127.0.0.1/32', '0.0.0.0/0'] })), '127.0.0.2');
  // relay rules that grant relay count as trust too
  assert.equal(chooseSourceAddress(cfg({ trustedNetworks: ['127.0.0.1/32'], relayRules: [{ match: { network: '127.0.0.0/30' }, action: 'relay' }, { action: 'reject' }] })), '127.0.0.4');
  // the default trusts all of 127/8: no local stranger
  assert.throws(() => chooseSourceAddress(cfg({})), (e: Error & { code?: string }) => e.code === 'ERR_AUDIT_NO_VANTAGE' && /every loopback address/.test(e.message));
  // a configured source is used, unless trusted
  assert.equal(chooseSourceAddress(cfg({}), '192.0.2.10'), '192.0.2.10');
  assert.throws(() => chooseSourceAddress(cfg({}), '127.0.0.9'), /inside trustedNetworks/);
});

test('connect address: a wildcard listener is reached over loopback of the source family', () => {
  assert.equal(connectAddress('0.0.0.0', '127.0.0.2'), '127.0.0.1');
  assert.equal(connectAddress('::', '127.0.0.2'), '127.0.0.1');
  assert.equal(connectAddress('::', '::1'), '::1');
  assert.equal(connectAddress('192.0.2.5', '127.0.0.2'), '192.0.2.5');
});

const outcome = (o: Partial<VantageOutcome>): VantageOutcome => ({
  target, verdict: 'CLOSED', reason: 'refused', detail: 'RCPT 554', acceptedTricks: [], mode: 'prove', from: '127.0.0.2', ...o,
});

test('findings: OPEN and accepted-not-proved are critical, CLOSED ok, anything else unreachable', () => {
  assert.deepEqual(
    [
      outcome({ verdict: 'OPEN', reason: 'proved', acceptedTricks: ['V02/plain'] }),
      outcome({ verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', mode: 'safe', acceptedTricks: ['V02/plain'] }),
      outcome({}),
      outcome({ verdict: 'INCONCLUSIVE', reason: 'unreachable', detail: 'ECONNREFUSED' }),
      outcome({ verdict: 'INCONCLUSIVE', reason: 'greylisted' }),
    ].map((o) => { const f = relayFinding(o); return [f.check, f.severity, f.subject]; }),
    [
      ['relay.open', 'critical', 'listener mx 127.0.0.1:2525'],
      ['relay.open', 'critical', 'listener mx 127.0.0.1:2525'],
      ['relay.closed', 'ok', 'listener mx 127.0.0.1:2525'],
      ['relay.inconclusive', 'unreachable', 'listener mx 127.0.0.1:2525'],
      ['relay.inconclusive', 'unreachable', 'listener mx 127.0.0.1:2525'],
    ],
  );
  assert.match(relayFinding(outcome({ verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', mode: 'safe' })).summary, /set audit\.relay\.probeDomain/);
});

test('relay check: every listener goes to the vantage point; PROXY listeners are not tested directly; a vantage that cannot exist is unreachable', async () => {
  const seen: RelayTarget[][] = [];
  const vantage: Vantage = { name: 'fake', async test(ts) { seen.push([...ts]); return ts.map((t) => outcome({ target: t })); } };
  const targets = targetsOf([
    { name: 'mx', role: 'mx', tls: 'starttls', address: '127.0.0.1', port: 2525 },
    { name: 'lb', role: 'mx', tls: 'starttls', address: '127.0.0.1', port: 2526, proxyProtocol: true },
  ]);
  const check = relayCheck({ targets: () => targets, vantage: () => vantage });
  const findings = await check.run({ signal: new AbortController().signal, now: Date.now });
  assert.deepEqual(seen.map((s) => s.map((t) => t.listener)), [['mx']]);
  assert.deepEqual(findings.map((f) => [f.check, f.severity]), [['relay.closed', 'ok'], ['relay.behind-proxy', 'warning']]);
  const none = relayCheck({ targets: () => targets.slice(0, 1), vantage: () => chooseSourceAddress(cfg({})) as never });
  const f = await none.run({ signal: new AbortController().signal, now: Date.now });
  assert.deepEqual(f.map((x) => [x.check, x.severity]), [['relay.vantage', 'unreachable']]);
  assert.match(f[0]!.summary, /cannot test the relay from outside: every loopback address/);
});

test('relay check with several vantage points: each tests every listener, the subjects name the vantage point; one that cannot exist does not stop the others', async () => {
  const fake = (name: string, verdict: 'OPEN' | 'CLOSED'): Vantage => ({
    name, async test(ts) { return ts.map((t) => outcome({ target: t, verdict, reason: verdict === 'OPEN' ? 'proved' : 'refused', from: name })); },
  });
  const check = relayCheck({
    targets: () => [target],
    vantage: () => [() => fake('local 127.0.0.2', 'CLOSED'), () => fake('remote https://mx2.example.net:8025', 'OPEN'), () => chooseSourceAddress(cfg({})) as never],
  });
  const f = await check.run({ signal: new AbortController().signal, now: Date.now });
  assert.deepEqual(f.map((x) => [x.check, x.severity, x.subject]), [
    ['relay.closed', 'ok', 'listener mx 127.0.0.1:2525 via local 127.0.0.2'],
    ['relay.open', 'critical', 'listener mx 127.0.0.1:2525 via remote https://mx2.example.net:8025'],
    ['relay.vantage', 'unreachable', 'local vantage point'],
  ]);
  // one vantage point in a list: the subjects stay as with a single one (the trend keeps matching)
  const one = relayCheck({ targets: () => [target], vantage: () => [() => fake('x', 'CLOSED')] });
  assert.equal((await one.run({ signal: new AbortController().signal, now: Date.now }))[0]!.subject, 'listener mx 127.0.0.1:2525');
});
