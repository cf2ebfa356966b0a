/**
 * SM-*: SMTP smuggling on the receive path (hostile-inputs.md section 1.1, invariant INV-SM), byte-exact over
 * real sockets against the in-process relay. Strict mode (the default, Postfix "reject") must answer the final
 * terminator with exactly one 5xx and store nothing; normalize mode must store exactly one canonical message.
 * In both modes the smuggled MAIL/RCPT/DATA never run and nothing from s@evil.test is ever queued.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import {
  RawSmtpClient, p1, p2, sleep, expectReply, expectClass, expectClosed, expectTxnReset, expectNoMoreReplies,
  clientContent, queueIdOf, assertCanonicalText, countFinalReplies,
} from './hostile-helpers.ts';

const SMUGGLED = 'MAIL FROM:<s@evil.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n';
const smug = (e: string): string => `Subject: t\r\n\r\nbody${e}${SMUGGLED}`;

const MESSAGE_SIZE = 64 * 1024;
let strict: Harness;
let normal: Harness;

before(async () => {
  const users = [{ name: 'alice@local.test', password: 'pw' }];
  strict = await startRelay({ users, limits: { messageSize: MESSAGE_SIZE } });
  normal = await startRelay({ lineEndings: 'normalize', limits: { messageSize: MESSAGE_SIZE } });
});

after(async () => {
  await strict?.close();
  await normal?.close();
});

/** INV-SM part shared by every case: nothing from the smuggled sender, ever, in either harness. */
function assertNothingSmuggled(): void {
  for (const h of [strict, normal]) {
    assert.equal(h.queue.list({ sender: 's@evil.test' }).length, 0, 'a smuggled message was queued');
  }
}

/** After P2 the transcript holds 220, EHLO 250, MAIL 250, RCPT 250, 354: the part we must not see again. */
function repliesAfterData(c: RawSmtpClient): string {
  const i = c.transcript.indexOf('354 ');
  return c.transcript.slice(c.transcript.indexOf('\r\n', i) + 2);
}

const CASES: { id: string; e: string; strictEnhanced: string; note: string }[] = [
  { id: 'SM-01', e: '\n.\n', strictEnhanced: '5.5.2', note: 'LF . LF' },
  { id: 'SM-02', e: '\n.\r\n', strictEnhanced: '5.5.2', note: 'LF . CRLF (Exchange Online -> Postfix)' },
  { id: 'SM-03', e: '\r.\r', strictEnhanced: '5.5.2', note: 'CR . CR' },
  { id: 'SM-04', e: '\r.\n', strictEnhanced: '5.5.2', note: 'CR . LF' },
  { id: 'SM-05', e: '\n.\r', strictEnhanced: '5.5.2', note: 'LF . CR' },
  { id: 'SM-06', e: '\r.\r\n', strictEnhanced: '5.5.2', note: 'CR . CRLF' },
  { id: 'SM-07', e: '\r\n.\n', strictEnhanced: '5.5.2', note: 'CRLF . LF' },
  { id: 'SM-08', e: '\r\n.\r', strictEnhanced: '5.5.2', note: 'CRLF . CR' },
  { id: 'SM-09', e: '\r\n\x00.\r\n', strictEnhanced: '5.6.0', note: 'CRLF NUL . CRLF' },
  { id: 'SM-10', e: '\r\n.\x00\r\n', strictEnhanced: '5.6.0', note: 'CRLF . NUL CRLF' },
];

for (const { id, e, strictEnhanced, note } of CASES) {
  test(`${id} SMUG(${note}) strict: one 550 after the real terminator, txn reset, nothing stored`, async () => {
    const before = strict.queue.list().length;
    const c = await p1(strict.ports.mx);
    try {
      await p2(c);
      c.write(smug(e));
      const r = await c.readReply();
      expectReply(r, 550, strictEnhanced, c);
      await expectNoMoreReplies(c);
      // INV-SM: exactly one reply after 354; never the 250/250/354 of the smuggled commands.
      assert.equal(repliesAfterData(c), r.lines.map((l) => `${l}\r\n`).join(''));
      await expectTxnReset(c);
      assert.equal(strict.queue.list().length, before, 'strict mode stored a message');
      assertNothingSmuggled();
    } finally {
      c.close();
    }
  });

  test(`${id} SMUG(${note}) normalize: exactly one message, canonical CRLF text, smuggled commands never run`, async () => {
    const before = normal.queue.list().length;
    const c = await p1(normal.ports.mx);
    try {
      await p2(c);
      c.write(smug(e));
      const r = await c.readReply();
      expectReply(r, 250, '2.0.0', c);
      await expectNoMoreReplies(c);
      assert.equal(countFinalReplies(repliesAfterData(c), 250), 1);
      assert.equal(countFinalReplies(repliesAfterData(c), 354), 0);
      await expectTxnReset(c);
      assert.equal(normal.queue.list().length, before + 1, 'normalize mode must store exactly one message');
      const content = clientContent(normal, queueIdOf(r));
      assertCanonicalText(content);
      assert.match(content, /^Subject: t\r\n\r\nbody/);
      // The smuggled lines are inert content of the one message.
      assert.match(content, /Subject: smuggled/);
      assertNothingSmuggled();
    } finally {
      c.close();
    }
  });
}

test('SM-13 pipelined second transaction with data sent before 354: 554 5.5.0 + close, nothing stored', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    c.write(
      'MAIL FROM:<a@client.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: 1\r\n\r\nx\r\n.\r\n' +
        'MAIL FROM:<a@client.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: 2\r\n\r\ny\r\n.\r\n',
    );
    expectReply(await c.readReply(), 250, '2.1.0', c);
    expectReply(await c.readReply(), 250, '2.1.5', c);
    expectReply(await c.readReply(), 554, '5.5.0', c);
    await expectClosed(c);
    assert.equal(countFinalReplies(c.transcript, 354), 0);
    assert.equal(strict.queue.list().length, before);
    assertNothingSmuggled();
  } finally {
    c.close();
  }
});

