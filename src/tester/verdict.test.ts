import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  addressesInText, aggregate, classifyAttempt, classifyError, classifyReply, clientBlockEvidence, exitCodeFor, finalizeProof, markAcceptAll, requireControl,
  type ControlCheck, type Outcome, type ReplyInfo,
} from './verdict.ts';

const R = (code: number, text: string): ReplyInfo => {
  const m = /^([245]\.\d+\.\d+) /.exec(text);
  return { code, enhanced: m ? m[1]! : null, text };
};

describe('verdict: one reply', () => {
  const table: [number, string, string, string | null, string | null][] = [
    // code, text, phase, verdict, reason
    [250, '2.1.5 Ok', 'rcpt', null, null],
    [354, 'go ahead', 'data', null, null],
    [554, '5.7.1 <x@example.net>: Relay access denied', 'rcpt', 'CLOSED', 'refused'],
    [550, '5.1.1 User unknown', 'rcpt', 'CLOSED', 'refused'],
    [530, '5.7.0 Must issue a STARTTLS command first', 'mail', 'CLOSED', 'tls-required'],
    [530, '5.7.0 Authentication required', 'mail', 'CLOSED', 'auth-required'],
    [554, '5.7.11 Encryption required for requested authentication mechanism', 'mail', 'CLOSED', 'tls-required'],
    [550, '5.7.1 Authentication required to relay', 'rcpt', 'CLOSED', 'auth-required'],
    [454, '4.7.1 <x@example.net>: Relay access denied', 'rcpt', 'CLOSED', 'deferred'],
    [450, '4.2.0 <x@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/x.html', 'rcpt', 'INCONCLUSIVE', 'greylisted'],
    [451, '4.7.1 Please try again later', 'rcpt', 'INCONCLUSIVE', 'greylisted'],
    [451, '4.3.0 Temporary lookup failure', 'rcpt', 'INCONCLUSIVE', 'deferred'],
    [421, '4.7.0 Error: too many errors', 'rset', 'INCONCLUSIVE', 'dropped'],
    [554, '5.7.1 No SMTP service here', 'greeting', 'INCONCLUSIVE', 'banner-refused'],
    [421, '4.3.2 Service shutting down', 'greeting', 'INCONCLUSIVE', 'banner-refused'],
    [220, 'mx ESMTP', 'greeting', null, null],
    [502, '5.5.2 Error: command not recognized', 'helo', 'INCONCLUSIVE', 'helo-refused'],
  ];
  for (const [code, text, phase, verdict, reason] of table) {
    it(`${phase} ${code} ${text.slice(0, 40)} -> ${verdict ?? 'positive'} ${reason ?? ''}`, () => {
      const o = classifyReply(R(code, text), phase as never);
      if (verdict === null) assert.equal(o, null);
      else {
        assert.ok(o);
        assert.equal(o.verdict, verdict);
        assert.equal(o.reason, reason);
        assert.match(o.detail, new RegExp(String(code)));
      }
    });
  }
});

describe('verdict: client errors', () => {
  it('maps timeouts, lost connections, connect failures, TLS failures and aborts', () => {
    assert.equal(classifyError({ code: 'ERR_SMTP_TIMEOUT', phase: 'rcpt', message: 'Timed out' }).reason, 'timeout');
    assert.equal(classifyError({ code: 'ERR_SMTP_CONNECTION', phase: 'rcpt', message: 'Lost' }).reason, 'dropped');
    assert.deepEqual(classifyError({ code: 'ERR_SMTP_CONNECTION', phase: 'connect', message: 'ECONNREFUSED' }).verdict, 'CLOSED');
    assert.equal(classifyError({ code: 'ERR_SMTP_CONNECTION', phase: 'connect', message: 'x' }).reason, 'no-service');
    assert.equal(classifyError({ code: 'ERR_SMTP_TLS', phase: 'tls', message: 'x' }).reason, 'tls-failed');
    assert.equal(classifyError({ code: 'ERR_SMTP_ABORTED', phase: 'mail', message: 'x' }).reason, 'budget-exhausted');
    assert.equal(classifyError({ code: 'ERR_SMTP_PROTOCOL', phase: 'mail', message: 'x' }).reason, 'dropped');
  });
});

