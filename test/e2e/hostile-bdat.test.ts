/**
 * BD-*: BDAT / CHUNKING (RFC 3030) abuse (hostile-inputs.md section 1.6). Chunk bytes are never run as commands,
 * malformed BDAT hangs up (it cannot be resynchronized), size limits discard until LAST, and a connection lost
 * mid-chunk (TLS close_notify or TCP RST) abandons the message.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import {
  RawSmtpClient, p1, sleep, expectReply, expectClosed, expectTxnReset, expectNoMoreReplies, clientContent, queueIdOf,
  countFinalReplies, connect220,
} from './hostile-helpers.ts';

const MESSAGE_SIZE = 1024;
let h: Harness;

before(async () => {
  h = await startRelay({ limits: { messageSize: MESSAGE_SIZE } });
});

after(async () => { await h?.close(); });

/** P2 minus DATA. */
async function envelope(c: RawSmtpClient): Promise<void> {
  expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
  expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
}

function noEngineErrors(): void {
  assert.ok(!h.logs.some((l) => l.msg === 'session failed'), 'engine error logged');
}

test('BD-01 BDAT without a transaction: 503 5.5.1, the 10 chunk bytes are consumed, not run', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('BDAT 10 LAST\r\n0123456789');
    expectReply(await c.readReply(), 503, '5.5.1', c);
    await expectNoMoreReplies(c);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
    // Chunk bytes that look like commands are skipped too.
    const chunk = 'RSET\r\nQUIT\r\n';
    c.write(`BDAT ${chunk.length} LAST\r\n${chunk}`);
    expectReply(await c.readReply(), 503, '5.5.1', c);
    await expectNoMoreReplies(c);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

for (const bad of ['BDAT abc', 'BDAT 10 FIRST', 'BDAT -5']) {
  test(`BD-02 "${bad}" inside a transaction: 521 5.5.4 + close`, async () => {
    const before = h.queue.list().length;
    const c = await p1(h.ports.mx);
    try {
      await envelope(c);
      c.write(`${bad}\r\n`);
      expectReply(await c.readReply(), 521, '5.5.4', c);
      await expectClosed(c);
      assert.equal(h.queue.list().length, before);
    } finally {
      c.close();
    }
  });
}

test('BD-03 BDAT 0 (not LAST): 551 5.7.1; BDAT 0 LAST is valid and ends the message', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    await envelope(c);
    expectReply(await c.cmd('BDAT 0'), 551, '5.7.1', c);
    c.write('BDAT 4\r\nab\r\n');
    expectReply(await c.readReply(), 250, '2.0.0', c);
    const r = await c.cmd('BDAT 0 LAST');
    expectReply(r, 250, '2.0.0', c);
    assert.equal(clientContent(h, queueIdOf(r)), 'ab\r\n');
    assert.equal(h.queue.list().length, before + 1);
  } finally {
    c.close();
  }
});

test('BD-04 a chunk is binary-transparent: CRLF.CRLF inside it is content, no dot-unstuffing, one message', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    await envelope(c);
    // The catalogue's bytes: the payload after the command line is 11 octets, so the server must keep waiting
    // for the 12th (the count is exact and binary; no line ending ends a chunk).
    c.write('BDAT 12 LAST\r\nab\r\n.\r\ncd\r\n');
    await expectNoMoreReplies(c, 200);
    c.write('Z');
    const r = await c.readReply();
    expectReply(r, 250, '2.0.0', c);
    await expectNoMoreReplies(c);
    assert.equal(clientContent(h, queueIdOf(r)), 'ab\r\n.\r\ncd\r\nZ');
    assert.equal(h.queue.list().length, before + 1);
    // The same content with its exact count.
    await envelope(c);
    c.write('BDAT 11 LAST\r\nab\r\n.\r\ncd\r\n');
    const r1 = await c.readReply();
    expectReply(r1, 250, '2.0.0', c);
    await expectNoMoreReplies(c);
    assert.equal(clientContent(h, queueIdOf(r1)), 'ab\r\n.\r\ncd\r\n');
    assert.equal(h.queue.list().length, before + 2);
    // Dot-stuffed text is kept verbatim too.
    await envelope(c);
    c.write('BDAT 8 LAST\r\n..x\r\n.\r\n');
    const r2 = await c.readReply();
    expectReply(r2, 250, '2.0.0', c);
    assert.equal(clientContent(h, queueIdOf(r2)), '..x\r\n.\r\n');
  } finally {
    c.close();
  }
});

test('BD-05 CHUNKING not advertised (HELO session, or before any HELO): 521 5.5.1 + close, embedded lines never run', async () => {
  const embedded = 'MAIL FROM:<x@evil.test>\r\nRCPT TO:<u@local.test>\r\n';
  const before = h.queue.list().length;
  for (const helo of ['HELO client.test', null]) {
    const c = await connect220(h.ports.mx);
    try {
      if (helo) {
        const r = await c.cmd(helo);
        expectReply(r, 250, undefined, c);
        assert.ok(!r.lines.some((l) => /CHUNKING/.test(l)));
      }
      c.write(`BDAT 40 LAST\r\n${embedded}`);
      expectReply(await c.readReply(), 521, '5.5.1', c);
      await expectClosed(c);
      assert.equal(countFinalReplies(c.transcript, 250), helo ? 1 : 0, c.transcript);
    } finally {
      c.close();
    }
  }
  assert.equal(h.queue.list({ sender: 'x@evil.test' }).length, 0);
  assert.equal(h.queue.list().length, before);
});