test('SM-14 inner bare LF in a body line: strict 550 5.5.2 + txn reset; normalize one message with CRLF', async () => {
  const body = 'Subject: t\r\n\r\nline1\nline2\r\n.\r\n';
  const b1 = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    await p2(c);
    c.write(body);
    expectReply(await c.readReply(), 550, '5.5.2', c);
    await expectNoMoreReplies(c);
    await expectTxnReset(c);
    assert.equal(strict.queue.list().length, b1);
  } finally {
    c.close();
  }
  const b2 = normal.queue.list().length;
  const n = await p1(normal.ports.mx);
  try {
    await p2(n);
    n.write(body);
    const r = await n.readReply();
    expectReply(r, 250, '2.0.0', n);
    assert.equal(normal.queue.list().length, b2 + 1);
    const content = clientContent(normal, queueIdOf(r));
    assertCanonicalText(content);
    assert.equal(content, 'Subject: t\r\n\r\nline1\r\nline2\r\n');
  } finally {
    n.close();
  }
});

test('SM-15 dot-stuffing: stored lines are ".a", "b", ".." and one 250', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    await p2(c);
    c.write('Subject: t\r\n\r\n..a\r\n.b\r\n...\r\n.\r\n');
    const r = await c.readReply();
    expectReply(r, 250, '2.0.0', c);
    await expectNoMoreReplies(c);
    assert.equal(strict.queue.list().length, before + 1);
    assert.equal(clientContent(strict, queueIdOf(r)), 'Subject: t\r\n\r\n.a\r\nb\r\n..\r\n');
  } finally {
    c.close();
  }
});

test('SM-16 (receive half) an authenticated submission of the SM-02 body is refused, so it is never forwarded', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.submissions, { tls: true });
  try {
    const auth = Buffer.from('\0alice@local.test\0pw').toString('base64');
    expectReply(await c.cmd(`AUTH PLAIN ${auth}`), 235, '2.7.0', c);
    expectReply(await c.cmd('MAIL FROM:<alice@local.test>'), 250, '2.1.0', c);
    // A remote recipient: this is the outbound (service A) position of the attack.
    expectReply(await c.cmd('RCPT TO:<victim@remote.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    c.write(smug('\n.\r\n'));
    expectReply(await c.readReply(), 550, '5.5.2', c);
    await expectNoMoreReplies(c);
    assert.equal(strict.queue.list().length, before, 'a body with a bare LF was queued for relaying');
    assertNothingSmuggled();
  } finally {
    c.close();
  }
});

test('SM-17 CRLF.CRLF split over two writes at every offset: exactly one end of data each time, body identical', async () => {
  const payload = 'Subject: t\r\n\r\nhello\r\n.\r\n';
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  c.socket.setNoDelay(true);
  try {
    for (let cut = 1; cut < payload.length; cut++) {
      await p2(c);
      c.write(payload.slice(0, cut));
      await sleep(15);
      c.write(payload.slice(cut));
      const r = await c.readReply();
      expectReply(r, 250, '2.0.0', c);
      assert.equal(clientContent(strict, queueIdOf(r)), 'Subject: t\r\n\r\nhello\r\n', `split at ${cut}`);
      assert.equal(c.unread, '', `extra reply at split ${cut}`);
    }
    await expectNoMoreReplies(c);
    assert.equal(strict.queue.list().length, before + payload.length - 1);
  } finally {
    c.close();
  }
});

test('SM-18 empty body (".\\r\\n" right after 354): a defined reply, never a hang', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    await p2(c);
    c.write('.\r\n');
    const r = await c.readReply(2000);
    assert.ok(r.code === 250 || (r.code >= 500 && r.code < 600), `unexpected ${r.lines.join(' | ')}`);
    await expectNoMoreReplies(c);
    assert.equal(strict.queue.list().length, before + (r.code === 250 ? 1 : 0));
    if (r.code === 250) assert.equal(clientContent(strict, queueIdOf(r)), '');
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('SM-20 a body that trips the size limit, then smuggled commands and the real terminator: one 552, nothing runs', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    await p2(c);
    const line = 'x'.repeat(998) + '\r\n';
    const big = 'Subject: t\r\n\r\n' + line.repeat(Math.ceil((MESSAGE_SIZE * 1.5) / line.length));
    c.write(big + SMUGGLED);
    const r = await c.readReply();
    expectReply(r, 552, '5.3.4', c);
    await expectNoMoreReplies(c);
    assert.equal(repliesAfterData(c), r.lines.map((l) => `${l}\r\n`).join(''));
    await expectTxnReset(c);
    assert.equal(strict.queue.list().length, before);
    assertNothingSmuggled();
  } finally {
    c.close();
  }
});

test('SM-20 variant: over the limit, then a bare-LF end-of-data and smuggled commands: still one 5xx only', async () => {
  const before = strict.queue.list().length;
  const c = await p1(strict.ports.mx);
  try {
    await p2(c);
    const line = 'y'.repeat(998) + '\r\n';
    c.write('Subject: t\r\n\r\n' + line.repeat(Math.ceil((MESSAGE_SIZE * 1.5) / line.length)) + 'tail\n.\n' + SMUGGLED);
    const r = await c.readReply();
    expectClass(r, 5, c);
    await expectNoMoreReplies(c);
    assert.equal(repliesAfterData(c), r.lines.map((l) => `${l}\r\n`).join(''));
    await expectTxnReset(c);
    assert.equal(strict.queue.list().length, before);
    assertNothingSmuggled();
  } finally {
    c.close();
  }
});
