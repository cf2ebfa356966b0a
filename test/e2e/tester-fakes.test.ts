/**
 * The tester against scripted fake SMTP servers, one per verdict reason: 554 and 421 banners, greylisting,
 * a relay that answers 4xx "Relay access denied", tarpits, STARTTLS required, open only after STARTTLS, open to
 * one trick only (the percent hack), a server that drops the connection mid-battery, an accept-everything sink,
 * HELO-only servers, submission ports, IPv6 literals, and the time budget. All on loopback; the tester speaks
 * from 127.0.0.2. Safe mode must never send DATA.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeCommand, type FakeMta, type FakeMtaOptions } from '../../src/testing/fake-mta.ts';
import { OUTSIDE, allCommands, explainResult, testCert, testPort, transport, tricksWith } from './tester-helpers.ts';

const fakes: FakeMta[] = [];
async function fake(options: FakeMtaOptions): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}
after(async () => { await Promise.all(fakes.map((f) => f.close())); });

const RELAY_DENIED = '554 5.7.1 Relay access denied\r\n';
/** A closed MX: it refuses relaying but accepts its postmaster (the control every session starts with). */
const IS_POSTMASTER = /^TO:<postmaster(@[^>]*)?>/i;
const closedRcpt = (refusal = RELAY_DENIED) => (c: FakeCommand): string => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : refusal);

function assertNoData(f: FakeMta): void {
  assert.ok(!allCommands(f).some((c) => /^(DATA|BDAT)\b/i.test(c)), 'safe mode sent DATA');
  assert.equal(f.sessions.reduce((n, s) => n + s.messages.length, 0), 0);
}

