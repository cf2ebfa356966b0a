/**
 * TLS-*: STARTTLS command injection (CVE-2011-0411 class), RFC 3207 state reset, AUTH before TLS, TLS bytes on
 * the plaintext port, failed handshakes, old protocol versions and hostile SNI (hostile-inputs.md section 1.2).
 * TLS-12 and TLS-13 are client-side (outbound) cases and are not part of the receive path.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import * as tls from 'node:tls';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import {
  RawSmtpClient, p1, sleep, expectReply, expectClosed, expectNoMoreReplies, captureClientHello, connect220,
} from './hostile-helpers.ts';

let h: Harness;

before(async () => {
  // "u"/"p" makes the catalogue's AUTH PLAIN AHUAcA== (\0u\0p) a VALID credential, so TLS-07 can fail.
  h = await startRelay({ users: [{ name: 'alice@local.test', password: 'pw' }, { name: 'u', password: 'p' }] });
});

after(async () => { await h?.close(); });

function socketClosed(s: Socket, timeoutMs = 3000): Promise<boolean> {
  if (s.destroyed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(s.destroyed), timeoutMs);
    s.once('close', () => { clearTimeout(t); resolve(true); });
  });
}

/** The server still serves a well-behaved client (no crash, no stuck listener). */
async function stillServing(): Promise<void> {
  const c = await p1(h.ports.mx);
  expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  expectReply(await c.cmd('QUIT'), 221, '2.0.0', c);
  c.close();
}

test('TLS-01 STARTTLS\\r\\nRSET\\r\\n in one write: only the 220 in plaintext, first TLS reply answers NOOP, no stray 250', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('STARTTLS\r\nRSET\r\n');
    const r = await c.readReply();
    expectReply(r, 220, '2.0.0', c);
    await sleep(100);
    assert.equal(c.unread, '', 'plaintext reply after the STARTTLS 220');
    await c.startTls();
    const n = await c.cmd('NOOP');
    expectReply(n, 250, '2.0.0', c);
    await expectNoMoreReplies(c);
    // Exactly one 250 after TLS: the transcript after the 220 holds just the NOOP reply.
    const afterTls = c.transcript.slice(c.transcript.indexOf('Ready to start TLS') + 'Ready to start TLS\r\n'.length);
    assert.equal(afterTls, '250 2.0.0 Ok\r\n');
  } finally {
    c.close();
  }
});

test('TLS-02 EAST tester: injected EHLO never runs; FAKE inside TLS gets 500/502, not 250', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('STARTTLS\r\nEHLO commandinjectiontester\r\n');
    expectReply(await c.readReply(), 220, '2.0.0', c);
    await c.startTls();
    const r = await c.cmd('FAKE x');
    assert.ok(r.code === 500 || r.code === 502, `FAKE got ${r.lines.join(' | ')}`);
    await expectNoMoreReplies(c);
    // And the session is back in its initial state: the injected EHLO did not count.
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 503, '5.5.1', c);
  } finally {
    c.close();
  }
});

test('TLS-03 injected EHLO + MAIL discarded: RCPT inside TLS gets 503 send HELO/EHLO first', async () => {
  const c = await p1(h.ports.mx);
  try {
    c.write('STARTTLS\r\nEHLO injected\r\nMAIL FROM:<inj@evil.test>\r\n');
    expectReply(await c.readReply(), 220, '2.0.0', c);
    await c.startTls();
    const r = await c.cmd('RCPT TO:<u@local.test>');
    expectReply(r, 503, '5.5.1', c);
    assert.match(r.text, /HELO\/EHLO first/);
    await expectNoMoreReplies(c);
    // After a real EHLO the injected MAIL is not there either.
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 503, '5.5.1', c);
  } finally {
    c.close();
  }
});

test('TLS-03 variant: a MAIL transaction started before STARTTLS is forgotten after the handshake', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await c.startTls();
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 503, '5.5.1', c);
  } finally {
    c.close();
  }
});

