import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpClient } from '../smtp/client.ts';
import { ProbeSink, parseHeaders, receivedFromAddress } from './sink.ts';
import { buildProbeMessage, createTagger } from './proof.ts';

describe('sink: header parsing', () => {
  it('unfolds header fields and stops at the body', () => {
    const h = parseHeaders('Received: from a (b [192.0.2.1])\r\n\tby c; date\r\nSubject: x\r\n\r\nReceived: not a header\r\n');
    assert.deepEqual(h, [{ name: 'Received', value: 'from a (b [192.0.2.1]) by c; date' }, { name: 'Subject', value: 'x' }]);
  });
  it('reads the client address of a Received "from" clause (Postfix, relayguard, IPv6 forms)', () => {
    assert.equal(receivedFromAddress('from example.net (unknown [127.0.0.2]) by vm (Postfix) with ESMTP id 4Xy; Mon, 1 Jan 2024'), '127.0.0.2');
    assert.equal(receivedFromAddress('from example.net ([127.0.0.2]) by mx.local.test (relayguard) with ESMTP id Q1; date'), '127.0.0.2');
    assert.equal(receivedFromAddress('from h (h [IPv6:2001:DB8::2]) by x; date'), '2001:db8::2');
    assert.equal(receivedFromAddress('by x with local; date'), null);
    assert.equal(receivedFromAddress('from [192.0.2.9] (helo=[192.0.2.9]) by x; d'), '192.0.2.9');
  });
});

describe('sink: a listening sink', () => {
  let sink: ProbeSink;
  before(async () => { sink = await ProbeSink.start({ port: 0, probeDomain: 'probe.test' }); });
  after(async () => { await sink.close(); });

  it('accepts mail only for the probe domain and records tagged probes with their Received chain', async () => {
    const tags = createTagger('0123abcd');
    const tag = tags.next();
    const c = await SmtpClient.connect({ host: '127.0.0.1', port: sink.port, localAddress: '127.0.0.3', timeouts: { command: 5000 } });
    assert.equal((await c.ehlo('relay.test')).code, 250);
    assert.equal((await c.mailFrom('<relaytest@probe.test>')).code, 250);
    assert.equal((await c.rcptTo('<someone@elsewhere.test>')).code, 550);
    assert.equal((await c.rcptTo(`<${tag}@PROBE.test>`)).code, 250);
    const body = Buffer.concat([
      Buffer.from('Received: from tester.test (unknown [127.0.0.2])\r\n\tby relay.test (Postfix) with ESMTP id X; Mon, 1 Jan 2024 00:00:00 +0000\r\n'),
      buildProbeMessage({ tag, trickId: 'V02', testerDomain: 'probe.test', target: '127.0.0.1', port: 25, transport: 'plain', mailFrom: '<relaytest@probe.test>', rcptTo: `<${tag}@probe.test>` }),
    ]);
    assert.equal((await c.data(body)).reply.code, 250);
    await c.quit();
    const got = await sink.waitFor([tag], 2000);
    const a = got.get(tag)!;
    assert.equal(a.length, 1);
    assert.equal(a[0]!.bounce, false);
    assert.equal(a[0]!.peerAddress, '127.0.0.3');
    assert.equal(a[0]!.relaySawClient, '127.0.0.2');
    assert.equal(a[0]!.helo, 'relay.test');
    assert.match(a[0]!.received[0]!, /^from tester\.test \(unknown \[127\.0\.0\.2\]\) by relay\.test/);
  });

  it('a probe sent with the null sender (V01) is the probe, not a bounce: its tag is in the recipient', async () => {
    const tag = createTagger('0123abcf').next();
    const c = await SmtpClient.connect({ host: '127.0.0.1', port: sink.port, timeouts: { command: 5000 } });
    await c.ehlo('relay.test');
    await c.mailFrom('<>');
    await c.rcptTo(`<${tag}@probe.test>`);
    assert.equal((await c.data(Buffer.from(`Subject: probe\r\n\r\nbody\r\n`))).reply.code, 250);
    await c.quit();
    const got = await sink.waitFor([tag], 2000);
    assert.equal(got.get(tag)![0]!.bounce, false);
  });

  it('records a DSN about a probe as a bounce, never as the probe', async () => {
    const tag = createTagger('0123abce').next();
    const c = await SmtpClient.connect({ host: '127.0.0.1', port: sink.port, timeouts: { command: 5000 } });
    await c.ehlo('relay.test');
    await c.mailFrom('<>');
    await c.rcptTo('<relaytest@probe.test>');
    const r = await c.data(Buffer.from(`Subject: Undelivered Mail Returned to Sender\r\n\r\nX-Relayguard-Probe: ${tag}\r\n`));
    assert.equal(r.reply.code, 250);
    await c.quit();
    const started = Date.now();
    const got = await sink.waitFor([tag], 300);
    assert.ok(Date.now() - started >= 250, 'a bounce must not end the wait');
    assert.equal(got.get(tag)![0]!.bounce, true);
  });

  it('a DSN to a tagged sender (a bounce trick) is a bounce; payload says whether it carries the probe\'s body', async () => {
    const tags = createTagger('0123abd0');
    const full = tags.next();
    const headersOnly = tags.next();
    const probe = (tag: string): string => buildProbeMessage({ tag, trickId: 'B02', testerDomain: 'probe.test', target: '127.0.0.1', port: 25, transport: 'plain', mailFrom: `<${tag}@probe.test>`, rcptTo: '<nosuchuser@[127.0.0.1]>' }).toString('latin1');
    const dsn = (tag: string, returned: string): Buffer => Buffer.from([
      'From: MAILER-DAEMON@bounce.test', `To: <${tag}@probe.test>`, 'Subject: Undelivered Mail Returned to Sender', 'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b"', '', '--b', 'Content-Type: text/plain', '', 'no such user', '',
      '--b', 'Content-Type: message/delivery-status', '', 'Reporting-MTA: dns; bounce.test', '', 'Final-Recipient: rfc822; nosuchuser@[127.0.0.1]', 'Action: failed', 'Status: 5.1.1', '',
      '--b', 'Content-Type: message/rfc822', '', returned, '--b--', '',
    ].join('\r\n'), 'latin1');
    const send = async (tag: string, body: Buffer): Promise<void> => {
      const c = await SmtpClient.connect({ host: '127.0.0.1', port: sink.port, timeouts: { command: 5000 } });
      await c.ehlo('bounce.test');
      await c.mailFrom('<>');
      assert.equal((await c.rcptTo(`<${tag}@probe.test>`)).code, 250);
      assert.equal((await c.data(body)).reply.code, 250);
      await c.quit();
    };
    const whole = probe(full);
    await send(full, dsn(full, whole));
    await send(headersOnly, dsn(headersOnly, probe(headersOnly).split('\r\n\r\n')[0]!));
    const got = await sink.waitFor([], 2000, undefined, { bounceTags: [full, headersOnly] });
    const a = got.get(full)![0]!;
    assert.equal(a.bounce, true, 'a multipart/report from the null sender is a DSN, even addressed to the tag');
    assert.equal(a.payload, true);
    const h = got.get(headersOnly)![0]!;
    assert.equal(h.bounce, true);
    assert.equal(h.payload, false, 'the headers alone do not carry the payload line');
    assert.match(whole, /relayguard probe payload rg-0123abd0-0/);
  });
});
