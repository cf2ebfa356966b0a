import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderJUnit, renderJson, renderText } from './report.ts';
import { SCHEMA, type RunResult, type TrickResult, type TransportResult } from './result.ts';

function trick(id: string, verdict: TrickResult['verdict'], reason: TrickResult['reason'], detail: string, proof: TrickResult['proof'] = null): TrickResult {
  return {
    id, title: `title ${id}`, kind: 'relay', verdict, reason, detail, mailFrom: '<a@example.net>', rcptTo: ['<b@example.net>'],
    replies: { mail: { code: 250, enhanced: '2.1.0', text: '2.1.0 Ok' }, rcpt: [{ code: 554, enhanced: '5.7.1', text: '5.7.1 Relay & "denied" <x>' }], data: null, dot: null },
    accepted: verdict !== 'CLOSED', attempts: 1, connection: 0, ms: 3, proof,
  };
}

const session: TransportResult['session'] = {
  banner: { code: 220, enhanced: null, text: 'mx.example.test ESMTP' }, connectMs: 1, greetingMs: 2, hello: 'EHLO',
  capabilities: ['PIPELINING', 'STARTTLS'], authMechanisms: [], starttlsOffered: true, tls: null, localAddress: '192.0.2.99',
};

const VRFY_FIX = 'Postfix: disable_vrfy_command = yes; Exim: leave acl_smtp_vrfy unset (VRFY refused).';
const OPEN_FIX = 'Postfix: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination; Exim: relay_from_hosts.';

const RUN: RunResult = {
  schema: SCHEMA, tool: { name: 'relayguard', version: '0.1.0' }, mode: 'prove', runId: '0123abcd', testerDomain: 'probes.test',
  startedAt: '2025-01-01T00:00:00.000Z', durationMs: 1234, verdict: 'OPEN', reason: 'proved', detail: 'x', exitCode: 1,
  errors: [{ input: 'bad.example', error: 'Cannot resolve bad.example' }], checks: ['smtp'], proxies: [],
  targets: [{
    check: 'smtp', input: '192.0.2.1', address: '192.0.2.1', family: 4, hostName: null, domain: null, mx: null, sourceAddress: '192.0.2.99',
    mailDomain: { name: 'example.test', source: 'guessed-from-banner' },
    verdict: 'OPEN', reason: 'proved', detail: 'x', counts: { OPEN: 1, CLOSED: 1, INCONCLUSIVE: 1, 'N/A': 1 },
    startedAt: '2025-01-01T00:00:00.000Z', durationMs: 1000,
    findings: [{ id: 'vrfy-exposed', severity: 'warning', port: 25, ok: false, message: 'VRFY discloses mailboxes', remediation: VRFY_FIX }],
    ports: [{
      port: 25, role: 'mx', verdict: 'OPEN', reason: 'proved', detail: 'x', counts: { OPEN: 1, CLOSED: 1, INCONCLUSIVE: 1, 'N/A': 1 },
      vrfy: { command: 'VRFY postmaster', reply: { code: 250, enhanced: null, text: 'postmaster' } }, expn: null, localDelivery: null,
      findings: [
        { id: 'open-relay', severity: 'error', port: 25, ok: false, message: 'relays mail for strangers: V02', remediation: OPEN_FIX },
        { id: 'vrfy-exposed', severity: 'warning', port: 25, ok: false, message: 'VRFY discloses mailboxes', remediation: VRFY_FIX },
      ],
      transports: [{
        transport: 'plain', verdict: 'OPEN', reason: 'proved', detail: 'x', counts: { OPEN: 1, CLOSED: 1, INCONCLUSIVE: 1, 'N/A': 1 }, session,
        connections: 2, durationMs: 50, control: { accepted: true, tries: [{ command: 'RCPT TO:<postmaster@example.test>', reply: { code: 250, enhanced: '2.1.5', text: '2.1.5 Ok' } }] }, transcripts: [{ connection: 0, localAddress: '192.0.2.99', localPort: 40000, startedAt: 'T', lines: [{ t: 0, dir: 'S', line: '220 hi' }, { t: 1, dir: 'C', line: 'EHLO probes.test' }] }],
        tricks: [
          trick('V01', 'CLOSED', 'refused', 'RCPT 554 5.7.1 Relay access denied'),
          trick('V02', 'OPEN', 'proved', 'RCPT 250 Ok; the probe arrived', {
            tag: 'rg-0123abcd-1', arrived: true, bounced: false, bouncePayload: false, bounceFrom: null, waitedMs: 100, latencyMs: 20, deliveredBy: '192.0.2.1',
            received: ['from probes.test (unknown [192.0.2.99]) by mx.example.test (Postfix)'], relaySawClient: '192.0.2.99', sentFrom: '192.0.2.99',
          }),
          trick('V08', 'INCONCLUSIVE', 'greylisted', 'RCPT 451 greylisted'),
          trick('X09', 'N/A', 'not-applicable', 'the server does not advertise XCLIENT'),
        ],
      }, {
        transport: 'starttls', verdict: 'N/A', reason: 'not-applicable', detail: 'STARTTLS not offered', counts: { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 },
        session, connections: 1, durationMs: 5, control: null, transcripts: null, tricks: [],
      }],
    }],
  }],
};

