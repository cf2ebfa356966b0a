/**
 * Truthful verdicts (issue 8) against scripted fakes: a refusal that is about the tester's own address is
 * INCONCLUSIVE client-blocked, never CLOSED (field report H1: Postfix's reject_rbl_client answers at RCPT, and
 * Postfix still accepts <postmaster> from a blocklisted client); CLOSED needs the control (a local recipient)
 * accepted in the same session; a guessed mail domain is reported as guessed and never raises mx-refuses-local
 * (field report M2); a server that accepts unknown local users from a stranger is a bounce-relay risk in safe
 * mode. All on loopback; the tester speaks from 127.0.0.2 (OUTSIDE) unless a test says otherwise.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeCommand, type FakeMta, type FakeMtaOptions } from '../../src/testing/fake-mta.ts';
import { OUTSIDE, allCommands, explainResult, testPort, transport } from './tester-helpers.ts';

const fakes: FakeMta[] = [];
async function fake(options: FakeMtaOptions): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}
after(async () => { await Promise.all(fakes.map((f) => f.close())); });

const OK = '250 2.1.5 Ok\r\n';
const RELAY_DENIED = '554 5.7.1 Relay access denied\r\n';
const isPostmaster = (c: FakeCommand): boolean => /^TO:<postmaster(@[^>]*)?>/i.test(c.arg);
const DNSBL = `554 5.7.1 Service unavailable; Client host [${OUTSIDE}] blocked using ordb.test; Open relay\r\n`;

describe('tester: refusals about the tester are not CLOSED', () => {
  it('Postfix reject_rbl_client (<postmaster> still accepted, every other RCPT "Client host [X] blocked using"): INCONCLUSIVE client-blocked', async () => {
    // what the real Postfix does for a blocklisted client: RFC 5321 <postmaster> passes, everything else gets the DNSBL text
    const f = await fake({ commands: { RCPT: (c) => (/^TO:<postmaster>/i.test(c.arg) ? OK : DNSBL) } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'client-blocked');
    const plain = transport(r, 'plain');
    assert.ok(plain.control?.accepted, 'the control <postmaster> was accepted, and still nothing is CLOSED');
    assert.ok(plain.tricks.every((t) => t.verdict !== 'CLOSED' || t.reason === 'local-accepted'), explainResult(r));
    assert.ok(plain.tricks.filter((t) => t.kind === 'relay').every((t) => t.reason === 'client-blocked' || t.verdict === 'N/A'), explainResult(r));
    const finding = r.findings.find((x) => x.id === 'client-blocked');
    assert.ok(finding && !finding.ok && finding.severity === 'warning', JSON.stringify(r.findings));
    assert.match(finding.message, /127\.0\.0\.2/);
    assert.match(finding.remediation ?? '', /--source-address/);
  });

  it('"Access denied" naming the tester\'s address at MAIL: client-blocked; the same text naming another address is an ordinary refusal', async () => {
    const blocking = await fake({ commands: { MAIL: `550 5.7.1 Access denied for ${OUTSIDE}\r\n` } });
    const r = await testPort(blocking.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'client-blocked');
    // IPv6: the text names the address in another spelling
    const v6 = await fake({ host: '::1', commands: { RCPT: (c) => (isPostmaster(c) ? OK : '554 5.7.1 no relaying for [IPv6:0:0:0:0:0:0:0:1]\r\n') } });
    const r6 = await testPort(v6.port, 'mx', { noStartTls: true }, '::1');
    assert.equal(r6.reason, 'client-blocked', explainResult(r6));
    const other = await fake({ commands: { RCPT: (c) => (isPostmaster(c) ? OK : '550 5.7.1 Access denied for 192.0.2.77\r\n') } });
    const ro = await testPort(other.port, 'mx', { noStartTls: true });
    assert.equal(ro.verdict, 'CLOSED', explainResult(ro));
  });

  it('a 554 greeting naming the tester\'s address: client-blocked (not just banner-refused), nothing else sent', async () => {
    const f = await fake({ greeting: `554 5.7.1 mx.fake.test: no service for [${OUTSIDE}]\r\n` });
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'client-blocked');
    assert.deepEqual([...new Set(allCommands(f))], ['QUIT']);
  });

  it('a policy that refuses even the control (every RCPT refused): INCONCLUSIVE control-refused, never CLOSED', async () => {
    const f = await fake({ commands: { RCPT: RELAY_DENIED } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'control-refused');
    assert.match(r.detail, /refused the local control too \(RCPT TO:<postmaster/);
    const control = transport(r, 'plain').control!;
    assert.equal(control.accepted, false);
    assert.deepEqual(control.tries.map((t) => t.command), ['MAIL FROM:<relaytest@example.net>', 'RCPT TO:<postmaster@fake.test>', 'RCPT TO:<postmaster>', 'RCPT TO:<postmaster@[127.0.0.1]>']);
    assert.ok(r.findings.some((x) => x.id === 'control-refused' && x.remediation !== null));
    // later sessions try one control recipient only (each refusal counts toward the server's error limit)
    for (const s of f.sessions.slice(1)) assert.ok(s.commands.filter((c) => /^RCPT TO:<postmaster/i.test(c)).length <= 2, s.commands.join('\n'));
  });

  it('the control is run in every session, and a closed relay that accepts it is CLOSED', async () => {
    const f = await fake({ commands: { RCPT: (c) => (isPostmaster(c) ? OK : RELAY_DENIED) } });
    const r = await testPort(f.port, 'mx', { noStartTls: true, errorsPerSession: 4 });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.ok(f.sessions.length >= 3);
    for (const s of f.sessions) assert.ok(s.commands.some((c) => /^RCPT TO:<postmaster@fake\.test>$/i.test(c)), `session ${s.index} ran the control`);
  });

  it('submission ports: "Client host rejected: Access denied" with AUTH offered is auth-required (CLOSED), no control needed', async () => {
    const f = await fake({
      capabilities: ['PIPELINING', 'AUTH PLAIN LOGIN'],
      commands: { RCPT: `554 5.7.1 <unknown[${OUTSIDE}]>: Client host rejected: Access denied\r\n` },
    });
    const r = await testPort(f.port, 'submission', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(r.reason, 'auth-required');
    assert.equal(transport(r, 'plain').control, null, 'no control on submission ports');
    assert.equal(r.ports[0]!.localDelivery, null);
  });
});

describe('tester: the mail domain is reported as given or guessed (field report M2)', () => {
  // a Postfix-like server whose banner name is below its real domain: postmaster@<guess> is refused
  const server = (): Promise<FakeMta> => fake({
    greeting: '220 pf.example.test ESMTP\r\n',
    commands: { RCPT: (c) => (/^TO:<postmaster(@real\.test)?>/i.test(c.arg) ? OK : '554 5.7.1 <x>: Relay access denied\r\n') },
  });

  it('guessed from the banner: reported as such; a refused postmaster@<guess> is uncertain, not mx-refuses-local; the verdict stays CLOSED', async () => {
    const f = await server();
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.deepEqual(r.mailDomain, { name: 'example.test', source: 'guessed-from-banner' });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.ok(!r.findings.some((x) => x.id === 'mx-refuses-local'), JSON.stringify(r.findings));
    const uncertain = r.findings.find((x) => x.id === 'mx-local-uncertain');
    assert.ok(uncertain && uncertain.severity === 'info', JSON.stringify(r.findings));
    assert.match(uncertain.message, /example\.test was only guessed from the banner.*give --domain/);
    assert.equal(transport(r, 'plain').control!.tries.at(-1)!.command, 'RCPT TO:<postmaster>', 'the control fell back to <postmaster>');
  });

  it('given with --domain: the source is "option" and the check is a real one', async () => {
    const f = await server();
    const wrong = await testPort(f.port, 'mx', { noStartTls: true, domain: 'example.test' });
    assert.deepEqual(wrong.mailDomain, { name: 'example.test', source: 'option' });
    const refuses = wrong.findings.find((x) => x.id === 'mx-refuses-local');
    assert.ok(refuses && refuses.severity === 'warning' && !refuses.ok, JSON.stringify(wrong.findings));
    assert.match(refuses.remediation ?? '', /mydestination.*local_domains/);
    const right = await testPort(f.port, 'mx', { noStartTls: true, domain: 'real.test' });
    assert.ok(right.findings.some((x) => x.id === 'mx-accepts-local' && x.ok), JSON.stringify(right.findings));
    assert.equal(right.verdict, 'CLOSED', explainResult(right));
  });
});

describe('tester: the bounce-relay pattern in safe mode', () => {
  it('unknown local users and the own literal accepted from a stranger: a bounce-relay-risk finding with the fix, not OPEN, and no DATA', async () => {
    // a relay-closed server that takes any local part at its domain and at its literal (accept, then bounce later)
    const f = await fake({
      greeting: '220 mx.bouncy.test ESMTP\r\n',
      capabilities: ['PIPELINING', 'DSN'],
      commands: { RCPT: (c) => (/@(bouncy\.test|\[127\.0\.0\.1\])>/i.test(c.arg) || isPostmaster(c) ? OK : RELAY_DENIED) },
    });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.notEqual(r.verdict, 'OPEN', explainResult(r));
    const plain = transport(r, 'plain');
    for (const id of ['B01', 'B02', 'B03', 'B04']) {
      const t = plain.tricks.find((x) => x.id === id)!;
      assert.equal(t.accepted, true, `${id}: ${t.detail}`);
      assert.equal(t.reason, 'local-accepted', id);
    }
    assert.match(plain.tricks.find((x) => x.id === 'B02')!.rcptTo[0]!, /^<nosuchuser-[0-9a-f]{6}@\[127\.0\.0\.1\]>$/);
    assert.match(plain.tricks.find((x) => x.id === 'B04')!.mailFrom!, /^<relaytest-[0-9a-f]{6}@example\.net> RET=FULL$/);
    const risk = r.findings.find((x) => x.id === 'bounce-relay-risk');
    assert.ok(risk && risk.severity === 'warning' && !risk.ok, JSON.stringify(r.findings));
    assert.match(risk.message, /B01, B02, B04/);
    assert.match(risk.message, /--prove/);
    assert.match(risk.remediation ?? '', /smtpd_reject_unlisted_recipient = yes.*local_recipient_maps.*require verify = recipient/);
    assert.ok(!allCommands(f).some((c) => /^(DATA|BDAT)\b/i.test(c)), 'safe mode sent DATA');
  });

  it('a server that refuses unknown users at RCPT (550 5.1.1) has no such finding', async () => {
    const f = await fake({ commands: { RCPT: (c) => (isPostmaster(c) ? OK : /nosuchuser/.test(c.arg) ? '550 5.1.1 User unknown\r\n' : RELAY_DENIED) } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.ok(!r.findings.some((x) => x.id === 'bounce-relay-risk'), JSON.stringify(r.findings));
  });
});