describe('tester vs scripted fakes', () => {
  it('554 banner: INCONCLUSIVE banner-refused, nothing but QUIT sent (nmap calls this server open)', async () => {
    const f = await fake({ greeting: '554 5.7.1 No SMTP service here\r\n' });
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'banner-refused');
    assert.match(r.detail, /554 5\.7\.1 No SMTP service here/);
    assert.deepEqual([...new Set(allCommands(f))], ['QUIT']);
  });

  it('421 banner: INCONCLUSIVE banner-refused', async () => {
    const f = await fake({ greeting: { reply: '421 4.3.2 Service not available, closing transmission channel\r\n', then: 'close' } });
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'banner-refused');
    assert.match(r.detail, /421/);
  });

  it('greylisting 451 at RCPT: INCONCLUSIVE greylisted (nmap: "all tests failed")', async () => {
    const f = await fake({ commands: { RCPT: '451 4.7.1 Greylisted, please try again later\r\n' } });
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'greylisted');
    assertNoData(f);
  });

  it('4xx "Relay access denied" (Postfix defer_unauth_destination): CLOSED deferred, never OPEN', async () => {
    const f = await fake({ commands: { RCPT: closedRcpt('454 4.7.1 <x@example.net>: Relay access denied\r\n') } });
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(r.reason, 'deferred');
  });

  it('an accept-everything sink: INCONCLUSIVE accepts-all-recipients (the V21 control was accepted too)', async () => {
    const f = await fake({});
    const r = await testPort(f.port);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'accepts-all-recipients');
    assertNoData(f);
  });

  it('tarpit before the greeting: INCONCLUSIVE timeout', async () => {
    const f = await fake({ greeting: { delayMs: 5000, reply: '220 slow.test ESMTP\r\n' } });
    const started = Date.now();
    const r = await testPort(f.port, 'mx', { timeouts: { connect: 1000, greeting: 400, command: 400 } });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'timeout');
    assert.ok(Date.now() - started < 4000, 'the tester waited for the tarpit');
  });

  it('tarpit on RCPT: two timeouts in a row end the battery (INCONCLUSIVE timeout) quickly', async () => {
    const f = await fake({ commands: { RCPT: { delayMs: 3000, reply: RELAY_DENIED } } });
    const started = Date.now();
    const r = await testPort(f.port, 'mx', { noStartTls: true, timeouts: { connect: 1000, greeting: 1000, command: 300 } });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'timeout');
    const plain = transport(r, 'plain');
    assert.ok(plain.tricks.every((t) => t.reason === 'timeout' || t.verdict === 'N/A'), explainResult(r));
    assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
  });

  it('STARTTLS required: plain CLOSED tls-required, the battery runs after STARTTLS (nmap: "authentication needed")', async () => {
    const f = await fake({
      tls: await testCert(),
      commands: {
        MAIL: (_c, s) => (s.tls ? '250 2.1.0 Ok\r\n' : '530 5.7.0 Must issue a STARTTLS command first\r\n'),
        RCPT: closedRcpt(),
      },
    });
    const r = await testPort(f.port);
    assert.equal(transport(r, 'plain').reason, 'tls-required', explainResult(r));
    assert.equal(transport(r, 'starttls').verdict, 'CLOSED', explainResult(r));
    assert.equal(transport(r, 'starttls').reason, 'refused');
    assert.equal(r.verdict, 'CLOSED');
    assert.ok(r.findings.some((x) => x.id === 'mx-requires-tls'), JSON.stringify(r.findings));
    const tls = transport(r, 'starttls').session.tls;
    assert.ok(tls?.certificate, 'certificate facts');
    assert.equal(tls.certificate.selfSigned, true);
    assert.match(tls.protocol ?? '', /TLSv1\.[23]/);
  });

  it('open only after STARTTLS: plain CLOSED, starttls accepted (INCONCLUSIVE in safe mode)', async () => {
    const f = await fake({
      tls: await testCert(),
      commands: { RCPT: (c, s) => (IS_POSTMASTER.test(c.arg) || (s.tls && !c.arg.includes('[127.0.0.1]>')) ? '250 2.1.5 Ok\r\n' : RELAY_DENIED) },
    });
    const r = await testPort(f.port);
    assert.equal(transport(r, 'plain').verdict, 'CLOSED', explainResult(r));
    const st = transport(r, 'starttls');
    assert.equal(st.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(st.reason, 'accepted-not-proved');
    assert.ok(tricksWith(st, 'INCONCLUSIVE').includes('V02'));
    assert.equal(r.verdict, 'INCONCLUSIVE');
    assertNoData(f);
  });

  it('open to one trick only (the percent hack via IP literal): exactly V08 is flagged', async () => {
    const f = await fake({ commands: { RCPT: (c) => (/^TO:<[^>"]*%[^>]*@\[127\.0\.0\.1\]>/i.test(c.arg) ? '250 2.1.5 Ok\r\n' : closedRcpt()(c)) } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    const plain = transport(r, 'plain');
    assert.deepEqual(tricksWith(plain, 'INCONCLUSIVE'), ['V08'], explainResult(r));
    assert.equal(plain.tricks.find((t) => t.id === 'V08')!.reason, 'accepted-not-proved');
    assert.equal(r.verdict, 'INCONCLUSIVE');
  });

  it('drops the connection mid-battery: reconnects, retries the interrupted trick, finishes CLOSED', async () => {
    let mails = 0;
    const f = await fake({
      commands: {
        MAIL: (_c, s) => (s.index === 0 && ++mails === 5 ? { then: 'close' } : '250 2.1.0 Ok\r\n'),
        RCPT: closedRcpt(),
      },
    });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    const plain = transport(r, 'plain');
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.ok(plain.connections >= 2);
    assert.ok(plain.tricks.some((t) => t.attempts === 2), 'the interrupted trick was retried');
    assert.ok(plain.tricks.every((t) => t.verdict !== 'INCONCLUSIVE'), explainResult(r));
  });

  it('a server that always drops at RCPT: INCONCLUSIVE dropped, bounded reconnects', async () => {
    const f = await fake({ commands: { RCPT: { then: 'reset' } } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'dropped');
    assert.ok(f.sessions.length <= 12, `${f.sessions.length} connections`);
  });

  it('proactively reconnects before error throttles: never more than errorsPerSession refusals per session', async () => {
    const f = await fake({ commands: { RCPT: closedRcpt() } });
    const r = await testPort(f.port, 'mx', { noStartTls: true, errorsPerSession: 5 });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    for (const s of f.sessions) {
      assert.equal(s.remoteAddress, OUTSIDE);
      const refused = s.commands.filter((c) => /^(RCPT|VRFY|EXPN)/i.test(c) && !/^RCPT TO:<postmaster/i.test(c)).length;
      assert.ok(refused <= 6, `session ${s.index}: ${refused} refusals`);
    }
    // RSET between tries within a session
    assert.ok(f.sessions.some((s) => s.commands.filter((c) => c === 'RSET').length >= 2));
  });

  it('HELO fallback: a server that refuses EHLO is still tested', async () => {
    const f = await fake({ commands: { EHLO: '502 5.5.2 Error: command not recognized\r\n', RCPT: closedRcpt() } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(transport(r, 'plain').session.hello, 'HELO');
    assert.ok(allCommands(f).some((c) => c.startsWith('HELO ')));
  });

  it('submission port: AUTH required before MAIL is CLOSED auth-required; AUTH offered without TLS is flagged', async () => {
    const f = await fake({ capabilities: ['PIPELINING', 'AUTH PLAIN LOGIN'], commands: { MAIL: '530 5.7.0 Authentication required\r\n' } });
    const r = await testPort(f.port, 'submission', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(r.reason, 'auth-required');
    const ids = r.findings.map((x) => x.id);
    assert.ok(ids.includes('submission-requires-auth'), ids.join());
    assert.ok(ids.includes('auth-without-tls'), ids.join());
  });

  it('submission port that takes MAIL without AUTH: error finding even though RCPT refuses relaying', async () => {
    const f = await fake({ commands: { RCPT: RELAY_DENIED } });
    const r = await testPort(f.port, 'submission', { noStartTls: true });
    assert.equal(r.verdict, 'CLOSED');
    const finding = r.findings.find((x) => x.id === 'submission-mail-without-auth');
    assert.ok(finding && finding.severity === 'error' && !finding.ok, JSON.stringify(r.findings));
  });

  it('VRFY/EXPN exposure and the banner are reported', async () => {
    const f = await fake({ greeting: '220 mx.exposed.test ESMTP Exposed\r\n', commands: { VRFY: '250 2.0.0 Postmaster <postmaster@exposed.test>\r\n', EXPN: '250 2.0.0 <root@exposed.test>\r\n', RCPT: closedRcpt() } });
    const r = await testPort(f.port, 'mx', { noStartTls: true });
    const ids = r.findings.map((x) => x.id);
    assert.ok(ids.includes('vrfy-exposed') && ids.includes('expn-exposed'), ids.join());
    assert.equal(r.ports[0]!.transports[0]!.session.banner!.text, 'mx.exposed.test ESMTP Exposed');
    // the banner host and its domain fill H and D
    assert.ok(allCommands(f).includes('RCPT TO:<relaytest-' + r.ports[0]!.transports[0]!.tricks[0]!.rcptTo[0]!.slice(11, 17) + '%example.net@mx.exposed.test>'));
    assert.ok(allCommands(f).some((c) => c === 'MAIL FROM:<relaytest@exposed.test>'), 'V05 spoofs the mail domain');
  });

  it('IPv6: the target literal is [IPv6:::1] (RFC 5321), not [::1]', async () => {
    const f = await fake({ host: '::1', commands: { RCPT: closedRcpt() } });
    const r = await testPort(f.port, 'mx', { noStartTls: true }, '::1');
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    const cmds = allCommands(f);
    assert.ok(cmds.includes('MAIL FROM:<relaytest@[IPv6:::1]>'), cmds.slice(0, 12).join('\n'));
    assert.ok(cmds.some((c) => /^RCPT TO:<relaytest-[0-9a-f]{6}%example\.net@\[IPv6:::1\]>$/.test(c)));
  });

  it('time budget: a paced battery stops when the budget runs out (INCONCLUSIVE budget-exhausted)', async () => {
    const f = await fake({ commands: { RCPT: closedRcpt() } });
    const started = Date.now();
    const r = await testPort(f.port, 'mx', { noStartTls: true, paceMs: 100, budgetMs: 600 });
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    assert.equal(r.verdict, 'INCONCLUSIVE', explainResult(r));
    assert.equal(r.reason, 'budget-exhausted');
  });

  it('a port with nothing listening: CLOSED no-service', async () => {
    const f = await fake({});
    const port = f.port;
    await f.close();
    fakes.splice(fakes.indexOf(f), 1);
    const r = await testPort(port);
    assert.equal(r.verdict, 'CLOSED', explainResult(r));
    assert.equal(r.reason, 'no-service');
  });
});
