/**
 * PX-*: PROXY protocol and forwarded identity (hostile-inputs.md section 1.7). The PROXY header is honoured only
 * from trusted balancers (127.0.0.1 here); an untrusted peer (127.0.0.2) that sends one is refused and can never
 * borrow a trusted identity. Malformed, over-long, truncated and late headers close the connection cleanly.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import {
  RawSmtpClient, p1, sleep, expectReply, expectClosed, assertNothingRemoteQueued, proxyV2, countFinalReplies,
} from './hostile-helpers.ts';

let h: Harness; // PROXY protocol on mx, balancer 127.0.0.1, trusted network 127.0.0.1/32
let plain: Harness; // no PROXY protocol at all

const PROXY_TIMEOUT_MS = 400;

before(async () => {
  h = await startRelay({
    proxyProtocol: true, trustedProxies: ['127.0.0.1/32'], trustedNetworks: ['127.0.0.1/32'],
    limits: { proxyTimeoutMs: PROXY_TIMEOUT_MS },
  });
  plain = await startRelay({ trustedNetworks: ['127.0.0.1/32'] });
});

after(async () => {
  await h?.close();
  await plain?.close();
});

function invariants(): void {
  assertNothingRemoteQueued(h);
  assertNothingRemoteQueued(plain);
  for (const x of [h, plain]) {
    assert.ok(!x.logs.some((l) => l.msg === 'session failed' || l.msg === 'connection setup failed'), 'engine error logged');
  }
}

/** The balancer still works after each hostile case. */
async function balancerStillWorks(): Promise<void> {
  const c = await RawSmtpClient.connect(h.ports.mx);
  try {
    c.write('PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n');
    expectReply(await c.readReply(), 220, undefined, c);
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('QUIT'), 221, '2.0.0', c);
  } finally {
    c.close();
  }
}

test('PX-01 untrusted peer sends PROXY claiming 127.0.0.1 (after the greeting): 421 + close, never relays', async () => {
  // On the PROXY listener: 127.0.0.2 is not a trusted balancer, so no header is read and PROXY is a command.
  for (const port of [h.ports.mx, plain.ports.mx]) {
    const c = await RawSmtpClient.connect(port, { localAddress: '127.0.0.2' });
    try {
      expectReply(await c.readReply(), 220, undefined, c);
      c.write('PROXY TCP4 127.0.0.1 127.0.0.1 12345 25\r\n');
      const r = await c.readReply();
      expectReply(r, 421, '4.7.0', c);
      assert.match(r.text, /PROXY not allowed from 127\.0\.0\.2/);
      // The relay attempt that would follow finds the connection gone.
      c.write('EHLO x\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<y@remote.test>\r\n');
      await expectClosed(c);
      assert.equal(countFinalReplies(c.transcript, 250), 0, c.transcript);
    } finally {
      c.close();
    }
  }
  invariants();
});