test('TLS-05 STARTTLS with a parameter: 501 5.5.4, session stays in plaintext', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('STARTTLS foo'), 501, '5.5.4', c);
    // Still plaintext: a plain NOOP is answered in clear text.
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
    assert.equal((c.socket as { encrypted?: boolean }).encrypted, undefined);
    // And a proper STARTTLS still works afterwards.
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await c.startTls();
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('TLS-06 inside STARTTLS: EHLO does not list STARTTLS; STARTTLS again gets 554 5.5.1', async () => {
  const c = await p1(h.ports.mx);
  try {
    const plain = await c.cmd('EHLO x');
    assert.ok(plain.lines.some((l) => l.slice(4) === 'STARTTLS'), 'plaintext EHLO must offer STARTTLS (control)');
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await c.startTls();
    const e = await c.cmd('EHLO x');
    expectReply(e, 250, undefined, c);
    assert.ok(!e.lines.some((l) => /STARTTLS/i.test(l)), `EHLO inside TLS lists STARTTLS: ${e.lines.join(' | ')}`);
    const r = await c.cmd('STARTTLS');
    assert.ok(r.code === 554 || r.code === 503, `STARTTLS inside TLS got ${r.lines.join(' | ')}`);
    assert.equal(r.enhanced, '5.5.1');
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('TLS-06 on the implicit-TLS port: no STARTTLS offered, STARTTLS refused', async () => {
  const c = await p1(h.ports.submissions, { tls: true, helo: 'x' });
  try {
    const e = await c.cmd('EHLO x');
    assert.ok(!e.lines.some((l) => /STARTTLS/i.test(l)), e.lines.join(' | '));
    expectReply(await c.cmd('STARTTLS'), 554, '5.5.1', c);
  } finally {
    c.close();
  }
});

for (const [name, port] of [['mx', () => h.ports.mx], ['submission', () => h.ports.submission]] as const) {
  test(`TLS-07 plaintext ${name} port: EHLO does not advertise AUTH; AUTH PLAIN AHUAcA== (valid creds) is 530 5.7.0, never 235`, async () => {
    const c = await connect220(port());
    try {
      const e = await c.cmd('EHLO x');
      expectReply(e, 250, undefined, c);
      assert.ok(!e.lines.some((l) => /^AUTH\b/i.test(l.slice(4))), `AUTH advertised before TLS: ${e.lines.join(' | ')}`);
      expectReply(await c.cmd('AUTH PLAIN AHUAcA=='), 530, '5.7.0', c);
      const valid = Buffer.from('\0alice@local.test\0pw').toString('base64');
      expectReply(await c.cmd(`AUTH PLAIN ${valid}`), 530, '5.7.0', c);
      expectReply(await c.cmd('AUTH LOGIN'), 530, '5.7.0', c);
      assert.doesNotMatch(c.transcript, /^235/m);
      // Control: the same credentials work once TLS is up (so the refusal above is about TLS).
      expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
      await c.startTls();
      const e2 = await c.cmd('EHLO x');
      assert.ok(e2.lines.some((l) => /^AUTH PLAIN/i.test(l.slice(4))), e2.lines.join(' | '));
      expectReply(await c.cmd('AUTH PLAIN AHUAcA=='), 235, '2.7.0', c);
    } finally {
      c.close();
    }
  });
}

test('TLS-08 a TLS ClientHello on the plaintext port before EHLO: 421 and close, no crash', async () => {
  const hello = await captureClientHello('localhost');
  assert.equal(hello[0], 0x16);
  const c = await connect220(h.ports.mx);
  try {
    c.write(hello);
    const r = await c.readReply();
    expectReply(r, 421, '4.7.0', c);
    await expectClosed(c);
  } finally {
    c.close();
  }
  // The same bytes before the greeting was read (a client that starts TLS at once).
  const d = await RawSmtpClient.connect(h.ports.mx);
  try {
    d.write(hello);
    await expectClosed(d);
    assert.doesNotMatch(d.transcript, /^2[0-9][0-9] (?!mx\.local\.test ESMTP)/m, d.transcript);
  } finally {
    d.close();
  }
  await stillServing();
});

test('TLS-09 garbage instead of a ClientHello after 220 Ready: handshake fails, close, never back to plaintext', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    const mark = c.transcript.length;
    c.write('garbage\r\nRCPT TO:<u@local.test>\r\nNOOP\r\n');
    await expectClosed(c);
    const afterReady = c.transcript.slice(mark);
    // Only TLS alert bytes may follow; no SMTP reply line in plaintext.
    assert.doesNotMatch(afterReady, /^[2-5][0-9][0-9][ -]/m, `plaintext reply after failed handshake: ${JSON.stringify(afterReady)}`);
  } finally {
    c.close();
  }
  await stillServing();
});

test('TLS-10 TLS 1.0/1.1 refused on STARTTLS and on implicit TLS; TLS 1.2 accepted (control)', async () => {
  const old = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    const plain = c.socket;
    await assert.rejects(c.startTls(old), /protocol version|unsupported protocol|no protocols available/i);
    assert.ok(await socketClosed(plain), 'server kept the connection after a refused handshake');
  } finally {
    c.close();
  }
  // Implicit TLS with a TLS 1.1-only client, done by hand so the options reach tls.connect.
  const err = await new Promise<Error | null>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: h.ports.submissions, rejectUnauthorized: false, ...old });
    s.once('secureConnect', () => { s.destroy(); resolve(null); });
    s.once('error', (e) => { s.destroy(); resolve(e); });
  });
  assert.ok(err && /protocol version|unsupported protocol|no protocols/i.test(err.message), `TLS 1.1 implicit handshake: ${String(err)}`);
  // Control: the same lax client limited to TLS 1.2 succeeds, so the refusal is about the version.
  const ok = await p1(h.ports.mx);
  try {
    expectReply(await ok.cmd('STARTTLS'), 220, '2.0.0', ok);
    await ok.startTls({ minVersion: 'TLSv1', maxVersion: 'TLSv1.2', ciphers: 'DEFAULT@SECLEVEL=0' });
    assert.equal((ok.socket as tls.TLSSocket).getProtocol(), 'TLSv1.2');
    expectReply(await ok.cmd('EHLO x'), 250, undefined, ok);
  } finally {
    ok.close();
  }
});

