/**
 * The tester against real servers on loopback, from an "outside" address (127.0.0.2) that the servers do not
 * trust:
 *   - `relayguard serve` (trusts 127.0.0.1 only): CLOSED on mx, AUTH required on submission and submissions;
 *   - a default Postfix (smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
 *     defer_unauth_destination; the tester outside mynetworks): its 4xx must read CLOSED, never OPEN;
 *   - a Postfix that is an open relay for 127.0.0.2/32 and delivers everything to the tester's sink: OPEN, proved,
 *     with the Received chain and the client address Postfix saw;
 *   - aiosmtpd's Sink handler, which accepts every RCPT and relays nothing: safe mode INCONCLUSIVE "accepts all
 *     recipients"; proof mode not OPEN.
 * Missing peers fail with a clear message (never skip).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { SmtpClient } from '../../src/smtp/client.ts';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { hasBinary, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { freePort } from '../../src/testing/ports.ts';
import { ProbeSink } from '../../src/tester/sink.ts';
import { testTarget } from '../../src/tester/runner.ts';
import { explainResult, loopbackTarget, OUTSIDE, transport } from '../e2e/tester-helpers.ts';
import { PYTHON, requirePeer } from './peers.ts';

const PROBE_DOMAIN = 'probes.test';
const TIMEOUTS = { connect: 2000, greeting: 5000, command: 5000 };

let serve: ServeProcess;
let defaultPostfix: PostfixInstance;
let openPostfix: PostfixInstance;
let sink: ProbeSink;
let aiosmtpd: ChildProcess;
let aiosmtpdPort: number;

async function waitForGreeting(port: number, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const c = await SmtpClient.connect({ host: '127.0.0.1', port, timeouts: { connect: 500, greeting: 2000 } });
      await c.quit();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} did not answer on 127.0.0.1:${port}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'the Postfix peers need root and the Debian postfix package (.ci/run installs it)');
  requirePeer(PYTHON, 'python3');
  const probe = spawnSync(PYTHON, ['-c', 'import aiosmtpd'], { encoding: 'utf8' });
  assert.equal(probe.status, 0, `aiosmtpd is missing: install the Debian package python3-aiosmtpd (.ci/run does)\n${probe.stderr}`);
  const sinkPort = await freePort();
  sink = await ProbeSink.start({ port: sinkPort, probeDomain: PROBE_DOMAIN });
  aiosmtpdPort = await freePort();
  aiosmtpd = spawn(PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${aiosmtpdPort}`, '-c', 'aiosmtpd.handlers.Sink'], { stdio: 'ignore' });
  [serve, defaultPostfix, openPostfix] = await Promise.all([
    startServe({ config: { trustedNetworks: ['127.0.0.1/32'] } }),
    startPostfix({ mode: 'discard', extraMain: { mynetworks: '127.0.0.1/32', smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination' } }),
    startPostfix({
      mode: 'relay-to', relayHost: `127.0.0.1:${sinkPort}`,
      extraMain: { mynetworks: `${OUTSIDE}/32`, smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination', default_transport: `smtp:[127.0.0.1]:${sinkPort}` },
    }),
    waitForGreeting(aiosmtpdPort, 'aiosmtpd'),
  ]);
});

after(async () => {
  aiosmtpd?.kill('SIGTERM');
  await Promise.all([serve?.stop(), defaultPostfix?.stop(), openPostfix?.stop(), sink?.close()]);
  await serve?.cleanup();
});

describe('tester vs real servers', () => {
  it('relayguard serve: CLOSED on mx (relay refused, local domain accepted), AUTH required on submission and submissions', async () => {
    const r = await testTarget(loopbackTarget(), {
      ports: [{ port: serve.ports.mx, role: 'mx' }, { port: serve.ports.submission, role: 'submission' }, { port: serve.ports.submissions, role: 'submissions' }],
      testerDomain: 'example.net', sourceAddress: OUTSIDE, timeouts: TIMEOUTS,
    });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    const [mx, sub, subs] = r.ports;
    assert.equal(mx!.verdict, 'CLOSED');
    assert.equal(mx!.reason, 'refused');
    assert.equal(transport(r, 'starttls').verdict, 'CLOSED');
    assert.ok(mx!.findings.some((f) => f.id === 'mx-accepts-local' && f.ok), JSON.stringify(mx!.findings));
    assert.equal(sub!.reason, 'auth-required');
    assert.equal(subs!.reason, 'auth-required');
    assert.deepEqual(subs!.transports.map((t) => t.transport), ['implicit']);
    for (const p of [sub!, subs!]) assert.ok(p.findings.some((f) => f.id === 'submission-requires-auth'));
    assert.ok(!r.findings.some((f) => f.id === 'auth-without-tls'), 'relayguard offers AUTH only over TLS');
    assert.equal(subs!.transports[0]!.session.tls?.certificate?.selfSigned, true);
    // every probe was refused by policy, from the outside address
    const decisions = serve.logs.filter((l) => l['msg'] === 'relay decision');
    assert.ok(decisions.length > 0);
    assert.ok(decisions.every((d) => d['client_ip'] === OUTSIDE));
  });

  it('default Postfix (defer_unauth_destination, 454): CLOSED with the reason, never OPEN', async () => {
    const r = await testTarget(loopbackTarget(), { ports: [{ port: defaultPostfix.port, role: 'mx' }], testerDomain: 'example.net', sourceAddress: OUTSIDE, timeouts: TIMEOUTS });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(r.reason, 'deferred');
    assert.match(r.detail, /454 4\.7\.1 .*Relay access denied/);
  });

  it('Postfix open for the tester\'s network, relaying into the sink: safe mode INCONCLUSIVE (accepted, not proved), proof mode OPEN', async () => {
    const safe = await testTarget(loopbackTarget(), { ports: [{ port: openPostfix.port, role: 'mx' }], testerDomain: 'example.net', sourceAddress: OUTSIDE, timeouts: TIMEOUTS });
    assert.equal(safe.verdict, 'INCONCLUSIVE', explainResult(safe));
    assert.equal(safe.reason, 'accepted-not-proved', 'Postfix refuses the unknown local user (V21), so it is not a sink');

    const r = await testTarget(loopbackTarget(), {
      ports: [{ port: openPostfix.port, role: 'mx' }], testerDomain: PROBE_DOMAIN, sourceAddress: OUTSIDE, timeouts: TIMEOUTS,
      proof: { collector: sink, waitMs: 4000 },
    });
    assert.equal(r.verdict, 'OPEN', explainResult(r));
    assert.equal(r.reason, 'proved');
    const v02 = transport(r, 'plain').tricks.find((t) => t.id === 'V02')!;
    assert.equal(v02.verdict, 'OPEN');
    assert.ok(v02.proof?.arrived);
    assert.equal(v02.proof.relaySawClient, OUTSIDE, 'Postfix recorded the tester address');
    assert.ok(v02.proof.received.some((h) => h.includes('(Postfix') && h.includes(`[${OUTSIDE}]`)), v02.proof.received.join('\n'));
    assert.equal(v02.proof.deliveredBy, '127.0.0.1');
    assert.ok(!r.findings.some((f) => f.id === 'relay-saw-other-address'));
  });

  it('aiosmtpd (accepts every RCPT, relays nothing): safe mode INCONCLUSIVE accepts all recipients; proof mode not OPEN', async () => {
    const safe = await testTarget(loopbackTarget(), { ports: [{ port: aiosmtpdPort, role: 'mx' }], testerDomain: 'example.net', sourceAddress: OUTSIDE, timeouts: TIMEOUTS });
    assert.equal(safe.verdict, 'INCONCLUSIVE', explainResult(safe));
    assert.equal(safe.reason, 'accepts-all-recipients');

    const proved = await testTarget(loopbackTarget(), {
      ports: [{ port: aiosmtpdPort, role: 'mx' }], testerDomain: PROBE_DOMAIN, sourceAddress: OUTSIDE, timeouts: TIMEOUTS,
      proof: { collector: sink, waitMs: 1500 },
    });
    assert.notEqual(proved.verdict, 'OPEN', explainResult(proved));
    assert.equal(proved.verdict, 'INCONCLUSIVE');
    const v02 = transport(proved, 'plain').tricks.find((t) => t.id === 'V02')!;
    assert.match(v02.detail, /end of DATA 250.*did not arrive/);
  });
});