test('BD-06 DATA or MAIL after a BDAT chunk: 503 5.5.1; RSET abandons the message', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    await envelope(c);
    c.write('BDAT 5\r\nhello');
    expectReply(await c.readReply(), 250, '2.0.0', c);
    const d = await c.cmd('DATA');
    expectReply(d, 503, '5.5.1', c);
    assert.match(d.text, /DATA after BDAT/);
    const m = await c.cmd('MAIL FROM:<a@client.test>');
    expectReply(m, 503, '5.5.1', c);
    assert.match(m.text, /MAIL after BDAT/);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
    await expectTxnReset(c);
    assert.equal(h.queue.list().length, before);
  } finally {
    c.close();
  }
});

test('BD-07 a chunk past the size limit: 552 5.3.4, later chunks 551 5.0.0 discarded until LAST, txn reset', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    await envelope(c);
    const part = 'x'.repeat(798) + '\r\n'; // 800 octets
    c.write(`BDAT 800\r\n${part}`);
    expectReply(await c.readReply(), 250, '2.0.0', c);
    c.write(`BDAT 800\r\n${part}`);
    expectReply(await c.readReply(), 552, '5.3.4', c);
    c.write('BDAT 10\r\nMAIL FROM:');
    const d = await c.readReply();
    expectReply(d, 551, '5.0.0', c);
    assert.match(d.text, /Discarded 10 bytes/);
    c.write('BDAT 12 LAST\r\nRSET\r\nNOOP\r\n');
    expectReply(await c.readReply(), 551, '5.0.0', c);
    await expectNoMoreReplies(c);
    await expectTxnReset(c);
    assert.equal(h.queue.list().length, before);
    // The session goes on and a message within the limit is accepted.
    await envelope(c);
    c.write('BDAT 4 LAST\r\nok\r\n');
    expectReply(await c.readReply(), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('BD-08 BDAT text with a bare LF (and with a bare CR): rejected in strict mode, nothing stored', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    for (const chunk of ['Subject: x\n\nhi\r\n', 'Subject: x\r\n\r\nh\ri\r\n', 'Subject: x\r\n\r\nhi\r']) {
      await envelope(c);
      c.write(`BDAT ${chunk.length} LAST\r\n${chunk}`);
      const r = await c.readReply();
      expectReply(r, 550, '5.5.2', c);
      await expectTxnReset(c);
    }
    // A bare LF split across two chunks (CR ends chunk 1 and the next chunk does not start with LF).
    await envelope(c);
    c.write('BDAT 5\r\nab\r\nc');
    expectReply(await c.readReply(), 250, '2.0.0', c);
    c.write('BDAT 3 LAST\r\n\nd\n');
    expectReply(await c.readReply(), 550, '5.5.2', c);
    assert.equal(h.queue.list().length, before);
  } finally {
    c.close();
  }
});

test('BD-09 BDAT with an absurd size: 521/552 + close, nothing pre-allocated', async () => {
  const rss0 = process.memoryUsage().rss;
  for (const [line, code] of [['BDAT 999999999999999999999 LAST', 521], ['BDAT 99999999999999999999 LAST', 552], ['BDAT 9007199254740993', 552]] as const) {
    const c = await p1(h.ports.mx);
    try {
      await envelope(c);
      c.write(`${line}\r\n`);
      const r = await c.readReply();
      expectReply(r, code, code === 521 ? '5.5.4' : '5.3.4', c);
      await expectClosed(c);
    } finally {
      c.close();
    }
  }
  assert.ok(process.memoryUsage().rss - rss0 < 50 * 1024 * 1024, 'memory grew on a declared size');
});

test('BD-10 TLS close_notify or TCP RST half-way through a chunk: transaction abandoned, server fine', async () => {
  const before = h.queue.list().length;
  const mark = h.logs.length;
  for (const how of ['close_notify', 'rst'] as const) {
    const c = await p1(h.ports.mx);
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    const tcp = c.socket;
    await c.startTls();
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    await envelope(c);
    c.write('BDAT 22\r\n' + 'y'.repeat(20) + '\r\n');
    expectReply(await c.readReply(), 250, '2.0.0', c);
    c.write('BDAT 100 LAST\r\n' + 'z'.repeat(50));
    await sleep(30);
    if (how === 'close_notify') c.socket.end();
    else tcp.resetAndDestroy();
    await sleep(100);
    c.close();
  }
  await sleep(100);
  assert.equal(h.queue.list().length, before);
  noEngineErrors();
  const reasons = h.logs.slice(mark).filter((l) => l.msg === 'session closed').map((l) => l.fields.close_reason);
  assert.deepEqual(reasons, ['disconnected during BDAT', 'disconnected during BDAT']);
  // Still serving, BDAT inside TLS works.
  const d = await p1(h.ports.mx);
  try {
    expectReply(await d.cmd('STARTTLS'), 220, '2.0.0', d);
    await d.startTls();
    expectReply(await d.cmd('EHLO client.test'), 250, undefined, d);
    await envelope(d);
    d.write('BDAT 4 LAST\r\nok\r\n');
    expectReply(await d.readReply(), 250, '2.0.0', d);
  } finally {
    d.close();
  }
});