test('TLS-11 hostile SNI (trailing backslash, 255 bytes, backslash-NUL): clean handshake or clean failure, SNI never logged raw', async () => {
  // (a) Real handshakes with odd but transmittable names.
  for (const servername of ['evil\\', 'a'.repeat(255)]) {
    const c = await p1(h.ports.mx);
    try {
      expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
      await c.startTls({ servername });
      expectReply(await c.cmd('EHLO x'), 250, undefined, c);
    } finally {
      c.close();
    }
  }
  // (b) Node will not send NUL in SNI, so patch a captured ClientHello in place (same length keeps every length
  // field valid): the name becomes "...\\\0" (Exim CVE-2019-15846 shape), and a 255-byte one ending the same way.
  for (const len of [12, 255]) {
    const placeholder = 'Q'.repeat(len);
    const hello = await captureClientHello(placeholder);
    const at = hello.indexOf(Buffer.from(placeholder));
    assert.ok(at > 0, 'SNI not found in the captured ClientHello');
    const hostile = Buffer.from('e'.repeat(len - 2) + '\\\0', 'latin1');
    hostile.copy(hello, at);
    const c = await p1(h.ports.mx);
    try {
      expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
      const mark = c.transcript.length;
      c.write(hello);
      // The server answers with a TLS record (handshake 0x16 or alert 0x15) or hangs up; never SMTP text.
      const deadline = Date.now() + 2000;
      while (c.transcript.length === mark && !c.closed && Date.now() < deadline) await sleep(10);
      const first = c.transcript.charCodeAt(mark);
      assert.ok(c.closed || first === 0x16 || first === 0x15, `unexpected reply to a hostile ClientHello: ${JSON.stringify(c.transcript.slice(mark, mark + 20))}`);
    } finally {
      c.close();
    }
  }
  await sleep(50);
  for (const rec of h.logs) {
    const s = JSON.stringify(rec);
    assert.ok(!s.includes('\\u0000') && !s.includes('eeeeeeeeee\\\\'), `raw SNI in a log record: ${s}`);
  }
  await stillServing();
});