describe('verdict: one trick', () => {
  it('an accepted relay trick is never OPEN without proof', () => {
    const o = classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')] }, 'relay', 1);
    assert.equal(o.verdict, 'INCONCLUSIVE');
    assert.equal(o.reason, 'accepted-not-proved');
    assert.equal(o.accepted, true);
  });
  it('an accepted local trick is CLOSED local-accepted (not relaying)', () => {
    const o = classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')] }, 'local', 1);
    assert.equal(o.verdict, 'CLOSED');
    assert.equal(o.reason, 'local-accepted');
  });
  it('uses the last RCPT (the probe) when a local one comes first', () => {
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok'), R(554, '5.7.1 denied')] }, 'relay', 2).reason, 'refused');
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(550, 'no'), R(250, 'ok')] }, 'relay', 2).reason, 'accepted-not-proved');
  });
  it('MAIL refusals decide before RCPT; MAIL acceptance is reported for the submission check', () => {
    const o = classifyAttempt({ mail: R(530, '5.7.0 Authentication required'), rcpt: [] }, 'relay', 1);
    assert.equal(o.reason, 'auth-required');
    assert.equal(o.mailAccepted, false);
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(554, 'no')] }, 'relay', 1).mailAccepted, true);
  });
  it('a missing reply is a dropped connection; a 421 too', () => {
    assert.equal(classifyAttempt({ mail: null, rcpt: [] }, 'relay', 1).reason, 'dropped');
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [] }, 'relay', 1).reason, 'dropped');
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(421, '4.7.0 closing')] }, 'relay', 1).reason, 'dropped');
  });
  it('proof mode: DATA refusals count; an accepted end of DATA is still not proof', () => {
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')], data: R(554, '5.7.1 no'), dot: null }, 'relay', 1).reason, 'refused');
    assert.equal(classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')], data: null, dot: R(550, '5.7.1 spam') }, 'relay', 1).reason, 'refused');
    const o = classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')], data: null, dot: R(250, 'queued') }, 'relay', 1);
    assert.equal(o.reason, 'accepted-not-proved');
    assert.match(o.detail, /end of DATA 250/);
  });
  it('finalizeProof: OPEN only when the probe arrived; a bounce or silence stays INCONCLUSIVE', () => {
    const accepted: Outcome = { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: 'RCPT 250 ok' };
    assert.equal(finalizeProof(accepted, { arrived: true, bounced: false, waitedMs: 1000 }).verdict, 'OPEN');
    const silent = finalizeProof(accepted, { arrived: false, bounced: false, waitedMs: 3000 });
    assert.equal(silent.verdict, 'INCONCLUSIVE');
    assert.match(silent.detail, /did not arrive within 3 s/);
    assert.match(finalizeProof(accepted, { arrived: false, bounced: true, waitedMs: 3000 }).detail, /bounced/);
    const refused: Outcome = { verdict: 'CLOSED', reason: 'refused', detail: 'x' };
    assert.equal(finalizeProof(refused, { arrived: true, bounced: false, waitedMs: 0 }), refused);
  });
});

describe('verdict: accepts-all detection', () => {
  const acc: Outcome = { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: 'RCPT 250' };
  const ref: Outcome = { verdict: 'CLOSED', reason: 'refused', detail: 'RCPT 554' };
  it('accepted relay tricks become accepts-all-recipients when the V21 control was accepted too', () => {
    const out = markAcceptAll([
      { outcome: acc, control: false, accepted: true },
      { outcome: { verdict: 'CLOSED', reason: 'local-accepted', detail: 'x' }, control: true, accepted: true },
    ]);
    assert.equal(out[0]!.outcome.reason, 'accepts-all-recipients');
  });
  it('stay accepted-not-proved when the control was refused (a discriminating server)', () => {
    const out = markAcceptAll([{ outcome: acc, control: false, accepted: true }, { outcome: ref, control: true, accepted: false }]);
    assert.equal(out[0]!.outcome.reason, 'accepted-not-proved');
  });
});

describe('verdict: aggregation and exit codes', () => {
  const o = (verdict: Outcome['verdict'], reason: Outcome['reason']): Outcome => ({ verdict, reason, detail: reason });
  it('OPEN wins, then INCONCLUSIVE by priority, then the most frequent CLOSED reason', () => {
    assert.equal(aggregate([o('CLOSED', 'refused'), o('OPEN', 'proved'), o('INCONCLUSIVE', 'timeout')]).verdict, 'OPEN');
    const inc = aggregate([o('CLOSED', 'refused'), o('INCONCLUSIVE', 'timeout'), o('INCONCLUSIVE', 'accepted-not-proved')]);
    assert.equal(inc.verdict, 'INCONCLUSIVE');
    assert.equal(inc.reason, 'accepted-not-proved');
    const closed = aggregate([o('CLOSED', 'refused'), o('CLOSED', 'auth-required'), o('CLOSED', 'auth-required'), o('N/A', 'not-applicable')]);
    assert.equal(closed.verdict, 'CLOSED');
    assert.equal(closed.reason, 'auth-required');
    assert.deepEqual(closed.counts, { OPEN: 0, CLOSED: 3, INCONCLUSIVE: 0, 'N/A': 1 });
  });
  it('nothing but N/A is INCONCLUSIVE not-tested', () => {
    assert.equal(aggregate([o('N/A', 'not-applicable')]).reason, 'not-tested');
    assert.equal(aggregate([]).verdict, 'INCONCLUSIVE');
  });
  it('exit codes: 0 closed, 1 open, 2 inconclusive', () => {
    assert.equal(exitCodeFor('CLOSED'), 0);
    assert.equal(exitCodeFor('OPEN'), 1);
    assert.equal(exitCodeFor('INCONCLUSIVE'), 2);
  });
});

