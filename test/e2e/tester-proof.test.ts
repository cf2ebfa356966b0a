/**
 * Proof mode end to end on loopback: the tester sends one tagged probe per accepted relay trick to the probe
 * domain, and the built-in sink receives what the relay forwards. OPEN only when a probe arrives; the report
 * carries the Received chain and the client address the relay thought it saw.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { ProbeSink } from '../../src/tester/sink.ts';
import { OUTSIDE, explainResult, startToyRelay, testPort, transport, tricksWith, type ToyRelay } from './tester-helpers.ts';

const PROBE_DOMAIN = 'probes.test';
let sink: ProbeSink;
const closers: (() => Promise<void>)[] = [];

before(async () => { sink = await ProbeSink.start({ port: 0, probeDomain: PROBE_DOMAIN }); });
after(async () => {
  await Promise.all(closers.map((c) => c()));
  await sink.close();
});

async function toy(accept: (rcpt: string) => boolean, claimClient?: string): Promise<ToyRelay> {
  const t = await startToyRelay({ accept, nextHop: { host: '127.0.0.1', port: sink.port }, ...(claimClient ? { claimClient } : {}) });
  closers.push(() => t.close());
  return t;
}

async function fake(options: Parameters<typeof startFakeMta>[0]): Promise<FakeMta> {
  const f = await startFakeMta(options);
  closers.push(() => f.close());
  return f;
}

const proof = (waitMs = 3000) => ({ testerDomain: PROBE_DOMAIN, proof: { collector: sink, waitMs }, noStartTls: true });

describe('tester proof mode', () => {
  it('a relay open only to the percent hack: those tricks are OPEN (proved), with the Received chain and the client address it saw', async () => {
    const relay = await toy((rcpt) => rcpt.includes('%'));
    // the toy relay forwards before it answers the end of DATA, so the probes are there at once; the wait only
    // runs out for B03 (postmaster at its literal: kept, never bounced)
    const r = await testPort(relay.port, 'mx', proof(1000));
    assert.equal(r.verdict, 'OPEN', explainResult(r));
    assert.equal(r.reason, 'proved');
    const plain = transport(r, 'plain');
    const open = tricksWith(plain, 'OPEN');
    assert.ok(open.includes('V08') && open.includes('V09'), open.join());
    for (const id of open) {
      const t = plain.tricks.find((x) => x.id === id)!;
      assert.ok(t.proof?.arrived, id);
      assert.equal(t.proof.relaySawClient, OUTSIDE, `${id}: the relay saw the tester's real address`);
      assert.equal(t.proof.sentFrom, OUTSIDE);
      assert.match(t.proof.received[0] ?? '', /^from example\.net|^from probes\.test/);
      assert.ok(t.proof.received.some((x) => x.includes(`[${OUTSIDE}]`)));
    }
    assert.ok(tricksWith(plain, 'CLOSED').includes('V02'), 'plain relay refused');
    assert.ok(!r.findings.some((f) => f.id === 'relay-saw-other-address'));
    // one probe per accepted relay trick, each with its own tag
    assert.equal(relay.forwarded.length, open.length);
    assert.equal(new Set(relay.forwarded.map((m) => m.rcptTo[0])).size, open.length);
    for (const m of relay.forwarded) assert.match(m.rcptTo[0]!, new RegExp(`^rg-[0-9a-f]{8}-[0-9a-z]+@${PROBE_DOMAIN.replace('.', '\\.')}$`));
  });

  it('flags a relay that recorded another client address than the tester used (proxy/NAT trust trouble)', async () => {
    const relay = await toy(() => true, '10.9.8.7');
    const r = await testPort(relay.port, 'mx', { ...proof(1000), tricks: undefined });
    assert.equal(r.verdict, 'OPEN', explainResult(r));
    const f = r.findings.find((x) => x.id === 'relay-saw-other-address');
    assert.ok(f, JSON.stringify(r.findings));
    assert.match(f.message, /10\.9\.8\.7.*127\.0\.0\.2/);
  });

  it('an accept-everything server that relays nothing: never OPEN; probes go only to accepted relay tricks', async () => {
    const f = await fake({});
    const started = Date.now();
    const r = await testPort(f.port, 'mx', proof(400));
    assert.notEqual(r.verdict, 'OPEN', explainResult(r));
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assert.equal(r.reason, 'accepts-all-recipients');
    assert.match(transport(r, 'plain').tricks.find((t) => t.id === 'V02')!.detail, /did not arrive within/);
    assert.ok(Date.now() - started < 3000);
    // DATA went only where a tag can come back: a relay trick's recipient is a tag at the probe domain; a bounce
    // trick's recipient is local to the target and its sender is a tag at the probe domain
    const dataSessions = f.sessions.filter((s) => s.messages.length > 0);
    assert.ok(dataSessions.length > 0);
    const tagAtProbe = /rg-[0-9a-f]{8}-[0-9a-z]+@probes\.test>/;
    let bounceProbes = 0;
    for (const s of f.sessions) {
      let lastRcpt = '';
      let lastMail = '';
      for (const c of s.commands) {
        if (c.startsWith('MAIL FROM:')) lastMail = c;
        if (c.startsWith('RCPT TO:')) lastRcpt = c;
        if (c === 'DATA' || c.startsWith('BDAT')) {
          if (/rg-[0-9a-f]{8}-[0-9a-z]+/.test(lastRcpt)) continue; // a relay trick: the tag is the (rewritten) recipient
          assert.match(lastMail, tagAtProbe, `DATA after ${lastMail} ${lastRcpt}`);
          assert.match(lastRcpt, /@fake\.test>|@\[127\.0\.0\.1\]>/, `a bounce trick's recipient is local: ${lastRcpt}`);
          bounceProbes++;
        }
      }
    }
    assert.ok(bounceProbes >= 3, 'the bounce tricks sent their probes (B01-B03; B04 needs DSN)');
    assert.ok(!r.findings.some((x) => x.id === 'bounce-relay'), 'nothing bounced');
    assert.ok(r.findings.some((x) => x.id === 'bounce-relay-risk'), 'accepting unknown local users is a risk');
  });

  it('a server that accepts RCPT but refuses the message after DATA: CLOSED refused', async () => {
    const f = await fake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data: { end: { reply: '554 5.7.1 Message refused\r\n' } } } } });
    const r = await testPort(f.port, 'mx', { ...proof(300), tricks: undefined });
    const v02 = transport(r, 'plain').tricks.find((t) => t.id === 'V02')!;
    assert.equal(v02.verdict, 'CLOSED', explainResult(r));
    assert.equal(v02.reason, 'refused');
    assert.match(v02.detail, /end of DATA 554/);
  });
});
