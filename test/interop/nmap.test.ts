/**
 * nmap's smtp-open-relay NSE script (16 relay tricks: null sender, percent hack, quoted local parts, source
 * routes, bang paths, [ip] literals) against a real `relayguard serve` mx listener.
 *
 * nmap connects from 127.0.0.2 (-S 127.0.0.2 -e lo). The relay under test trusts only 127.0.0.1, so nmap is an
 * outside client and must see "doesn't seem to be an open relay". The positive control runs the same nmap
 * against a relay whose trustedNetworks include 127.0.0.2: that one must look open ("Server is an open relay"),
 * which proves the test can fail (a relay that trusts the tester's address looks open to it, as expected).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { NMAP, OUTSIDE, explain, queueList, requirePeer, run, startOutsideServe, type RunResult } from './peers.ts';

let closed: ServeProcess;
let control: ServeProcess;

before(async () => {
  requirePeer(NMAP, 'nmap');
  [closed, control] = await Promise.all([startOutsideServe(), startServe({ config: { trustedNetworks: [`${OUTSIDE}/32`] } })]);
});

after(async () => {
  await Promise.all([closed?.stop(), control?.stop()]);
  await Promise.all([closed?.cleanup(), control?.cleanup()]);
});

function nmap(port: number): Promise<RunResult> {
  return run(NMAP, [
    '-n', '-Pn', '-p', String(port), '--script', '+smtp-open-relay',
    '--script-args', 'smtp-open-relay.domain=example.net,smtp-open-relay.ip=127.0.0.1',
    '-S', OUTSIDE, '-e', 'lo', '--host-timeout', '30s', '127.0.0.1',
  ], { timeoutMs: 40_000 });
}

/** The relay decisions the serve logged for nmap's probes (recipients at example.net). */
function probeDecisions(serve: ServeProcess): Record<string, unknown>[] {
  return serve.logs.filter((l) => l['msg'] === 'relay decision' && String(l['rcpt']).toLowerCase().includes('example.net'));
}

test('smtp-open-relay against relayguard (nmap outside trustedNetworks): "doesn\'t seem to be an open relay"', async () => {
  const r = await nmap(closed.ports.mx);
  assert.equal(r.timedOut, false, explain(r));
  assert.equal(r.code, 0, explain(r));
  assert.match(r.stdout, new RegExp(`${closed.ports.mx}/tcp +open`), explain(r));
  assert.match(r.stdout, /smtp-open-relay: Server doesn't seem to be an open relay/, explain(r));
  assert.doesNotMatch(r.stdout, /Server is an open relay/, explain(r));
  // nmap really probed, from the untrusted address, and every probe was refused.
  const decisions = probeDecisions(closed);
  assert.ok(decisions.length > 0, `the relay logged no relay decision for nmap's probes\n${explain(r)}`);
  for (const d of decisions) {
    assert.equal(d['client_ip'], OUTSIDE, `nmap did not connect from ${OUTSIDE}: ${JSON.stringify(d)}`);
    assert.equal(d['action'], 'reject', `a probe was not refused: ${JSON.stringify(d)}`);
  }
  const queued = (await queueList(closed)).filter((m) => m.recipients.some((rc) => rc.toLowerCase().includes('example.net')));
  assert.deepEqual(queued, [], 'a probe got queued');
});

test('positive control: a relayguard that trusts nmap\'s source address is reported as "Server is an open relay"', async () => {
  const r = await nmap(control.ports.mx);
  assert.equal(r.timedOut, false, explain(r));
  assert.equal(r.code, 0, explain(r));
  assert.match(r.stdout, /smtp-open-relay: Server is an open relay \(\d+\/\d+ tests\)/, explain(r));
  const accepted = probeDecisions(control).filter((d) => d['action'] !== 'reject');
  assert.ok(accepted.length > 0, 'the control relay accepted no probe');
  for (const d of accepted) assert.equal(d['client_ip'], OUTSIDE, JSON.stringify(d));
});
