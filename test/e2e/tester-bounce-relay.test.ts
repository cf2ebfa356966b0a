/**
 * The bounce-relay class of tricks (B01-B04, field report F1) against a deliberately bounce-relaying server
 * (src/testing/bounce-relay-fixture.ts: it refuses to relay but accepts any local part at its domain and its own
 * address literal, then bounces the message, body included, to the forged sender). Proof mode: OPEN
 * 'bounce-relay' only because the bounce carrying the probe's body arrived at the sink; a headers-only bounce is
 * backscatter, not OPEN; safe mode reports the acceptance pattern as a risk and sends no DATA. IPv4 and IPv6.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startBounceRelayFixture, type BounceRelayFixture } from '../../src/testing/bounce-relay-fixture.ts';
import { ProbeSink } from '../../src/tester/sink.ts';
import { testerMain } from '../../src/cli/tester-commands.ts';
import { freePort } from '../../src/testing/ports.ts';
import type { RunResult } from '../../src/tester/result.ts';
import { OUTSIDE, explainResult, testPort, transport } from './tester-helpers.ts';

const PROBE_DOMAIN = 'probes.test';
let sink: ProbeSink;
const fixtures: BounceRelayFixture[] = [];

before(async () => { sink = await ProbeSink.start({ port: 0, probeDomain: PROBE_DOMAIN }); });
after(async () => {
  await Promise.all(fixtures.map((f) => f.close()));
  await sink.close();
});

async function fixture(options: { headersOnly?: boolean; address?: string; via?: { host: string; port: number } } = {}): Promise<BounceRelayFixture> {
  const f = await startBounceRelayFixture({
    domain: 'bounce.test', bounceVia: options.via ?? { host: '127.0.0.1', port: sink.port },
    ...(options.address ? { address: options.address } : {}), ...(options.headersOnly ? { headersOnly: true } : {}),
  });
  fixtures.push(f);
  return f;
}

const proof = (waitMs = 4000) => ({ testerDomain: PROBE_DOMAIN, proof: { collector: sink, waitMs }, noStartTls: true });

describe('tester vs a bounce-relaying server', () => {
  it('proof mode: OPEN bounce-relay, because the bounce with the probe\'s body reached the sink; relay tricks stay CLOSED', async () => {
    const f = await fixture();
    const r = await testPort(f.port, 'mx', proof());
    assert.equal(r.verdict, 'OPEN', explainResult(r));
    assert.equal(r.reason, 'bounce-relay');
    const plain = transport(r, 'plain');
    assert.ok(plain.control?.accepted, 'the control postmaster@bounce.test was accepted');
    for (const id of ['B01', 'B02', 'B03', 'B04']) {
      const t = plain.tricks.find((x) => x.id === id)!;
      assert.equal(t.verdict, 'OPEN', `${id}: ${t.detail}`);
      assert.equal(t.reason, 'bounce-relay', id);
      assert.ok(t.proof?.bounced && t.proof.bouncePayload, `${id}: ${JSON.stringify(t.proof)}`);
      assert.equal(t.proof.arrived, false, 'a bounce is never the probe itself');
      assert.equal(t.proof.bounceFrom, '127.0.0.1');
      // the probe went to a local recipient, from a tagged sender at the probe domain
      assert.match(t.mailFrom!, new RegExp(`^<${t.proof.tag}@probes\\.test>`));
    }
    assert.match(plain.tricks.find((x) => x.id === 'B02')!.rcptTo[0]!, /^<nosuchuser-[0-9a-f]{6}@\[127\.0\.0\.1\]>$/);
    // the sink really received DSNs with the payload, addressed to the forged senders
    await f.settled();
    const tags = plain.tricks.filter((t) => t.kind === 'bounce').map((t) => t.proof!.tag);
    for (const tag of tags) {
      const arrivals = sink.arrivalsFor(tag);
      assert.ok(arrivals.some((a) => a.bounce && a.payload && a.mailFrom === '' && a.rcptTo.includes(`${tag}@probes.test`)), `${tag}: ${JSON.stringify(arrivals)}`);
    }
    assert.ok(f.bounces.every((b) => b.full && b.result === '250'), JSON.stringify(f.bounces));
    // relaying proper is refused, so no relay trick is OPEN
    assert.ok(plain.tricks.filter((t) => t.kind === 'relay').every((t) => t.verdict === 'CLOSED' || t.verdict === 'N/A'), explainResult(r));
    const finding = r.findings.find((x) => x.id === 'bounce-relay');
    assert.ok(finding && finding.severity === 'error' && !finding.ok, JSON.stringify(r.findings));
    assert.match(finding.remediation ?? '', /smtpd_reject_unlisted_recipient = yes/);
    assert.match(finding.remediation ?? '', /require verify = recipient/);
  });

  it('IPv6: the own literal is [IPv6:::1], and the bounce relay is found the same way', async () => {
    const f = await fixture({ address: '::1' });
    const r = await testPort(f.port, 'mx', { ...proof(), sourceAddress: '::1' }, '::1');
    assert.equal(r.verdict, 'OPEN', explainResult(r));
    const b02 = transport(r, 'plain').tricks.find((x) => x.id === 'B02')!;
    assert.match(b02.rcptTo[0]!, /^<nosuchuser-[0-9a-f]{6}@\[IPv6:::1\]>$/);
    assert.equal(b02.reason, 'bounce-relay', b02.detail);
  });

  it('a bounce with the headers only is backscatter, not a bounce relay: CLOSED, with a backscatter finding', async () => {
    const f = await fixture({ headersOnly: true });
    const r = await testPort(f.port, 'mx', proof(3000));
    assert.notEqual(r.verdict, 'OPEN', explainResult(r));
    const b02 = transport(r, 'plain').tricks.find((x) => x.id === 'B02')!;
    assert.equal(b02.verdict, 'CLOSED', b02.detail);
    assert.ok(b02.proof?.bounced && !b02.proof.bouncePayload, JSON.stringify(b02.proof));
    assert.match(b02.detail, /headers only/);
    assert.ok(r.findings.some((x) => x.id === 'backscatter' && !x.ok), JSON.stringify(r.findings));
  });

  it('a bounce that never reaches the sink proves nothing: not OPEN, the risk is reported', async () => {
    const nowhere = await freePort();
    const f = await fixture({ via: { host: '127.0.0.1', port: nowhere } });
    const r = await testPort(f.port, 'mx', proof(600));
    assert.notEqual(r.verdict, 'OPEN', explainResult(r));
    assert.match(transport(r, 'plain').tricks.find((x) => x.id === 'B01')!.detail, /no bounce came back within/);
    assert.ok(r.findings.some((x) => x.id === 'bounce-relay-risk'), JSON.stringify(r.findings));
  });

  it('safe mode: never OPEN and never DATA; the acceptance pattern is a bounce-relay-risk finding', async () => {
    const f = await fixture();
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(f.accepted.length, 0, 'safe mode sent a message');
    const risk = r.findings.find((x) => x.id === 'bounce-relay-risk');
    assert.ok(risk && risk.severity === 'warning', JSON.stringify(r.findings));
    assert.match(risk.message, /B01, B02, B04/);
  });

  it('relayguard test --prove: exit 1, JSON reason bounce-relay, JUnit failure with the fix', async () => {
    const sinkPort = await freePort();
    const f = await fixture({ via: { host: '127.0.0.1', port: sinkPort } });
    let out = '';
    let err = '';
    const code = await testerMain(
      ['test', '127.0.0.1', '-p', `${f.port}:mx`, '--source-address', OUTSIDE, '--no-starttls', '--timeout', '2', '--tricks', 'V02,B02',
        '--prove', '--probe-domain', PROBE_DOMAIN, '--sink', `127.0.0.1:${sinkPort}`, '--wait', '4', '--json'],
      { out: (s) => { out += s; }, err: (s) => { err += s; } },
    );
    assert.equal(code, 1, err + out);
    const doc = JSON.parse(out) as RunResult;
    assert.equal(doc.verdict, 'OPEN');
    assert.equal(doc.reason, 'bounce-relay');
    assert.equal(doc.targets[0]!.ports[0]!.transports[0]!.tricks.find((t) => t.id === 'B02')!.proof!.bouncePayload, true);
  });
});
