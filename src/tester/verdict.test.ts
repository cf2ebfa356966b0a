import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { aggregate, classifyAttempt, classifyError, classifyReply, exitCodeFor, finalizeProof, markAcceptAll, type Outcome, type ReplyInfo } from './verdict.ts';

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