describe('report: text', () => {
  it('shows the verdicts, the non-refused tricks, the proof and the findings; no colour unless asked', () => {
    const text = renderText(RUN);
    assert.doesNotMatch(text, /\x1b\[/);
    assert.match(text, /proof mode/);
    assert.match(text, /error bad\.example: Cannot resolve/);
    assert.match(text, /port 25 mx {2}OPEN/);
    assert.match(text, /V02 {2}title V02 +OPEN/);
    assert.match(text, /V08 .*INCONCLUSIVE {2}RCPT 451 greylisted/);
    assert.doesNotMatch(text, /V01 /, 'refused tricks only with --verbose');
    assert.match(text, /relay saw the tester as 192\.0\.2\.99; delivered by 192\.0\.2\.1 after 20 ms/);
    assert.match(text, /Received: from probes\.test \(unknown \[192\.0\.2\.99\]\)/);
    assert.match(text, /warn {2}vrfy-exposed: VRFY discloses mailboxes\n +fix: Postfix: disable_vrfy_command = yes; Exim: leave acl_smtp_vrfy unset/);
    assert.match(text, /ERROR open-relay: relays mail for strangers: V02\n +fix: Postfix: smtpd_relay_restrictions = permit_mynetworks/);
    assert.match(text, /domain +example\.test \(guessed from the banner: give --domain\)/);
    assert.match(text, /verdict: OPEN a tagged probe was relayed/);
    assert.match(text, /exit 1/);
    assert.doesNotMatch(text, /220 hi/, 'transcripts only on request');
  });
  it('--verbose lists every trick; --transcript prints the dialogue; --color paints the verdicts', () => {
    const text = renderText(RUN, { verbose: true, transcript: true });
    assert.match(text, /V01 /);
    assert.match(text, /X09 /);
    assert.match(text, / 0 S: 220 hi/);
    assert.match(text, / 1 C: EHLO probes\.test/);
    assert.match(renderText(RUN, { color: true }), /\x1b\[31m\x1b\[1mOPEN/);
  });
});

describe('report: JSON and JUnit', () => {
  it('JSON is the result itself', () => {
    assert.deepEqual(JSON.parse(renderJson(RUN)), RUN);
  });
  it('JUnit: one suite per transport, OPEN = failure, INCONCLUSIVE = error, N/A = skipped, findings suite, escaped XML', () => {
    const xml = renderJUnit(RUN);
    assert.match(xml, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<testsuites name="relayguard tester" tests="8" failures="3" errors="2" time="1\.234">/);
    assert.match(xml, /<testsuite name="192\.0\.2\.1:25 mx plain" tests="4" failures="1" errors="1" skipped="1"/);
    assert.match(xml, /name="V02 title V02" time="0\.003"><failure type="OPEN" message="a tagged probe was relayed to the tester&apos;s sink|name="V02 title V02" time="0\.003"><failure type="OPEN" message="a tagged probe was relayed to the tester's sink/);
    assert.match(xml, /<error type="INCONCLUSIVE" message="greylisted \(4xx\): RCPT 451 greylisted">/);
    assert.match(xml, /<skipped message="the server does not advertise XCLIENT"\/>/);
    assert.match(xml, /RCPT -&gt; 554 5\.7\.1 Relay &amp; &quot;denied&quot; &lt;x&gt;/);
    assert.match(xml, /<testsuite name="192\.0\.2\.1:25 mx starttls" tests="1" failures="0" errors="0" skipped="1"/);
    assert.match(xml, /<testcase classname="relayguard\.tester\.192_0_2_1\.25\.findings" name="vrfy-exposed" time="0"><failure type="warning" message="VRFY discloses mailboxes">fix: Postfix: disable_vrfy_command = yes/);
    assert.match(xml, /<failure type="OPEN" message="[^"]*">[^<]*fix: Postfix: smtpd_relay_restrictions = permit_mynetworks/, 'an OPEN trick says what to fix');
    assert.match(xml, /<testcase classname="relayguard\.tester" name="bad\.example" time="0"><error type="ERROR"/);
  });
});
