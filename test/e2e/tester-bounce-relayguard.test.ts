/**
 * The tester's bounce-relay tricks against relayguard itself (issue 8: "against the fixed relayguard: CLOSED").
 * The relay is the assembled receive path (startRelay: what `serve` runs) with local domain local.test, trusting
 * only 127.0.0.1; the tester speaks from 127.0.0.2. Unknown local users must get 550 5.1.1 at RCPT (field report
 * H4), the own address literal must be refused or local only (F1), so in safe mode there is no bounce-relay risk
 * and in proof mode nothing for the probe domain (or any other non-local domain) is ever queued: CLOSED.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { ProbeSink } from '../../src/tester/sink.ts';
import { explainResult, testPort, transport } from './tester-helpers.ts';

const PROBE_DOMAIN = 'probes.test';
let relay: Harness;
let sink: ProbeSink;

before(async () => {
  sink = await ProbeSink.start({ port: 0, probeDomain: PROBE_DOMAIN });
  relay = await startRelay({ localDomains: ['local.test'], trustedNetworks: ['127.0.0.1/32'] });
});
after(async () => {
  await relay?.close();
  await sink?.close();
});

/** Every queued recipient is local: at local.test, the unqualified postmaster, or this host's own literal. */
function assertNothingRemoteQueued(): void {
  for (const m of relay.queue.list()) {
    for (const rcpt of m.recipients) {
      assert.match(rcpt, /^[^@]+(@local\.test|@\[127\.0\.0\.1\]|@\[IPv6:::1\])?$/i, `queued for a non-local address: ${rcpt} (from <${m.sender}>)`);
    }
    assert.ok(!m.recipients.some((r) => r.toLowerCase().endsWith(`@${PROBE_DOMAIN}`)), `queued for the probe domain: ${m.recipients.join(', ')}`);
  }
}

describe('tester bounce-relay tricks vs relayguard', () => {
  it('safe mode: CLOSED; unknown local users refused 550 5.1.1 at RCPT; no bounce-relay risk', async () => {
    const r = await testPort(relay.ports.mx, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    const plain = transport(r, 'plain');
    assert.ok(plain.control?.accepted, `the control was accepted: ${JSON.stringify(plain.control)}`);
    const b01 = plain.tricks.find((t) => t.id === 'B01')!;
    assert.equal(b01.replies.rcpt[0]?.code, 550, b01.detail);
    assert.equal(b01.replies.rcpt[0]?.enhanced, '5.1.1', b01.detail);
    for (const id of ['B02', 'B04']) {
      const t = plain.tricks.find((x) => x.id === id)!;
      if (t.verdict === 'N/A') continue;
      assert.ok((t.replies.rcpt[0]?.code ?? 0) >= 500, `${id}: an unknown user at the own literal is refused: ${t.detail}`);
    }
    assert.ok(!r.findings.some((f) => f.id === 'bounce-relay-risk' || f.id === 'bounce-relay'), JSON.stringify(r.findings));
    assertNothingRemoteQueued();
  });

  it('proof mode: CLOSED, nothing bounced to the sink, nothing for a non-local domain queued', async () => {
    const r = await testPort(relay.ports.mx, 'mx', { noStartTls: true, testerDomain: PROBE_DOMAIN, proof: { collector: sink, waitMs: 1500 } });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    const plain = transport(r, 'plain');
    for (const t of plain.tricks.filter((x) => x.kind === 'bounce')) {
      assert.notEqual(t.verdict, 'OPEN', `${t.id}: ${t.detail}`);
      assert.ok(!t.proof?.bounced, `${t.id}: a bounce came back`);
    }
    const tags = plain.tricks.map((t) => t.proof?.tag).filter((t): t is string => t !== undefined);
    for (const tag of tags) assert.deepEqual(sink.arrivalsFor(tag), [], `${tag} reached the sink`);
    assertNothingRemoteQueued();
  });
});