test('PX-01 untrusted peer sends PROXY at once (before the greeting), then a relay attempt: closed, no 250', async () => {
  const c = await RawSmtpClient.connect(h.ports.mx, { localAddress: '127.0.0.2' });
  try {
    c.write('PROXY TCP4 127.0.0.1 127.0.0.1 12345 25\r\n');
    await sleep(50);
    c.write('EHLO x\r\n');
    await expectClosed(c);
    assert.match(c.transcript, /^(421|554) /m, c.transcript);
    assert.equal(countFinalReplies(c.transcript, 250), 0, c.transcript);
  } finally {
    c.close();
  }
  // And the relay decision for 127.0.0.2 stays untrusted when it talks normally.
  const d = await p1(h.ports.mx, { localAddress: '127.0.0.2' });
  try {
    expectReply(await d.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', d);
    expectReply(await d.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', d);
  } finally {
    d.close();
  }
  invariants();
});

test('PX-02 trusted balancer sends malformed v1 headers: 421 + close each time', async () => {
  const bad = [
    'PROXY TCP4 999.1.1.1 10.0.0.1 1 25\r\n',
    'PROXY TCP9 1.2.3.4 10.0.0.1 1 25\r\n',
    'PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n',
    'PROXY TCP4 1.2.3.4  10.0.0.1 1 25\r\n',
    'PROXY TCP4 1.2.3.4 10.0.0.1 1 25\n',
    'PROXY ' + 'A'.repeat(120), // no CRLF within 107 bytes
  ];
  for (const header of bad) {
    const c = await RawSmtpClient.connect(h.ports.mx);
    try {
      c.write(header);
      const r = await c.readReply();
      expectReply(r, 421, '4.7.0', c);
      // Refused on the bytes, not by waiting for the proxy timeout.
      assert.match(r.text, /invalid PROXY header/);
      assert.doesNotMatch(r.text, /timeout/, `refused only by the timeout: ${JSON.stringify(header)}`);
      await expectClosed(c);
    } finally {
      c.close();
    }
  }
  // Over-long header streamed in pieces: capped, never buffered without limit.
  const c = await RawSmtpClient.connect(h.ports.mx);
  try {
    c.write('PROXY TCP4 ');
    for (let i = 0; i < 20 && !c.closed; i++) { c.write('1'.repeat(64)); await sleep(5); }
    await expectClosed(c);
    assert.match(c.transcript, /^421 4\.7\.0 /m);
  } finally {
    c.close();
  }
  invariants();
  await balancerStillWorks();
});

test('PX-03 v2 signature + garbage, and a disconnect half-way through the header: clean close, no crash', async () => {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  // Bad version/command byte.
  for (const tail of [Buffer.from([0x99, 0x11, 0x00, 0x0c]), Buffer.from([0x21, 0x11, 0xff, 0xff]), Buffer.from('garbage garbage garbage')]) {
    const c = await RawSmtpClient.connect(h.ports.mx);
    try {
      c.write(Buffer.concat([sig, tail]));
      await expectClosed(c, PROXY_TIMEOUT_MS + 2000);
      assert.equal(countFinalReplies(c.transcript, 220), 0, c.transcript);
    } finally {
      c.close();
    }
  }
  // Half a v2 header, then the client goes away.
  const full = proxyV2('203.0.113.9', '127.0.0.1', 40000, 25);
  for (const cut of [5, 12, 20]) {
    const c = await RawSmtpClient.connect(h.ports.mx);
    c.write(full.subarray(0, cut));
    await sleep(20);
    c.close();
  }
  // Half a header and a half-close (FIN) from the client.
  const d = await RawSmtpClient.connect(h.ports.mx);
  try {
    d.write(full.subarray(0, 10));
    d.socket.end();
    await expectClosed(d);
  } finally {
    d.close();
  }
  await sleep(50);
  invariants();
  await balancerStillWorks();
});

test('PX-04 PROXY after EHLO is an unknown command (500), not an identity change', async () => {
  const c = await RawSmtpClient.connect(h.ports.mx);
  try {
    c.write('PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n');
    expectReply(await c.readReply(), 220, undefined, c);
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    expectReply(await c.cmd('PROXY TCP4 127.0.0.1 127.0.0.1 12345 25'), 500, '5.5.2', c);
    // Still 203.0.113.9: relaying is refused.
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', c);
  } finally {
    c.close();
  }
  const d = h.logs.findLast((l) => l.msg === 'relay decision');
  assert.equal(d?.fields.client_ip, '203.0.113.9');
  // On a listener without PROXY support, PROXY after EHLO is also just unknown.
  const p = await p1(plain.ports.mx, { localAddress: '127.0.0.2' });
  try {
    expectReply(await p.cmd('PROXY TCP4 127.0.0.1 127.0.0.1 12345 25'), 500, '5.5.2', p);
    expectReply(await p.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', p);
    expectReply(await p.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', p);
  } finally {
    p.close();
  }
  invariants();
});

test('PX-05 XCLIENT / XFORWARD from an unauthorized client: 550 5.7.0, identity unchanged', async () => {
  const c = await p1(plain.ports.mx, { localAddress: '127.0.0.2' });
  try {
    expectReply(await c.cmd('XCLIENT ADDR=127.0.0.1'), 550, '5.7.0', c);
    expectReply(await c.cmd('XFORWARD ADDR=127.0.0.1 NAME=localhost'), 550, '5.7.0', c);
    expectReply(await c.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', c);
  } finally {
    c.close();
  }
  // Even from a trusted balancer's proxied client.
  const d = await RawSmtpClient.connect(h.ports.mx);
  try {
    d.write('PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n');
    expectReply(await d.readReply(), 220, undefined, d);
    expectReply(await d.cmd('EHLO client.test'), 250, undefined, d);
    expectReply(await d.cmd('XCLIENT ADDR=127.0.0.1'), 550, '5.7.0', d);
    expectReply(await d.cmd('MAIL FROM:<x@remote.test>'), 250, '2.1.0', d);
    expectReply(await d.cmd('RCPT TO:<y@remote.test>'), 554, '5.7.1', d);
  } finally {
    d.close();
  }
  invariants();
});

test('PX-06 no PROXY header within the proxy timeout: 421 and close', async () => {
  const t0 = Date.now();
  const c = await RawSmtpClient.connect(h.ports.mx);
  try {
    const r = await c.readReply(PROXY_TIMEOUT_MS + 2000);
    expectReply(r, 421, '4.7.0', c);
    assert.match(r.text, /timeout/i);
    await expectClosed(c);
    const took = Date.now() - t0;
    assert.ok(took >= PROXY_TIMEOUT_MS - 50 && took < PROXY_TIMEOUT_MS + 1500, `closed after ${took} ms`);
  } finally {
    c.close();
  }
  // A partial header that stalls is also timed out.
  const d = await RawSmtpClient.connect(h.ports.mx);
  try {
    d.write('PROXY TCP4 203.0.113.9 ');
    expectReply(await d.readReply(PROXY_TIMEOUT_MS + 2000), 421, '4.7.0', d);
    await expectClosed(d);
  } finally {
    d.close();
  }
  invariants();
});
