import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { REMEDIATION, openRelayRemediation, portFindings, trustedLookingRange } from './findings.ts';
import type { PortResult, TrickResult, TransportResult } from './result.ts';

const trick = (id: string, kind: TrickResult['kind'], verdict: TrickResult['verdict'], reason: TrickResult['reason'], extra: Partial<TrickResult> = {}): TrickResult => ({
  id, title: id, kind, verdict, reason, detail: `${id} ${reason}`, mailFrom: '<a@example.net>', rcptTo: ['<b@example.net>'],
  replies: { mail: null, rcpt: [], data: null, dot: null }, accepted: verdict === 'OPEN' || reason === 'local-accepted' || reason === 'accepted-not-proved',
  attempts: 1, connection: 0, ms: 1, proof: null, ...extra,
});

function port(tricks: TrickResult[], over: Partial<Omit<PortResult, 'findings'>> = {}): Omit<PortResult, 'findings'> {
  const t: TransportResult = {
    transport: 'plain', verdict: 'CLOSED', reason: 'refused', detail: 'x', counts: { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 },
    session: { banner: { code: 220, enhanced: null, text: 'mx ESMTP' }, connectMs: 1, greetingMs: 1, hello: 'EHLO', capabilities: [], authMechanisms: [], starttlsOffered: false, tls: null, localAddress: '192.0.2.99' },
    connections: 1, durationMs: 1, tricks, control: null, transcripts: null,
  };
  return { port: 25, role: 'mx', verdict: 'CLOSED', reason: 'refused', detail: 'x', counts: t.counts, transports: [t], vrfy: null, expn: null, localDelivery: null, ...over };
}

const facts = { mailAccepted: true, plainAuth: null, sourceAddress: null };

