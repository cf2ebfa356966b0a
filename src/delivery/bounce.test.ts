import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import type { FailedRecipient, QueuedMessageView } from '../queue/deliverer.ts';
import { DsnBouncer, foldHeader, rfc5322Date, wantsReport, type BounceEnvelope } from './bounce.ts';

const BODY = 'From: Alice <a@src.test>\r\nTo: b@peers.test\r\nSubject: hi\r\nMessage-ID: <m1@src.test>\r\n\r\nHello\r\n.dot line\r\n';

function view(over: Partial<QueuedMessageView> = {}, body = BODY): QueuedMessageView {
  return {
    queueId: 'Q0000000000000000001', sender: 'a@src.test', mailParams: {}, receivedAt: Date.UTC(2024, 0, 2, 3, 4, 5),
    size: Buffer.byteLength(body), messageId: '<m1@src.test>', clientIp: '127.0.0.1', helo: 'c', authUser: null, listener: 'mx',
    openBody: () => Readable.from([Buffer.from(body, 'utf8')]),
    ...over,
  };
}

function failed(address: string, over: Partial<FailedRecipient> = {}): FailedRecipient {
  return {
    address, params: {}, status: '5.1.1', reply: { code: 550, enhanced: '5.1.1', text: 'No such user' },
    remoteMta: 'mx.peers.test [192.0.2.7]', diagnostic: null, attempts: 1, lastAttemptAt: Date.UTC(2024, 0, 2, 3, 5, 0), ...over,
  };
}

function setup(options: { doubleBounceTo?: string } = {}) {
  const queued: { envelope: BounceEnvelope; content: string }[] = [];
  const logger = new MemoryLogger();
  const bouncer = new DsnBouncer({
    hostname: 'relay.test', clock: new ManualClock(Date.UTC(2024, 0, 3)), logger,
    enqueue: async (envelope, content) => { queued.push({ envelope, content: content.toString('utf8') }); },
    ...options,
  });
  return { bouncer, queued, logger };
}

