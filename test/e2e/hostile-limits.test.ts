/**
 * PL-*: protocol limits and abuse (hostile-inputs.md section 1.4): line lengths, NUL / bare CR / bare LF in
 * commands, HTTP on the SMTP port, pregreet, pipelining violations, floods with and without reading replies,
 * error and recipient limits, parameter syntax, size limits, timeouts, connection limits, hop count, graceful
 * stop and pathological message structure.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { QueueStore } from '../../src/queue/index.ts';
import { NULL_LOGGER } from '../../src/core/log.ts';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  RawSmtpClient, p1, p2, sleep, expectReply, expectClosed, expectTxnReset, expectNoMoreReplies, connect220,
  countFinalReplies, queueIdOf,
} from './hostile-helpers.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const MESSAGE_SIZE = 2 * 1024 * 1024;
const IDLE_MS = 500;
const SESSION_MS = 2000;
let h: Harness; // general limits
let t: Harness; // short timeouts, one connection per IP

before(async () => {
  h = await startRelay({ trustedNetworks: ['127.0.0.1/32'], limits: { messageSize: MESSAGE_SIZE } });
  t = await startRelay({ limits: { idleTimeoutMs: IDLE_MS, sessionTimeoutMs: SESSION_MS, connectionsPerIp: 1 } });
});

after(async () => {
  await h?.close();
  await t?.close();
});

async function stillServed(port: number): Promise<void> {
  const c = await p1(port);
  try {
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
    expectReply(await c.cmd('QUIT'), 221, '2.0.0', c);
  } finally {
    c.close();
  }
}

test('PL-01 EHLO line of exactly 512 octets is accepted', async () => {
  const c = await connect220(h.ports.mx);
  try {
    const line = 'EHLO ' + 'a'.repeat(505);
    assert.equal(line.length + 2, 512);
    expectReply(await c.cmd(line), 250, undefined, c);
  } finally {
    c.close();
  }
});

test('PL-02 EHLO of 5 000 octets: 500 5.5.2, session continues', async () => {
  const c = await connect220(h.ports.mx);
  try {
    expectReply(await c.cmd('EHLO ' + 'a'.repeat(5000)), 500, '5.5.2', c);
    await expectNoMoreReplies(c, 50);
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('PL-03 10 MiB without any LF: memory bounded, 5xx then close (no wait for a timeout)', async () => {
  const rss0 = process.memoryUsage().rss;
  const c = await connect220(h.ports.mx);
  try {
    const junk = Buffer.alloc(10 * 1024 * 1024, 0x61);
    c.write(junk);
    const r = await c.readReply(5000);
    assert.ok(r.code === 500 || r.code === 521, r.lines.join(' | '));
    assert.equal(r.enhanced, '5.5.2');
    await expectClosed(c);
    assert.ok(process.memoryUsage().rss - rss0 < 100 * 1024 * 1024, 'memory not bounded');
  } finally {
    c.close();
  }
  await stillServed(h.ports.mx);
});

test('PL-04 NUL inside MAIL FROM: 501, no parse that stops at the NUL', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('MAIL FROM:<a@client.test>\x00<b@remote.test>\r\n');
    expectReply(await c.readReply(), 501, '5.5.2', c);
    await expectTxnReset(c); // MAIL did not run
  } finally {
    c.close();
  }
});

test('PL-05 bare CR inside a command: one malformed command (501), the RCPT never runs', async () => {
  const c = await p1(h.ports.mx, { localAddress: '127.0.0.2' });
  try {
    c.write('MAIL FROM:<a@client.test>\rRCPT TO:<b@remote.test>\r\n');
    expectReply(await c.readReply(), 501, '5.5.2', c);
    await expectNoMoreReplies(c);
    await expectTxnReset(c);
  } finally {
    c.close();
  }
});

test('PL-06 bare LF ends a command: strict 521 5.5.2 + close; normalize mode accepts it', async () => {
  const c = await connect220(h.ports.mx);
  try {
    c.write('EHLO x\n');
    expectReply(await c.readReply(), 521, '5.5.2', c);
    await expectClosed(c);
  } finally {
    c.close();
  }
  const n = await startRelay({ lineEndings: 'normalize' });
  try {
    const d = await connect220(n.ports.mx);
    try {
      d.write('EHLO x\n');
      expectReply(await d.readReply(), 250, undefined, d);
      expectReply(await d.cmd('NOOP'), 250, '2.0.0', d);
    } finally {
      d.close();
    }
  } finally {
    await n.close();
  }
});

test('PL-07 HTTP request on the SMTP port: 221 2.7.0 and close at once', async () => {
  const c = await connect220(h.ports.mx);
  try {
    c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const r = await c.readReply();
    expectReply(r, 221, '2.7.0', c);
    await expectClosed(c);
    await sleep(50);
    assert.equal(c.unread, '');
  } finally {
    c.close();
  }
  // POST after EHLO, and a header-shaped line, too.
  for (const line of ['POST /x HTTP/1.1', 'Host: x', 'User-Agent: curl']) {
    const d = await p1(h.ports.mx);
    try {
      d.write(`${line}\r\n`);
      expectReply(await d.readReply(), 221, '2.7.0', d);
      await expectClosed(d);
    } finally {
      d.close();
    }
  }
});

test('PL-08 talking before the greeting: 554 5.5.0 + close, never a 220', async () => {
  const g = await startRelay({ greetDelayMs: 300 });
  try {
    const c = await RawSmtpClient.connect(g.ports.mx);
    try {
      c.write('EHLO x\r\n');
      const r = await c.readReply(3000);
      expectReply(r, 554, '5.5.0', c);
      await expectClosed(c);
      assert.equal(countFinalReplies(c.transcript, 220), 0, c.transcript);
      assert.equal(countFinalReplies(c.transcript, 250), 0, c.transcript);
    } finally {
      c.close();
    }
    // Control: a patient client gets the greeting after the delay.
    const t0 = Date.now();
    const d = await p1(g.ports.mx);
    try {
      assert.ok(Date.now() - t0 >= 250, 'greeting was not delayed');
      expectReply(await d.cmd('NOOP'), 250, '2.0.0', d);
    } finally {
      d.close();
    }
  } finally {
    await g.close();
  }
});

test('PL-09 EHLO and MAIL in one write: EHLO must end a group, 554 5.5.0 + close', async () => {
  const c = await connect220(h.ports.mx);
  try {
    c.write('EHLO x\r\nMAIL FROM:<a@client.test>\r\n');
    expectReply(await c.readReply(), 554, '5.5.0', c);
    await expectClosed(c);
    assert.equal(countFinalReplies(c.transcript, 250), 0, c.transcript);
  } finally {
    c.close();
  }
  // The closed session's slot is freed as soon as the client hangs up, although most of its pipelined input
  // was never read (harness t allows one connection per IP).
  const d = await connect220(t.ports.mx, { localAddress: '127.0.0.31' });
  try {
    d.write('EHLO x\r\nMAIL FROM:<a@client.test>\r\n' + 'NOOP\r\n'.repeat(200_000));
    expectReply(await d.readReply(), 554, '5.5.0', d);
  } finally {
    d.close(); // hang up at once, with most of the flood still unread by the server
  }
  await sleep(150);
  const e = await RawSmtpClient.connect(t.ports.mx, { localAddress: '127.0.0.31' });
  try {
    expectReply(await e.readReply(), 220, undefined, e);
  } finally {
    e.close();
  }
});

test('PL-10 200 000 pipelined NOOPs without reading: closed at the first violation (NOOP ends a group)', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('NOOP\r\n'.repeat(200_000));
    const r = await c.readReply();
    expectReply(r, 554, '5.5.0', c);
    await expectClosed(c, 5000);
    assert.equal(countFinalReplies(c.transcript, 250), 1, 'only the EHLO reply may be a 250'); // EHLO's final line
  } finally {
    c.close();
  }
  await stillServed(h.ports.mx);
});

test('PL-10 200 000 pipelined RSETs while the client does not read: memory bounded, all answered once it reads', async () => {
  const N = 200_000;
  const c = await p1(h.ports.mx);
  try {
    gc();
    const m0 = process.memoryUsage();
    let peakRss = 0;
    let peakRetained = 0;
    const sample = (): void => {
      gc(); // measure what is retained, not garbage waiting for collection
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss - m0.rss);
      peakRetained = Math.max(peakRetained, m.heapUsed + m.external - m0.heapUsed - m0.external);
    };
    c.socket.pause(); // stop reading replies
    c.write('RSET\r\n'.repeat(N) + 'QUIT\r\n');
    for (let i = 0; i < 10; i++) {
      await sleep(50);
      sample();
    }
    assert.equal(c.closed, false);
    c.socket.resume();
    await expectClosed(c, 20_000);
    sample();
    assert.ok(peakRss < 100 * 1024 * 1024, `rss grew by ${peakRss} bytes`);
    // The client's own transcript (2.8 MB of replies) is part of this; the server must hold next to nothing.
    assert.ok(peakRetained < 40 * 1024 * 1024, `retained memory grew by ${peakRetained} bytes`);
    assert.equal(countFinalReplies(c.transcript, 250) - 1, N, 'every RSET answered exactly once');
    assert.match(c.transcript, /221 2\.0\.0 Bye\r\n$/);
  } finally {
    c.close();
  }
  await stillServed(h.ports.mx);
});

test('PL-11 21 unknown commands: 500 5.5.2 each, 421 4.7.0 too many errors at 20, then close', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('XYZZY\r\n'.repeat(21));
    for (let i = 0; i < 20; i++) expectReply(await c.readReply(), 500, '5.5.2', c);
    const r = await c.readReply();
    expectReply(r, 421, '4.7.0', c);
    assert.match(r.text, /too many errors/);
    await expectClosed(c);
    assert.equal(countFinalReplies(c.transcript, 500), 20);
  } finally {
    c.close();
  }
});

test('PL-12 1 001 recipients: first 1 000 accepted, then 452 4.5.3; DATA delivers to the 1 000', async () => {
  const c = await p1(h.ports.mx);
  try {
    let cmds = 'MAIL FROM:<a@client.test>\r\n';
    // A trusted client relaying to 1 001 distinct remote addresses (local ones would have to exist).
    for (let i = 1; i <= 1001; i++) cmds += `RCPT TO:<u${i}@remote.test>\r\n`;
    c.write(cmds);
    expectReply(await c.readReply(), 250, '2.1.0', c);
    for (let i = 1; i <= 1000; i++) expectReply(await c.readReply(), 250, '2.1.5', c);
    expectReply(await c.readReply(), 452, '4.5.3', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    const r = await c.cmd('Subject: many\r\n\r\nx\r\n.');
    expectReply(r, 250, '2.0.0', c);
    const m = h.queue.get(queueIdOf(r))!;
    assert.equal(m.recipients.length, 1000);
    assert.ok(!m.recipients.some((x) => x.address === 'u1001@remote.test'));
  } finally {
    c.close();
  }
});

test('PL-13 command order errors: 503 5.5.1 each; DATA with every RCPT refused: 554 5.5.1', async () => {
  const c = await connect220(h.ports.mx, { localAddress: '127.0.0.2' });
  try {
    const a = await c.cmd('MAIL FROM:<a@client.test>');
    expectReply(a, 503, '5.5.1', c);
    assert.match(a.text, /HELO\/EHLO first/);
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
    const nested = await c.cmd('MAIL FROM:<a@client.test>');
    expectReply(nested, 503, '5.5.1', c);
    assert.match(nested.text, /nested MAIL/);
    const dataNoRcpt = await c.cmd('DATA');
    expectReply(dataNoRcpt, 503, '5.5.1', c);
    assert.match(dataNoRcpt.text, /need RCPT/);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c);
    const rcpt = await c.cmd('RCPT TO:<u@local.test>');
    expectReply(rcpt, 503, '5.5.1', c);
    assert.match(rcpt.text, /need MAIL/);
    const data = await c.cmd('DATA');
    expectReply(data, 503, '5.5.1', c);
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', c);
    const none = await c.cmd('DATA');
    expectReply(none, 554, '5.5.1', c);
    assert.match(none.text, /no valid recipients/);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('PL-14 unknown MAIL parameter: 555 5.5.4', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<a@client.test> FOO=BAR'), 555, '5.5.4', c);
    await expectTxnReset(c);
  } finally {
    c.close();
  }
});

test('PL-15 SIZE: over the limit 552 5.3.4; bad syntax 501 5.5.4 (no JS number tricks)', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<a@client.test> SIZE=99999999999'), 552, '5.3.4', c);
    expectReply(await c.cmd('MAIL FROM:<a@client.test> SIZE=99999999999999999999'), 552, '5.3.4', c);
    for (const v of ['SIZE=-1', 'SIZE=1e3', 'SIZE=0x10', 'SIZE=', 'SIZE=1 SIZE=2', 'SIZE=1.5', 'SIZE= 1']) {
      expectReply(await c.cmd(`MAIL FROM:<a@client.test> ${v}`), 501, '5.5.4', c);
    }
    const thirty = await c.cmd(`MAIL FROM:<a@client.test> SIZE=${'9'.repeat(30)}`);
    assert.ok(thirty.code === 501 || thirty.code === 552, thirty.lines.join(' | '));
    await expectTxnReset(c);
    // At the limit is fine.
    expectReply(await c.cmd(`MAIL FROM:<a@client.test> SIZE=${MESSAGE_SIZE}`), 250, '2.1.0', c);
  } finally {
    c.close();
  }
});

test('PL-16 declared size fine, body over the limit: read to the end, then 552 5.3.4, txn reset, session kept', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<a@client.test> SIZE=1000'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    const line = 'z'.repeat(998) + '\r\n';
    c.write('Subject: big\r\n\r\n' + line.repeat(Math.ceil((MESSAGE_SIZE * 1.5) / line.length)) + '.\r\n');
    const r = await c.readReply(10_000);
    expectReply(r, 552, '5.3.4', c);
    await expectNoMoreReplies(c);
    await expectTxnReset(c);
    assert.equal(h.queue.list().length, before);
  } finally {
    c.close();
  }
});

test('PL-18 slowloris: idle gap over the deadline, trickle past the session deadline, slow DATA: 421 4.4.2 + close', async () => {
  const before = t.queue.list().length;
  const idle = (async () => {
    const c = await connect220(t.ports.mx, { localAddress: '127.0.0.21' });
    try {
      const t0 = Date.now();
      c.write('E');
      const r = await c.readReply(IDLE_MS * 4);
      expectReply(r, 421, '4.4.2', c);
      assert.match(r.text, /timeout exceeded/);
      await expectClosed(c);
      assert.ok(Date.now() - t0 < IDLE_MS * 3);
    } finally {
      c.close();
    }
  })();
  const trickle = (async () => {
    const c = await connect220(t.ports.mx, { localAddress: '127.0.0.22' });
    try {
      const bytes = 'EHLO slow.client.test\r\nNOOP\r\n'.repeat(20);
      let i = 0;
      while (!c.closed && i < bytes.length) {
        c.write(bytes[i++]!);
        await sleep(IDLE_MS / 5);
      }
      await expectClosed(c, SESSION_MS);
      assert.match(c.transcript, /^421 4\.4\.2 /m);
      assert.ok(i < bytes.length, 'the trickle was never cut off');
    } finally {
      c.close();
    }
  })();
  const slowData = (async () => {
    const c = await p1(t.ports.mx, { localAddress: '127.0.0.23' });
    try {
      await p2(c);
      const body = 'Subject: slow\r\n\r\n' + 'x'.repeat(200) + '\r\n.\r\n';
      let i = 0;
      while (!c.closed && i < body.length) {
        c.write(body[i++]!);
        await sleep(IDLE_MS / 5); // 10 B/s at IDLE_MS = 500
      }
      await expectClosed(c, SESSION_MS);
      assert.match(c.transcript, /^421 4\.4\.2 /m);
      assert.ok(i < body.length);
    } finally {
      c.close();
    }
  })();
  await Promise.all([idle, trickle, slowData]);
  assert.equal(t.queue.list().length, before, 'the slow message must not be queued');
});

test('PL-19 connect and send nothing: 421 4.4.2 at the idle deadline, close, and the slot is freed', async () => {
  const t0 = Date.now();
  const c = await connect220(t.ports.mx, { localAddress: '127.0.0.30' });
  try {
    expectReply(await c.readReply(IDLE_MS * 4), 421, '4.4.2', c);
    await expectClosed(c);
    const took = Date.now() - t0;
    assert.ok(took >= IDLE_MS - 50 && took < IDLE_MS * 3, `closed after ${took} ms`);
  } finally {
    c.close();
  }
  // connectionsPerIp is 1 on this harness: the freed slot lets the same IP in again.
  let got: number | null = null;
  for (let i = 0; i < 20 && got !== 220; i++) {
    const d = await RawSmtpClient.connect(t.ports.mx, { localAddress: '127.0.0.30' });
    got = (await d.readReply()).code;
    d.close();
    if (got !== 220) await sleep(50);
  }
  assert.equal(got, 220);
});

test('PL-20 N+1 connections from one IP and M+1 in total: 421 4.7.0 + close', async () => {
  const l = await startRelay({ limits: { connectionsPerIp: 2, connections: 3 } });
  const open: RawSmtpClient[] = [];
  try {
    open.push(await connect220(l.ports.mx, { localAddress: '127.0.0.2' }));
    open.push(await connect220(l.ports.mx, { localAddress: '127.0.0.2' }));
    const third = await RawSmtpClient.connect(l.ports.mx, { localAddress: '127.0.0.2' });
    const r = await third.readReply();
    expectReply(r, 421, '4.7.0', third);
    assert.match(r.text, /too many connections from 127\.0\.0\.2/);
    await expectClosed(third);
    third.close();
    await sleep(100);
    open.push(await connect220(l.ports.mx, { localAddress: '127.0.0.3' })); // per-IP fine, total now 3
    const fourth = await RawSmtpClient.connect(l.ports.mx, { localAddress: '127.0.0.4' });
    const r4 = await fourth.readReply();
    expectReply(r4, 421, '4.7.0', fourth);
    assert.match(r4.text, /too many connections/);
    await expectClosed(fourth);
    fourth.close();
    // The admitted sessions are unaffected.
    for (const c of open) expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    // Closing one frees a slot.
    open.shift()!.close();
    await sleep(100);
    let got: number | null = null;
    for (let i = 0; i < 20 && got !== 220; i++) {
      const d = await RawSmtpClient.connect(l.ports.mx, { localAddress: '127.0.0.2' });
      got = (await d.readReply()).code;
      if (got === 220) open.push(d); else { d.close(); await sleep(50); }
    }
    assert.equal(got, 220);
  } finally {
    for (const c of open) c.close();
    await l.close();
  }
});

test('PL-21 101 Received: header fields: 554 5.4.0 too many hops; 100 is accepted', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    const received = (n: number): string => 'Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n'.repeat(n);
    await p2(c);
    c.write(`${received(101)}Subject: loop\r\n\r\nx\r\n.\r\n`);
    expectReply(await c.readReply(), 554, '5.4.0', c);
    await expectTxnReset(c);
    assert.equal(h.queue.list().length, before);
    await p2(c);
    c.write(`${received(100)}Subject: ok\r\n\r\nx\r\n.\r\n`);
    expectReply(await c.readReply(), 250, '2.0.0', c);
    assert.equal(h.queue.list().length, before + 1);
  } finally {
    c.close();
  }
});

test('PL-22 graceful stop with a session mid-DATA: 421 to the client, nothing queued, no 250 after', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-pl22-'));
  try {
    const g = await startRelay({ dataDir });
    const c = await p1(g.ports.mx);
    const idle = await p1(g.ports.mx);
    let closing: Promise<void> | null = null;
    try {
      await p2(c);
      c.write('Subject: unfinished\r\n\r\npart one\r\n');
      await sleep(50);
      closing = g.close();
      const r = await c.readReply();
      expectReply(r, 421, '4.3.2', c);
      // The client finishes its message anyway: no 250 may follow.
      c.write('part two\r\n.\r\n');
      await expectClosed(c);
      assert.equal(countFinalReplies(c.transcript.slice(c.transcript.indexOf('354 ')), 250), 0, c.transcript);
      // An idle session gets 421 too.
      expectReply(await idle.readReply(), 421, '4.3.2', idle);
      await expectClosed(idle);
    } finally {
      c.close();
      idle.close();
      await (closing ?? g.close());
    }
    const q = QueueStore.open({ dataDir, logger: NULL_LOGGER });
    try {
      assert.equal(q.list().length, 0, 'the unfinished message was queued');
    } finally {
      await q.close();
    }
    // Nobody listens any more.
    await assert.rejects(RawSmtpClient.connect(g.ports.mx));
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('PL-23 10 000 MIME parts and 100 000 header lines: bounded work, one message', async () => {
  const before = h.queue.list().length;
  const c = await p1(h.ports.mx);
  try {
    await p2(c);
    let msg = '';
    for (let i = 0; i < 100_000; i++) msg += `X-H${i}: v\r\n`;
    msg += 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n';
    for (let i = 0; i < 10_000; i++) msg += `--b\r\nContent-Type: text/plain\r\n\r\np${i}\r\n`;
    msg += '--b--\r\n.\r\n';
    assert.ok(msg.length < MESSAGE_SIZE);
    const rss0 = process.memoryUsage().rss;
    const t0 = Date.now();
    c.write(msg);
    const r = await c.readReply(10_000);
    expectReply(r, 250, '2.0.0', c);
    assert.ok(Date.now() - t0 < 5000, 'slow on a pathological message');
    assert.ok(process.memoryUsage().rss - rss0 < 100 * 1024 * 1024);
    assert.equal(h.queue.list().length, before + 1);
  } finally {
    c.close();
  }
});
