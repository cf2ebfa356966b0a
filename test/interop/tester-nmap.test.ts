/**
 * relayguard's tester and nmap's smtp-open-relay on the same scripted fake servers, from the same outside
 * address (127.0.0.2). Each test records both verdicts (t.diagnostic) and asserts relayguard is right where
 * nmap is wrong (reference relay-testers.md 1.1, observed on loopback):
 *   - a 554 "no SMTP service" banner in front of a permissive responder: nmap reports an open relay;
 *   - greylisting (451 at RCPT): nmap reports "all tests failed" as if closed; the truth is unknown;
 *   - STARTTLS required (530 at MAIL): nmap reports "authentication needed" and never tries after STARTTLS,
 *     missing a relay that is open once TLS is up.
 *   - a DNSBL refusal of the tester's own address at RCPT ("Client host [X] blocked using <zone>", field report H1):
 *     nmap reads it as closed; relayguard says INCONCLUSIVE client-blocked (nothing about relaying was learnt).
 * And both agree on a plainly closed server (one that accepts its postmaster, the tester's control).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeMta, type FakeMtaOptions } from '../../src/testing/fake-mta.ts';
import { explainResult, OUTSIDE, testCert, testPort } from '../e2e/tester-helpers.ts';
import { NMAP, explain, requirePeer, run } from './peers.ts';

const fakes: FakeMta[] = [];
before(() => requirePeer(NMAP, 'nmap'));
after(async () => { await Promise.all(fakes.map((f) => f.close())); });

async function fake(options: FakeMtaOptions): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}

async function nmapVerdict(port: number): Promise<string> {
  const r = await run(NMAP, [
    '-n', '-Pn', '-p', String(port), '--script', '+smtp-open-relay',
    '--script-args', 'smtp-open-relay.domain=example.net,smtp-open-relay.ip=127.0.0.1',
    '-S', OUTSIDE, '-e', 'lo', '--host-timeout', '30s', '127.0.0.1',
  ], { timeoutMs: 40_000 });
  assert.equal(r.code, 0, explain(r));
  const m = /smtp-open-relay: (.*)/.exec(r.stdout);
  assert.ok(m, `no smtp-open-relay output\n${explain(r)}`);
  return m[1]!.trim();
}

const RELAY_DENIED = '554 5.7.1 Relay access denied\r\n';

describe('relayguard vs nmap smtp-open-relay on the same servers', () => {
  it('554 banner (permissive responder behind it): nmap says open relay; relayguard INCONCLUSIVE banner-refused', async (t) => {
    const f = await fake({ greeting: '554 5.7.1 No SMTP service here\r\n' });
    const [nmap, rg] = await Promise.all([nmapVerdict(f.port), testPort(f.port, 'mx', { noStartTls: true })]);
    t.diagnostic(`nmap: ${nmap}`);
    t.diagnostic(`relayguard: ${rg.verdict} ${rg.reason} (${rg.detail})`);
    assert.match(nmap, /Server is an open relay/, 'nmap ignores the 554 greeting (if this changed, nmap was fixed)');
    assert.equal(rg.verdict, 'INCONCLUSIVE', explainResult(rg));
    assert.equal(rg.reason, 'banner-refused');
  });

  it('greylisting 451 at RCPT: nmap says "all tests failed"; relayguard INCONCLUSIVE greylisted', async (t) => {
    const f = await fake({ commands: { RCPT: '451 4.7.1 Greylisted, please try again later\r\n' } });
    const [nmap, rg] = await Promise.all([nmapVerdict(f.port), testPort(f.port, 'mx', { noStartTls: true })]);
    t.diagnostic(`nmap: ${nmap}`);
    t.diagnostic(`relayguard: ${rg.verdict} ${rg.reason} (${rg.detail})`);
    assert.match(nmap, /doesn't seem to be an open relay, all tests failed/);
    assert.equal(rg.verdict, 'INCONCLUSIVE', explainResult(rg));
    assert.equal(rg.reason, 'greylisted');
  });

  it('STARTTLS required and open after TLS: nmap says "authentication needed"; relayguard finds the acceptance after STARTTLS', async (t) => {
    const f = await fake({
      tls: await testCert(),
      commands: {
        MAIL: (_c, s) => (s.tls ? '250 2.1.0 Ok\r\n' : '530 5.7.0 Must issue a STARTTLS command first\r\n'),
        RCPT: (c, s) => (s.tls && !c.arg.includes('[127.0.0.1]>') ? '250 2.1.5 Ok\r\n' : RELAY_DENIED),
      },
    });
    const [nmap, rg] = await Promise.all([nmapVerdict(f.port), testPort(f.port)]);
    t.diagnostic(`nmap: ${nmap}`);
    t.diagnostic(`relayguard: ${rg.verdict} ${rg.reason} (${rg.detail})`);
    assert.match(nmap, /authentication needed/);
    assert.equal(rg.ports[0]!.transports.find((x) => x.transport === 'plain')!.reason, 'tls-required', explainResult(rg));
    assert.equal(rg.verdict, 'INCONCLUSIVE');
    assert.equal(rg.reason, 'accepted-not-proved');
  });

  it('DNSBL refusal of the tester at RCPT (H1): nmap says closed; relayguard INCONCLUSIVE client-blocked', async (t) => {
    const blocked = `554 5.7.1 Service unavailable; Client host [${OUTSIDE}] blocked using ordb.test\r\n`;
    const f = await fake({ commands: { RCPT: (c) => (/^TO:<postmaster>/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : blocked) } });
    const [nmap, rg] = await Promise.all([nmapVerdict(f.port), testPort(f.port, 'mx', { noStartTls: true })]);
    t.diagnostic(`nmap: ${nmap}`);
    t.diagnostic(`relayguard: ${rg.verdict} ${rg.reason} (${rg.detail})`);
    assert.match(nmap, /doesn't seem to be an open relay/, 'nmap reads a blocklisted tester as a closed relay');
    assert.equal(rg.verdict, 'INCONCLUSIVE', explainResult(rg));
    assert.equal(rg.reason, 'client-blocked');
  });

  it('control: a plainly closed server, both say closed', async (t) => {
    const f = await fake({ commands: { RCPT: (c) => (/^TO:<postmaster(@[^>]*)?>/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : RELAY_DENIED) } });
    const [nmap, rg] = await Promise.all([nmapVerdict(f.port), testPort(f.port, 'mx', { noStartTls: true })]);
    t.diagnostic(`nmap: ${nmap}`);
    t.diagnostic(`relayguard: ${rg.verdict} ${rg.reason}`);
    assert.match(nmap, /doesn't seem to be an open relay/);
    assert.equal(rg.verdict, 'CLOSED', explainResult(rg));
  });
});