describe('verdict: refusals about the tester itself (client-blocked, field report H1)', () => {
  const me = { clientAddresses: ['127.0.0.5'] };
  const table: [number, string, string, readonly string[], string, string][] = [
    // code, text, phase, client addresses, verdict, reason
    [554, '5.7.1 Service unavailable; Client host [127.0.0.5] blocked using ordb.test', 'rcpt', [], 'INCONCLUSIVE', 'client-blocked'],
    [554, '5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.9', 'rcpt', [], 'INCONCLUSIVE', 'client-blocked'],
    [550, 'rejected because 192.0.2.9 is in a black list at zen.spamhaus.org', 'rcpt', [], 'INCONCLUSIVE', 'client-blocked'],
    [550, '5.7.1 Your IP is listed in bl.spamcop.net', 'mail', [], 'INCONCLUSIVE', 'client-blocked'],
    [554, '5.7.1 <unknown[127.0.0.5]>: Client host rejected: Access denied', 'rcpt', [], 'INCONCLUSIVE', 'client-blocked'],
    [550, '5.7.1 Access denied for 127.0.0.5', 'rcpt', ['127.0.0.5'], 'INCONCLUSIVE', 'client-blocked'],
    [550, '5.7.1 Access denied for 127.0.0.50', 'rcpt', ['127.0.0.5'], 'CLOSED', 'refused'],
    [554, '5.7.1 Access denied [IPv6:2001:db8::9]', 'rcpt', ['2001:DB8:0:0::9'], 'INCONCLUSIVE', 'client-blocked'],
    [554, '5.7.1 no mail from 2001:0db8::0009 accepted', 'mail', ['2001:db8::9'], 'INCONCLUSIVE', 'client-blocked'],
    [554, 'mx.example.test ESMTP not for [192.0.2.9]', 'greeting', ['192.0.2.9'], 'INCONCLUSIVE', 'client-blocked'],
    [554, '5.7.1 No SMTP service here', 'greeting', ['192.0.2.9'], 'INCONCLUSIVE', 'banner-refused'],
    [550, '5.7.1 Client host [192.0.2.9] blocked', 'helo', [], 'INCONCLUSIVE', 'client-blocked'],
    [554, '5.7.1 <x@example.net>: Relay access denied', 'rcpt', ['127.0.0.5'], 'CLOSED', 'refused'],
    // the target's literal echoed in the path is not the client's address, even when they are the same
    [550, '5.1.1 <nosuchuser@[127.0.0.5]>: Recipient address rejected: User unknown in local recipient table', 'rcpt', ['127.0.0.5'], 'CLOSED', 'refused'],
    [550, '5.1.1 User not listed in example.test directory', 'rcpt', [], 'CLOSED', 'refused'],
    [451, '4.7.1 Greylisted for 127.0.0.5, try again later', 'rcpt', ['127.0.0.5'], 'INCONCLUSIVE', 'greylisted'],
  ];
  for (const [code, text, phase, mine, verdict, reason] of table) {
    it(`${phase} ${code} ${text.slice(0, 60)} -> ${verdict} ${reason}`, () => {
      const o = classifyReply(R(code, text), phase as never, { clientAddresses: mine });
      assert.ok(o);
      assert.equal(o.verdict, verdict, o.detail);
      assert.equal(o.reason, reason, o.detail);
    });
  }
  it('on a submission port that offers AUTH, "Client host rejected: Access denied" is auth-required; a DNSBL stays client-blocked', () => {
    const ctx = { ...me, submissionWithAuth: true };
    assert.equal(classifyReply(R(554, '5.7.1 <unknown[127.0.0.5]>: Client host rejected: Access denied'), 'rcpt', ctx)!.reason, 'auth-required');
    assert.equal(classifyReply(R(554, '5.7.1 Client host [127.0.0.5] blocked using zen.spamhaus.org'), 'rcpt', ctx)!.reason, 'client-blocked');
  });
  it('names the addresses in a text, leaving the echoed paths out', () => {
    assert.deepEqual(addressesInText('<a@[192.0.2.1]>: from 192.0.2.9 and [IPv6:2001:DB8::1] and ::ffff:192.0.2.7'), ['192.0.2.9', '2001:db8::1', '192.0.2.7']);
    assert.equal(clientBlockEvidence(R(250, 'ok from 127.0.0.5'), ['127.0.0.5']), null, 'positive replies never count');
  });
  it('classifyAttempt: a relay trick refused with a DNSBL text is never CLOSED', () => {
    const o = classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(554, '5.7.1 Service unavailable; Client host [127.0.0.5] blocked using ordb.test')] }, 'relay', 1, me);
    assert.equal(o.verdict, 'INCONCLUSIVE');
    assert.equal(o.reason, 'client-blocked');
  });
});