describe('DsnBouncer', () => {
  it('queues an RFC 3464 multipart/report from <> to the sender with the original headers', async () => {
    const { bouncer, queued } = setup();
    await bouncer.bounce(view(), [failed('b@peers.test'), failed('c@peers.test', { status: '5.4.4', reply: { code: 550, enhanced: '5.4.4', text: 'Host or domain name not found' }, diagnostic: 'Host or domain name not found', remoteMta: null })]);
    assert.equal(queued.length, 1);
    const { envelope, content } = queued[0]!;
    assert.deepEqual(envelope, { sender: '', recipients: [{ address: 'a@src.test' }], mailParams: {} });
    assert.match(content, /^From: Mail Delivery System <MAILER-DAEMON@relay\.test>\r\n/);
    assert.match(content, /\r\nTo: <a@src\.test>\r\n/);
    assert.match(content, /\r\nAuto-Submitted: auto-replied\r\n/);
    const boundary = /boundary="([^"]+)"/.exec(content)![1]!;
    assert.match(content, /Content-Type: multipart\/report; report-type=delivery-status;/);
    const parts = content.split(`--${boundary}`);
    assert.equal(parts.length, 5, 'preamble, three parts, epilogue');
    assert.match(parts[1]!, /Content-Type: text\/plain/);
    assert.match(parts[1]!, /<b@peers\.test>: host mx\.peers\.test \[192\.0\.2\.7\] said: 550 5\.1\.1 No such user/);
    assert.match(parts[2]!, /Content-Type: message\/delivery-status\r\n\r\nReporting-MTA: dns; relay\.test\r\n/);
    assert.match(parts[2]!, /Arrival-Date: Tue, 2 Jan 2024 03:04:05 \+0000\r\n/);
    assert.match(parts[2]!, /\r\n\r\nFinal-Recipient: rfc822; b@peers\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.peers\.test\r\nDiagnostic-Code: smtp; 550 5\.1\.1 No such user\r\nLast-Attempt-Date: /);
    assert.match(parts[2]!, /Final-Recipient: rfc822; c@peers\.test\r\nAction: failed\r\nStatus: 5\.4\.4\r\nDiagnostic-Code: X-Relayguard; Host or domain name not found\r\n/);
    assert.match(parts[3]!, /Content-Type: text\/rfc822-headers\r\n\r\nFrom: Alice <a@src\.test>\r\nTo: b@peers\.test\r\nSubject: hi\r\nMessage-ID: <m1@src\.test>\r\n\r\n$/);
    assert.doesNotMatch(parts[3]!, /Hello/, 'headers only by default');
    assert.equal(parts[4], '--\r\n');
    for (const line of content.split('\r\n')) assert.ok(line.length <= 998);
    assert.doesNotMatch(content.replace(/\r\n/g, ''), /[\r\n]/, 'CRLF only');
  });

  it('RET=FULL returns the whole message when small; ENVID and ORCPT are reported', async () => {
    const { bouncer, queued } = setup();
    await bouncer.bounce(view({ mailParams: { RET: 'FULL', ENVID: 'abc+2B123' } }), [failed('b@peers.test', { params: { ORCPT: 'rfc822;B+2Bx@peers.test' } })]);
    const c = queued[0]!.content;
    assert.match(c, /Original-Envelope-Id: abc\+123\r\n/);
    assert.match(c, /Original-Recipient: rfc822; B\+x@peers\.test\r\nFinal-Recipient: rfc822; b@peers\.test\r\n/);
    assert.match(c, /Content-Type: message\/rfc822\r\n\r\nFrom: Alice[^]*\r\nHello\r\n\.dot line\r\n\r\n--/);
  });

  it('8-bit content → BODY=8BITMIME on the report envelope', async () => {
    const { bouncer, queued } = setup();
    await bouncer.bounce(view({}, 'Subject: caf\u00e9\r\n\r\nx\r\n'), [failed('b@peers.test')]);
    assert.deepEqual(queued[0]!.envelope.mailParams, { BODY: '8BITMIME' });
  });

  it('NOTIFY: NEVER and lists without FAILURE get no report; DELAY only for delay warnings', async () => {
    assert.equal(wantsReport({}, 'failed'), true);
    assert.equal(wantsReport({ NOTIFY: 'NEVER' }, 'failed'), false);
    assert.equal(wantsReport({ NOTIFY: 'SUCCESS' }, 'failed'), false);
    assert.equal(wantsReport({ NOTIFY: 'success,failure' }, 'failed'), true);
    assert.equal(wantsReport({ NOTIFY: 'FAILURE' }, 'delayed'), false);
    assert.equal(wantsReport({ NOTIFY: 'DELAY' }, 'delayed'), true);
    const { bouncer, queued } = setup();
    await bouncer.bounce(view(), [failed('x@peers.test', { params: { NOTIFY: 'NEVER' } }), failed('y@peers.test', { params: { NOTIFY: 'SUCCESS' } })]);
    assert.equal(queued.length, 0);
    await bouncer.bounce(view(), [failed('x@peers.test', { params: { NOTIFY: 'NEVER' } }), failed('z@peers.test')]);
    assert.equal(queued.length, 1);
    assert.doesNotMatch(queued[0]!.content, /x@peers\.test/);
    assert.match(queued[0]!.content, /z@peers\.test/);
  });

  it('delay warnings: Action delayed, Will-Retry-Until', async () => {
    const { bouncer, queued } = setup();
    await bouncer.delayed(view(), [{ ...failed('b@peers.test', { status: '4.4.1', reply: null, diagnostic: 'connect to mx: ECONNREFUSED' }), nextAttemptAt: Date.UTC(2024, 0, 3, 1), expiresAt: Date.UTC(2024, 0, 7) }]);
    const c = queued[0]!.content;
    assert.match(c, /Subject: Delayed Mail \(still being retried\)/);
    assert.match(c, /Action: delayed\r\nStatus: 4\.4\.1\r\n/);
    assert.match(c, /Will-Retry-Until: Sun, 7 Jan 2024 00:00:00 \+0000\r\n/);
  });

  it('never a bounce of a bounce: <> sender dropped and logged, or sent to the postmaster', async () => {
    const a = setup();
    await a.bouncer.bounce(view({ sender: '' }), [failed('b@peers.test')]);
    assert.equal(a.queued.length, 0);
    assert.ok(a.logger.records.some((r) => r.msg === 'bounce of a bounce dropped'));
    const b = setup({ doubleBounceTo: 'postmaster@relay.test' });
    await b.bouncer.bounce(view({ sender: '' }), [failed('b@peers.test', { params: { NOTIFY: 'NEVER' } })]);
    assert.equal(b.queued.length, 1);
    assert.deepEqual(b.queued[0]!.envelope.recipients, [{ address: 'postmaster@relay.test' }]);
    assert.equal(b.queued[0]!.envelope.sender, '');
    await b.bouncer.delayed(view({ sender: '' }), [{ ...failed('b@peers.test'), nextAttemptAt: 0, expiresAt: 0 }]);
    assert.equal(b.queued.length, 1, 'no delay warnings about bounces');
  });

  it('hostile remote text is cleaned and folded', async () => {
    const { bouncer, queued } = setup();
    await bouncer.bounce(view(), [failed('b@peers.test', { reply: { code: 550, enhanced: '5.7.1', text: `evil\r\nInjected: yes ${'w '.repeat(600)}` } })]);
    const c = queued[0]!.content;
    assert.doesNotMatch(c, /\r\nInjected: yes/);
    for (const line of c.split('\r\n')) assert.ok(line.length <= 998);
  });

  it('rejects when enqueue fails (the runner retries)', async () => {
    const bouncer = new DsnBouncer({ hostname: 'relay.test', enqueue: async () => { throw new Error('disk full'); } });
    await assert.rejects(bouncer.bounce(view(), [failed('b@peers.test')]), /disk full/);
  });

  it('formats', () => {
    assert.equal(rfc5322Date(Date.UTC(2003, 6, 1, 10, 52, 37)), 'Tue, 1 Jul 2003 10:52:37 +0000');
    assert.equal(foldHeader('X', 'a b'), 'X: a b\r\n');
    const long = foldHeader('Diagnostic-Code', `smtp; ${'word '.repeat(40)}`);
    assert.ok(long.split('\r\n').every((l) => l.length <= 78));
  });

  it('rate limit per destination: reports over the per-recipient or per-domain limit are logged and dropped; the window slides', async () => {
    const queued: string[] = [];
    const logger = new MemoryLogger();
    const clock = new ManualClock(Date.UTC(2024, 0, 3));
    const bouncer = new DsnBouncer({
      hostname: 'relay.test', clock, logger,
      rateLimit: { perRecipient: 3, perDomain: 5, windowMs: 60_000 },
      enqueue: async (envelope) => { queued.push(envelope.recipients[0]!.address); },
    });
    for (let i = 0; i < 5; i++) await bouncer.bounce(view({ sender: 'victim@target.test' }), [failed('b@peers.test')]);
    assert.equal(queued.length, 3, 'three reports to one address per window');
    assert.equal(logger.records.filter((r) => r.msg === 'DSN suppressed by rate limit').length, 2);
    await bouncer.bounce(view({ sender: 'other@target.test' }), [failed('b@peers.test')]);
    await bouncer.bounce(view({ sender: 'third@target.test' }), [failed('b@peers.test')]);
    await bouncer.bounce(view({ sender: 'fourth@target.test' }), [failed('b@peers.test')]);
    assert.equal(queued.length, 5, 'five reports to one domain per window');
    assert.equal(logger.records.at(-1)!.fields['limit'], 'per-domain');
    await bouncer.bounce(view({ sender: 'someone@elsewhere.test' }), [failed('b@peers.test')]);
    assert.equal(queued.length, 6, 'other domains are not affected');
    clock.advance(60_001);
    await bouncer.bounce(view({ sender: 'victim@target.test' }), [failed('b@peers.test')]);
    assert.equal(queued.length, 7, 'the window slides');
  });
});