describe('findings: what to fix', () => {
  it('every violated finding carries a remediation line; every REMEDIATION id names Postfix or Exim or says what to do', () => {
    for (const [id, text] of Object.entries(REMEDIATION)) assert.ok(text.length > 40, id);
    assert.match(REMEDIATION['open-relay']!, /smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination/);
    assert.match(REMEDIATION['open-relay']!, /mynetworks/);
    assert.match(REMEDIATION['open-relay']!, /relay_from_hosts/);
    assert.match(REMEDIATION['open-relay']!, /require verify = recipient/);
    assert.match(REMEDIATION['bounce-relay']!, /smtpd_reject_unlisted_recipient = yes.*local_recipient_maps.*require verify = recipient/);
  });

  it('a proved open relay: an error finding whose fix grows with the tricks that worked', () => {
    const fs = portFindings(port([trick('V02', 'relay', 'OPEN', 'proved'), trick('V08', 'relay', 'OPEN', 'proved'), trick('X09', 'relay', 'OPEN', 'proved')]), facts);
    const f = fs.find((x) => x.id === 'open-relay')!;
    assert.equal(f.severity, 'error');
    assert.match(f.message, /V02, V08, X09/);
    assert.match(f.remediation!, /allow_percent_hack = no/);
    assert.match(f.remediation!, /smtpd_authorized_xclient_hosts/);
    assert.doesNotMatch(f.remediation!, /swap_bangpath/);
    assert.equal(openRelayRemediation([]), REMEDIATION['open-relay']);
    for (const x of fs) if (!x.ok) assert.ok(x.remediation, `${x.id} has no remediation`);
  });

  it('a tester on loopback or a private network may be trusted by the target: a hint next to any relaying seen', () => {
    const open = port([trick('V02', 'relay', 'OPEN', 'proved')]);
    const f = portFindings(open, { ...facts, sourceAddress: '10.1.2.3' }).find((x) => x.id === 'tester-address-may-be-trusted')!;
    assert.match(f.message, /10\.1\.2\.3, a private address/);
    assert.match(f.remediation!, /mynetworks.*relay_from_hosts/);
    assert.ok(!portFindings(open, { ...facts, sourceAddress: '192.0.2.99' }).some((x) => x.id === 'tester-address-may-be-trusted'), 'a public address is not flagged');
    const closed = port([trick('V02', 'relay', 'CLOSED', 'refused')]);
    assert.ok(!portFindings(closed, { ...facts, sourceAddress: '127.0.0.2' }).some((x) => x.id === 'tester-address-may-be-trusted'), 'nothing to explain when nothing was accepted');
    assert.equal(trustedLookingRange('::1'), 'loopback');
    assert.equal(trustedLookingRange('fd00::1'), 'unique local');
    assert.equal(trustedLookingRange('::ffff:192.168.1.1'), 'private');
    assert.equal(trustedLookingRange('198.51.100.1'), null);
  });

  it('bounce tricks: accepted unknown users are a risk, a payload bounce a bounce relay, a headers-only bounce backscatter', () => {
    const risk = portFindings(port([trick('B01', 'bounce', 'CLOSED', 'local-accepted'), trick('B03', 'bounce', 'CLOSED', 'local-accepted')]), { ...facts, mode: 'safe' });
    const r = risk.find((x) => x.id === 'bounce-relay-risk')!;
    assert.match(r.message, /\(B01\)/, 'postmaster at the own literal (B03) is not a risk by itself');
    assert.match(r.message, /--prove/);
    const proof = { tag: 't', arrived: false, waitedMs: 1, latencyMs: null, deliveredBy: null, received: [], relaySawClient: null, sentFrom: null, bounceFrom: '192.0.2.1' };
    const relayed = portFindings(port([trick('B02', 'bounce', 'OPEN', 'bounce-relay', { proof: { ...proof, bounced: true, bouncePayload: true } })]), facts);
    assert.equal(relayed.find((x) => x.id === 'bounce-relay')!.severity, 'error');
    assert.ok(!relayed.some((x) => x.id === 'bounce-relay-risk'));
    const scatter = portFindings(port([trick('B02', 'bounce', 'CLOSED', 'local-accepted', { proof: { ...proof, bounced: true, bouncePayload: false } })]), facts);
    assert.ok(scatter.some((x) => x.id === 'backscatter'));
    assert.ok(!scatter.some((x) => x.id === 'bounce-relay' || x.id === 'bounce-relay-risk'));
  });

  it('local delivery refused: a warning only for a domain that was given or found, uncertain for a guessed one', () => {
    const refused = { command: 'RCPT TO:<postmaster@example.test>', reply: { code: 554, enhanced: '5.7.1', text: '5.7.1 Relay access denied' } };
    const p = port([], { localDelivery: refused });
    const given = portFindings(p, { ...facts, mailDomain: { name: 'example.test', source: 'option' } });
    assert.equal(given.find((x) => x.id === 'mx-refuses-local')?.severity, 'warning');
    for (const source of ['guessed-from-banner', 'guessed-from-host-name'] as const) {
      const guessed = portFindings(p, { ...facts, mailDomain: { name: 'example.test', source } });
      assert.ok(!guessed.some((x) => x.id === 'mx-refuses-local'), source);
      const u = guessed.find((x) => x.id === 'mx-local-uncertain')!;
      assert.equal(u.severity, 'info');
      assert.match(u.message, /only guessed.*give --domain/);
    }
  });

  it('client-blocked and control-refused are findings that say the relay test told nothing', () => {
    const fs = portFindings(port([trick('V02', 'relay', 'INCONCLUSIVE', 'client-blocked'), trick('V03', 'relay', 'INCONCLUSIVE', 'control-refused')]), { ...facts, sourceAddress: '192.0.2.9' });
    assert.match(fs.find((x) => x.id === 'client-blocked')!.message, /192\.0\.2\.9/);
    assert.match(fs.find((x) => x.id === 'client-blocked')!.remediation!, /reject_rbl_client/);
    assert.match(fs.find((x) => x.id === 'control-refused')!.remediation!, /--domain/);
  });
});