describe('verdict: CLOSED needs the control (requireControl)', () => {
  const refused: Outcome = { verdict: 'CLOSED', reason: 'refused', detail: 'RCPT 554 5.7.1 Relay access denied' };
  const ok: ControlCheck = { accepted: true, tries: [{ command: 'RCPT TO:<postmaster@example.test>', reply: R(250, '2.1.5 Ok') }] };
  const no: ControlCheck = { accepted: false, tries: [{ command: 'MAIL FROM:<a@example.net>', reply: R(250, 'ok') }, { command: 'RCPT TO:<postmaster@example.test>', reply: R(554, '5.7.1 Relay access denied') }] };
  it('CLOSED stays CLOSED only next to an accepted control', () => {
    assert.equal(requireControl(refused, ok), refused);
    const o = requireControl(refused, no);
    assert.equal(o.verdict, 'INCONCLUSIVE');
    assert.equal(o.reason, 'control-refused');
    assert.match(o.detail, /RCPT TO:<postmaster@example\.test> got 554/);
    assert.equal(requireControl({ ...refused, reason: 'deferred' }, no).reason, 'control-refused');
  });
  it('a control refused with a text about the tester makes it client-blocked', () => {
    const blocked: ControlCheck = { accepted: false, tries: [{ command: 'MAIL FROM:<a@example.net>', reply: R(550, '5.7.1 Access denied to 127.0.0.5') }] };
    assert.equal(requireControl(refused, blocked, { clientAddresses: ['127.0.0.5'] }).reason, 'client-blocked');
  });
  it('leaves other outcomes and the no-control case (submission ports) alone', () => {
    const tls: Outcome = { verdict: 'CLOSED', reason: 'tls-required', detail: 'MAIL 530' };
    assert.equal(requireControl(tls, no), tls);
    assert.equal(requireControl(refused, null), refused);
    const acc: Outcome = { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: 'RCPT 250' };
    assert.equal(requireControl(acc, no), acc);
  });
});

describe('verdict: bounce tricks', () => {
  it('an accepted bounce trick is CLOSED local-accepted until a bounce with the body proves a bounce relay', () => {
    const o = classifyAttempt({ mail: R(250, 'ok'), rcpt: [R(250, 'ok')], data: null, dot: R(250, 'queued') }, 'bounce', 1);
    assert.equal(o.verdict, 'CLOSED');
    assert.equal(o.reason, 'local-accepted');
    assert.equal(o.accepted, true);
    const open = finalizeProof(o, { arrived: false, bounced: true, bouncePayload: true, waitedMs: 2000 }, 'bounce');
    assert.equal(open.verdict, 'OPEN');
    assert.equal(open.reason, 'bounce-relay');
    const headersOnly = finalizeProof(o, { arrived: false, bounced: true, bouncePayload: false, waitedMs: 2000 }, 'bounce');
    assert.equal(headersOnly.verdict, 'CLOSED');
    assert.match(headersOnly.detail, /headers only/);
    assert.match(finalizeProof(o, { arrived: false, bounced: false, waitedMs: 2000 }, 'bounce').detail, /no bounce came back within 2 s/);
  });
  it('a relay trick whose probe came back to its sender with the body is a bounce relay too', () => {
    const acc: Outcome = { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: 'RCPT 250' };
    assert.equal(finalizeProof(acc, { arrived: false, bounced: true, bouncePayload: true, waitedMs: 1 }).reason, 'bounce-relay');
    assert.equal(finalizeProof(acc, { arrived: false, bounced: true, bouncePayload: false, waitedMs: 1 }).verdict, 'INCONCLUSIVE');
  });
  it('aggregation: bounce-relay is OPEN', () => {
    const agg = aggregate([{ verdict: 'CLOSED', reason: 'refused', detail: 'x' }, { verdict: 'OPEN', reason: 'bounce-relay', detail: 'y' }]);
    assert.equal(agg.verdict, 'OPEN');
    assert.equal(agg.reason, 'bounce-relay');
  });
});
